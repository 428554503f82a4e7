"""tools/analysis/visualize_sampling.py: the points it draws are the DCNv3 layer's sampling
locations (recomputed here from the layer's parameters with plain torch ops and the
operator's definition), for classifier, detector, segmentor and M3I configs, with local
checkpoints and official-format zoo weights through a loopback server; PNGs are real
pictures; bad arguments are one-line errors."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from m3i_mm.utils.errors import UsageError
from tests.conftest import REPO, run_tool
from tests.tools.analysis_fixtures import (config_path, deformed_backbone_state,
                                           load_tool, save_checkpoint, serve_official_entry)
from tests.zoo.conftest import server, zoo_home  # noqa: F401

tool = load_tool('visualize_sampling')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    state = deformed_backbone_state()
    path = save_checkpoint(str(tmp_path_factory.mktemp('ckpt') / 'backbone.pth'), state)
    return path, state


@pytest.fixture(scope='module')
def photo():
    from m3i_mm.demo.photo_datasets import photo_path
    return photo_path('chelsea')  # 451 x 300


def expected_points(config: str, state: dict, image: np.ndarray, input_size: int,
                    stage: int, locations):
    """The sampling points of the last DCNv3 layer of ``stage``, from the definition:
    offsets and masks from the layer's weights (depth-wise conv, LayerNorm, GELU, linear,
    softmax), locations ``centre + (grid + offset) * offset_scale`` with points x-major,
    cells mapped to pixels by the stride ``4 * 2**stage``, then to the original image."""
    from mmengine.config import Config
    from m3i_mm.cli.model_inspection import image_tensor, normalisation_of, resize_short_side
    from m3i_mm.models.backbones.intern_image import InternImage
    cfg = Config.fromfile(config)
    kwargs = cfg.model.backbone.to_dict()
    for key in ('type', 'init_cfg'):
        kwargs.pop(key, None)
    backbone = InternImage(**kwargs).eval()
    backbone.load_state_dict({k[len('backbone.'):]: v for k, v in state.items()}, strict=False)
    resized = resize_short_side(image, input_size)
    dcn = backbone.levels[stage].blocks[-1].dcn
    seen = []
    dcn.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        backbone(image_tensor(resized, normalisation_of(cfg)))
        x = seen[0].double()
        conv = dcn.dw_conv
        context = F.conv2d(x.permute(0, 3, 1, 2), conv.conv.weight.double(),
                           conv.conv.bias.double(), padding=1, groups=x.shape[-1])
        context = F.gelu(F.layer_norm(context.permute(0, 2, 3, 1), (x.shape[-1], ),
                                      conv.norm.weight.double(), conv.norm.bias.double(),
                                      conv.norm.eps))
        offset = F.linear(context, dcn.offset.weight.double(), dcn.offset.bias.double())
        logits = F.linear(context, dcn.mask.weight.double(), dcn.mask.bias.double())
    groups, scale = dcn.group, dcn.offset_scale
    stride = 4 * 2**stage
    xs, ys, ws = [], [], []
    for row, col in locations:
        masks = logits[0, row, col].view(groups, 9).softmax(-1)
        for g in range(groups):
            for i in range(3):  # x index outer (x-major)
                for j in range(3):
                    k = i * 3 + j
                    dx, dy = offset[0, row, col, 2 * (g * 9 + k):2 * (g * 9 + k) + 2].tolist()
                    cell_x = col + (i - 1 + dx) * scale
                    cell_y = row + (j - 1 + dy) * scale
                    xs.append((stride * cell_x + 0.5) * image.shape[1] / resized.shape[1] - 0.5)
                    ys.append((stride * cell_y + 0.5) * image.shape[0] / resized.shape[0] - 0.5)
                    ws.append(float(masks[g, k]))
    return np.array(xs), np.array(ys), np.array(ws)


def run(tmp_path, *argv):
    out, record = tmp_path / 'sampling.png', tmp_path / 'sampling.json'
    tool.main([*map(str, argv), '--out', str(out), '--json', str(record)])
    with open(record) as f:
        return out, json.load(f)


def assert_picture(path, min_std: float = 10.0):
    with Image.open(path) as png:
        assert png.format == 'PNG'
        pixels = np.asarray(png.convert('RGB'), dtype=np.float64)
    assert pixels.shape[1] == 800 and pixels.shape[0] > 500  # an 8-inch figure at 100 dpi
    assert pixels.std() > min_std  # not blank
    return pixels


@pytest.mark.parametrize('family', ['m3i', 'classifier', 'detector', 'segmentor'])
def test_points_drawn_are_the_layers_sampling_locations(family, checkpoint, photo, tmp_path):
    path, state = checkpoint
    from m3i_mm.cli.model_inspection import read_image
    image = read_image(photo)
    out, record = run(tmp_path, config_path(family), path, photo, '--points', '150,100',
                      '300,200', '--stage', 2, '--input-size', 128)
    cells = [tuple(loc['cell']) for loc in record['locations']]
    # 128 x 192 input -> stage 2 map 8 x 12; nearest cells of the requested pixels
    assert cells == [(3, 4), (5, 8)]
    xs, ys, ws = expected_points(config_path(family), state, image, 128, 2, cells)
    points = record['points']
    assert len(points['x']) == 2 * 8 * 9  # two locations, 8 groups, 9 points
    np.testing.assert_allclose(points['x'], xs, atol=2e-3)
    np.testing.assert_allclose(points['y'], ys, atol=2e-3)
    np.testing.assert_allclose(points['weight'], ws, atol=1e-5)
    assert np.abs(np.array(points['x']) - xs.round()).max() > 0  # deformed, not the grid
    assert record['pixel_map'] == dict(y=[16.0, 0.0], x=[16.0, 0.0])
    assert_picture(out)


def test_stacked_layers_and_the_drawn_count(checkpoint, photo, tmp_path, monkeypatch):
    path, _ = checkpoint
    drawn = []
    original = tool.draw
    monkeypatch.setattr(tool, 'draw', lambda *a, **k: drawn.append(original(*a, **k)) or
                        drawn[-1])
    out, record = run(tmp_path, config_path('m3i'), path, photo, '--points', '220,150',
                      '--stage', 2, '--layers', 2, '--input-size', 128)
    points = record['points']
    count = len(points['x'])
    assert record['blocks'] == [0, 1]
    # 8 groups x 9 points on top, each expanding into 8 x 9 below; points whose whole
    # bilinear sample is off the 8 x 12 map expand into nothing
    assert 0.9 * 72 * 72 < count <= 72 * 72
    assert drawn[0]['points'] == count  # what the scatter holds
    assert sum(points['weight']) == pytest.approx(record['total_weight'], rel=0.05)
    assert record['total_weight'] == pytest.approx(8.0, rel=1e-5)
    assert set(points['group']) == set(range(8))
    assert_picture(out)

    _, pruned = run(tmp_path, config_path('m3i'), path, photo, '--points', '220,150',
                    '--stage', 2, '--layers', 2, '--input-size', 128, '--max-points', 500,
                    '--groups', 3)
    assert len(pruned['points']['x']) == 500 and set(pruned['points']['group']) == {3}
    assert pruned['dropped_weight'] > 0


def test_official_weights_through_the_zoo(checkpoint, photo, tmp_path, server, zoo_home,
                                          monkeypatch):
    """m3i://NAME serving the same weights in the official classification layout draws the
    same points as the local checkpoint."""
    path, state = checkpoint
    name = serve_official_entry(server, tmp_path, monkeypatch, state)
    args = ['--points', '100,60', '--stage', 1, '--input-size', 96]
    _, local = run(tmp_path, config_path('classifier'), path, photo, *args)
    _, zoo = run(tmp_path, config_path('classifier'), name, photo, *args)
    assert len(server.requests_for(f'/hub/{name[len("m3i://"):]}.pth')) == 1
    assert len(zoo['points']['x']) == 4 * 9
    for key in ('x', 'y', 'weight'):
        np.testing.assert_allclose(zoo['points'][key], local['points'][key], rtol=0, atol=1e-9)
    assert zoo['weights'] == name


def test_config_weights_and_random_init(checkpoint, photo, tmp_path):
    path, _ = checkpoint
    _, from_config = run(tmp_path, config_path('segmentor'), photo, '--points', '100,60',
                         '--cfg-options', f'model.backbone.init_cfg.checkpoint={path}')
    _, explicit = run(tmp_path, config_path('segmentor'), path, photo, '--points', '100,60')
    assert from_config['points'] == explicit['points']
    assert "the config's init_cfg" in from_config['weights']
    _, random_init = run(tmp_path, config_path('m3i'), photo, '--points', '100,60')
    assert random_init['weights'] == 'random init'
    # zero offsets and uniform masks at init: the regular 3x3 grid, stride 16 at stage 2
    xs = np.array(random_init['points']['x'])
    centre = random_init['locations'][0]['centre'][0]
    np.testing.assert_allclose(np.unique(xs.round(6)), [centre - 16, centre, centre + 16])
    np.testing.assert_allclose(random_init['points']['weight'], 1 / 9, rtol=1e-6)


def write_config(tmp_path, name: str, text: str) -> str:
    path = tmp_path / f'{name}.py'
    path.write_text(text)
    return str(path)


def test_bad_arguments_are_named(checkpoint, photo, tmp_path):
    path, _ = checkpoint
    cases = [
        ([config_path('m3i'), path, photo, '--points', '451,20'],
         r'point \(451, 20\) is outside the image: x must be in \[0, 450\]'),
        ([config_path('m3i'), path, photo, '--points', '20,20', '--stage', '4'],
         'stage 4 does not exist'),
        ([config_path('m3i'), path, photo, '--points', '20,20', '--stage', '2',
          '--cfg-options', 'model.backbone.arch.depths=[1,1,0,1]'],
         'stage 2 of InternImage has no DCNv3 layer'),
        ([config_path('m3i'), path, photo, '--points', '20,20', '--stage', '1', '--layers', '2'],
         '--layers 2: block 0 of stage 1 has only 1 DCNv3 layer'),
        ([config_path('m3i'), path, photo, '--points', '20,20', '--groups', '8'],
         r'groups \[8\] out of range'),
        ([write_config(tmp_path, 'no_backbone', "model = dict(type='ImageClassifier')\n"), photo,
          '--points', '20,20'], 'has no model.backbone'),
        ([write_config(tmp_path, 'resnet', "default_scope = 'mmpretrain'\nmodel = dict(type="
                       "'ImageClassifier', backbone=dict(type='ResNet', depth=18))\n"),
          photo, '--points', '20,20'], 'ResNet has no DCNv3 stages'),
        ([config_path('detector'), str(tmp_path / 'missing.pth'), photo, '--points', '1,1'],
         'checkpoint not found'),
        ([config_path('m3i'), path, str(tmp_path / 'nothing.png'), '--points', '1,1'],
         'image not found'),
    ]
    for argv, message in cases:
        with pytest.raises((UsageError, FileNotFoundError), match=message):
            tool.main(argv + ['--out', str(tmp_path / 'x.png')])
    wrong_arch = tmp_path / 'wrong.pth'
    save_checkpoint(str(wrong_arch), {k: torch.zeros(3) for k in deformed_backbone_state()})
    with pytest.raises(UsageError, match='cannot load .* shapes do not match'):
        tool.main([config_path('m3i'), str(wrong_arch), photo, '--points', '1,1'])


def test_command_line_error_is_one_line(checkpoint, photo, tmp_path):
    path, _ = checkpoint
    res = run_tool(['tools/analysis/visualize_sampling.py', config_path('m3i'), path, photo,
                    '--points', '460,10', '--out', str(tmp_path / 'x.png')], cwd=str(tmp_path))
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and 'outside the image' in lines[0], res.stderr[-2000:]
    assert 'Traceback' not in res.stderr and not osp.exists(tmp_path / 'x.png')


def test_palette_png_is_smaller(checkpoint, photo, tmp_path):
    path, _ = checkpoint
    (tmp_path / 'full').mkdir()
    full, _ = run(tmp_path / 'full', config_path('m3i'), path, photo, '--points', '100,60')
    small, _ = run(tmp_path, config_path('m3i'), path, photo, '--points', '100,60',
                   '--png-colors', 64)
    with Image.open(full) as a, Image.open(small) as b:
        assert a.mode == 'RGB' and b.mode == 'P' and a.size == b.size
    assert osp.getsize(small) < 0.7 * osp.getsize(full)
    assert_picture(small)


def test_cb_internimage_detector(checkpoint, photo, tmp_path):
    """A CB-InternImage detector loads a single InternImage checkpoint into both backbones
    with the assisting gates at zero, so its lead backbone samples where InternImage does."""
    path, _ = checkpoint
    args = [photo, '--points', '100,60', '--stage', 1, '--input-size', 96]
    _, cb = run(tmp_path, osp.join(REPO, 'configs/demo/'
                                   'dino-4scale_cb-internimage-tiny_1xb2-2it_demo-coco.py'),
                path, *args)
    _, single = run(tmp_path, config_path('m3i'), path, *args)
    assert len(cb['points']['x']) == 4 * 9
    for key in ('x', 'y', 'weight'):
        np.testing.assert_allclose(cb['points'][key], single['points'][key], atol=1e-5)
