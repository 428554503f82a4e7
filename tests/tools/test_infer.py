"""tools/infer.py: one image through mmpretrain's, mmdet's and mmseg's inferencers with the
tiny demo configs, checkpoints from a file or from the zoo (a loopback server)."""
import importlib.util
import io
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from m3i_mm.demo.photo_datasets import load_photo
from tests.conftest import REPO, run_tool
from tests.zoo.conftest import (model_entry, server, sha256_hex, write_index,  # noqa: F401
                                zoo_home)

CONFIGS = {
    'classification': 'configs/demo/internimage-tiny_in22k-pre_1xb4-2e_demo-cls.py',
    'detection': 'configs/demo/mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py',
    'segmentation': 'configs/demo/upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py',
}
# smaller heads than the demo configs' (the checkpoints are written and read in each test)
OPTIONS = {
    'classification': [],
    'detection': ['model.roi_head.bbox_head.fc_out_channels=32'],
    'segmentation': ['model.decode_head.channels=16', 'model.auxiliary_head.channels=16'],
}
DEMO_CLASSES = ('dark', 'mid-dark', 'mid-light', 'light')  # the detection config's


def load_tool():
    spec = importlib.util.spec_from_file_location('infer_tool', osp.join(REPO, 'tools',
                                                                         'infer.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkpoint_data(task: str, meta: dict = None, drop: str = None) -> bytes:
    """A checkpoint of the task's tiny model with random weights (``drop``: leave out the
    keys starting with it)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(osp.join(REPO, CONFIGS[task]))
    cfg.merge_from_dict({key: int(value) for key, value in
                         (option.split('=') for option in OPTIONS[task])})
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    state = MODELS.build(cfg.model).state_dict()
    if drop:
        state = {k: v for k, v in state.items() if not k.startswith(drop)}
    buffer = io.BytesIO()
    torch.save({'state_dict': state, 'meta': meta or {}}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope='module')
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp('image') / 'chelsea.png'
    photo = cv2.resize(load_photo('chelsea'), (150, 100), interpolation=cv2.INTER_AREA)
    Image.fromarray(photo).save(path)
    return str(path)


def check_picture(path: str, image: str) -> None:
    """A PNG of the input's size that differs from the input (something was drawn)."""
    with Image.open(path) as picture:
        assert picture.format == 'PNG' and picture.mode == 'RGB'
        drawn = np.asarray(picture, dtype=np.float64)
    original = np.asarray(Image.open(image).convert('RGB'), dtype=np.float64)
    assert drawn.shape == original.shape
    assert np.abs(drawn - original).mean() > 1.0


def run(tool, argv, capsys):
    tool.main(argv)
    return capsys.readouterr().out.splitlines()


def test_classification_from_a_file(tmp_path, image, capsys):
    tool = load_tool()
    checkpoint = tmp_path / 'cls.pth'
    checkpoint.write_bytes(checkpoint_data('classification'))
    out = tmp_path / 'pictures' / 'cls.png'  # its folder is created
    lines = run(tool, [CONFIGS['classification'], str(checkpoint), image, '--out', str(out),
                       '--device', 'cpu', '--topk', '3'], capsys)
    at = lines.index('classification: top 3 of 1000 classes')
    scores = [float(line.rsplit(': ', 1)[1]) for line in lines[at + 1:at + 4]]
    assert all(line.startswith('  label ') for line in lines[at + 1:at + 4])
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    assert lines[-1] == f'picture: {out}'
    check_picture(str(out), image)


def test_detection_names_the_config_classes(tmp_path, image, capsys):
    """The checkpoint carries no class names (like the official ones): the config's are used,
    not mmdet's fallback to COCO."""
    tool = load_tool()
    checkpoint = tmp_path / 'det.pth'
    checkpoint.write_bytes(checkpoint_data('detection'))
    out = tmp_path / 'det.png'
    lines = run(tool, [CONFIGS['detection'], str(checkpoint), image, '--out', str(out),
                       '--device', 'cpu', '--score-thr', '0', '--cfg-options',
                       *OPTIONS['detection']], capsys)
    header = next(i for i, line in enumerate(lines) if line.startswith('detection: '))
    found = int(lines[header].split()[1])
    assert found > 0 and lines[header].endswith(', with masks')
    shown = lines[header + 1:header + 1 + min(found, tool.MAX_PRINTED)]
    for line in shown:
        name = line.strip().split(' (label ')[0]
        assert name in DEMO_CLASSES, line
    check_picture(str(out), image)


def test_segmentation_from_the_zoo_as_users_run_it(server, write_index, tmp_path, image):
    """``CONFIG IMAGE``: the zoo entry whose Config is CONFIG, downloaded from the
    (loopback) server; the class names the checkpoint carries are printed."""
    classes = tuple(f'tone{i}' for i in range(150))
    data = checkpoint_data('segmentation', meta=dict(dataset_meta=dict(classes=classes)))
    url = server.serve('/zoo/tiny_upernet.pth', data)
    entry = model_entry('tiny_upernet', url, sha256_hex(data), converter=None)
    entry['Config'] = CONFIGS['segmentation']
    write_index([entry])
    out = tmp_path / 'seg.png'
    result = run_tool(['tools/infer.py', osp.join(REPO, CONFIGS['segmentation']), image,
                       '--out', str(out), '--cfg-options', *OPTIONS['segmentation']],
                      cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith('config: ') and 'checkpoint: m3i://tiny_upernet;' in line
               for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith('segmentation: '))
    rows = [line for line in lines[header + 1:] if line.startswith('  ')]
    shares = [float(line.rsplit(': ', 1)[1].rstrip('%')) for line in rows
              if not line.startswith('  ...')]
    assert rows and all(line.strip().split(' (label ')[0] in classes for line in rows
                        if not line.startswith('  ...'))
    if int(lines[header].split()[1]) <= load_tool().MAX_PRINTED:  # every class printed
        assert abs(sum(shares) - 100) <= 0.05 * len(shares) + 1e-6  # each rounded to 0.1
    check_picture(str(out), image)


def error_line(tool, argv, capsys) -> str:
    """The message of the user error ``main`` raises, which ``run_cli`` prints as one
    ``error:`` line with exit status 2 (tests/cli covers that part)."""
    from m3i_mm.utils.errors import UsageError
    from m3i_mm.zoo import ZooError
    with pytest.raises((UsageError, ZooError, FileNotFoundError)) as error:
        tool.main(argv)
    message = str(error.value)
    assert message and '\n' not in message
    return message


def test_bad_arguments_are_one_line_errors(tmp_path, image, capsys, write_index):
    tool = load_tool()
    write_index([])  # an empty user index next to the repository's
    cls = CONFIGS['classification']
    checkpoint = tmp_path / 'cls.pth'
    checkpoint.write_bytes(checkpoint_data('classification'))
    not_an_image = tmp_path / 'notes.png'
    not_an_image.write_text('not a picture')

    assert 'image not found' in error_line(tool, [cls, str(checkpoint), 'missing.png'],
                                           capsys)
    assert 'cannot read image' in error_line(tool, [cls, str(checkpoint),
                                                    str(not_an_image)], capsys)
    assert 'no model-zoo entry named' in error_line(tool, [cls, 'm3i://no_such_model', image],
                                                    capsys)
    assert 'checkpoint not found' in error_line(tool, [cls, 'nothing.pth', image], capsys)
    message = error_line(tool, [cls, image], capsys)
    assert 'no checkpoint given, and no model-zoo entry names' in message
    message = error_line(tool, [CONFIGS['detection'], str(checkpoint), image, '--cfg-options',
                                *OPTIONS['detection']], capsys)
    assert 'does not cover the model' in message and '--allow-partial-checkpoint' in message
    partial = tmp_path / 'partial.pth'
    partial.write_bytes(checkpoint_data('classification', drop='head.'))
    assert 'head.fc.weight' in error_line(tool, [cls, str(partial), image], capsys)
    with pytest.raises(SystemExit):
        tool.parse_args([cls, image, '--out', 'picture.txt'])
    assert '--out must be a picture file' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args([cls, 'a.pth', image, 'extra.png'])
    assert 'expected CONFIG [CHECKPOINT] IMAGE' in capsys.readouterr().err
