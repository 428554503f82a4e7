"""tools/analysis/browse_dataset.py: the M3I pipeline's samples as pictures (the views are
crops of the decoded source at the drawn boxes, the canvas shows the batch partner where
the mask says so, labels and captions of the right source), and the hand-over of
downstream configs to mmdet's, mmseg's and mmpretrain's own browsers."""
import os
import os.path as osp
import sys

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from m3i_mm.utils.errors import UsageError
from tests.conftest import run_tool
from tests.e2e.conftest import demo_workspace  # noqa: F401
from tests.tools.analysis_fixtures import config_path, load_tool

tool = load_tool('browse_dataset')
PLAIN_VIEWS = ['train_dataloader.dataset.pipeline.0.view1_pipeline=[]',
               'train_dataloader.dataset.pipeline.0.view2_pipeline=[]']


@pytest.fixture(scope='module')
def m3i_workspace(tmp_path_factory):
    from m3i_mm.demo.photo_datasets import write_m3i_demo_sources
    root = tmp_path_factory.mktemp('m3i_browse')
    write_m3i_demo_sources(str(root / 'data' / 'demo' / 'm3i'))
    return root


def browse(monkeypatch, workspace, *argv):
    """Run the tool in ``workspace``; returns the arguments of every drawn sample."""
    monkeypatch.chdir(workspace)
    drawn = []
    original = tool.draw_sample

    def record(path, original_image, sample, canvas, mask, mixing, title, label, partner,
               show, interval, colors=None):
        drawn.append(dict(path=path, original=original_image, sample=sample, canvas=canvas,
                          mask=mask, mixing=mixing, title=title, label=label, partner=partner,
                          show=show))
        return original(path, original_image, sample, canvas, mask, mixing, title, label,
                        partner, show, interval, colors)

    monkeypatch.setattr(tool, 'draw_sample', record)
    tool.main([config_path('m3i'), *map(str, argv)])
    return drawn


def test_m3i_samples_views_canvas_and_annotations(m3i_workspace, monkeypatch, tmp_path):
    from m3i_mm.datasets.transforms import M3IViews
    out = tmp_path / 'pictures'
    drawn = browse(monkeypatch, m3i_workspace, '--show-number', 11, '--output-dir', out,
                   '--not-show', '--cfg-options', *PLAIN_VIEWS)
    assert len(drawn) == 11
    files = sorted(os.listdir(out))
    assert files == sorted(osp.basename(d['path']) for d in drawn) and len(files) == 11
    for name in files[:2]:
        with Image.open(out / name) as png:
            pixels = np.asarray(png.convert('RGB'), dtype=np.float64)
        assert pixels.shape == (390, 1500, 3) and pixels.std() > 20
    resize = M3IViews(size=64).resize
    sources = set()
    for index, item in enumerate(drawn):
        meta = item['sample']['data_samples'].metainfo
        sources.add(meta['source_name'])
        views = item['sample']['inputs'].permute(0, 2, 3, 1).numpy()  # BGR, as decoded
        for v in range(2):  # each view is the resized crop at its drawn box (no colour aug)
            x1, y1, x2, y2 = (int(c) for c in meta['crop_boxes'][v])
            expected = resize(item['original'][y1:y2, x1:x2])
            if meta['flips'][v]:
                expected = expected[:, ::-1]
            np.testing.assert_array_equal(views[v], expected)
        mask = item['mask']
        assert mask.shape == (4, 4) and int(mask.sum()) == 8  # ratio 0.5 of 16 patches
        batch_start = index - index % 8
        partner = drawn[batch_start + (index - batch_start + 1) % 8] if index < 8 else None
        pixel_mask = np.kron(mask, np.ones((16, 16), dtype=bool))
        view1 = views[0][..., ::-1]
        np.testing.assert_array_equal(item['canvas'][~pixel_mask], view1[~pixel_mask])
        if partner is not None:  # the first batch is complete: check the partner's patches
            other = partner['sample']['inputs'][0].permute(1, 2, 0).numpy()[..., ::-1]
            np.testing.assert_array_equal(item['canvas'][pixel_mask], other[pixel_mask])
            assert f'batch position {(index + 1) % 8}' in item['partner']
        if meta['source_name'] == 'labelled':
            classes = ('astronaut', 'chelsea', 'coffee', 'rocket')
            label = int(item['sample']['data_samples'].gt_label[0])
            assert item['label'] == f'label {label} ({classes[label]})'
        elif meta['source_name'] == 'captions':
            assert item['label'] == f'caption "{meta["caption"]}"'
        else:
            assert item['label'] == 'no label, no caption'
    assert sources == {'captions', 'labelled', 'unlabelled'}  # 11 samples of ratios .4/.4/.2


def test_m3i_masking_without_mixing_and_without_mask(m3i_workspace, monkeypatch, tmp_path):
    drawn = browse(monkeypatch, m3i_workspace, '--show-number', 2, '--output-dir', tmp_path,
                   '--cfg-options', 'model.mix=False')
    assert not drawn[0]['mixing']['mix'] and drawn[0]['partner'] == ''
    view1 = drawn[0]['sample']['inputs'][0].permute(1, 2, 0).numpy()[..., ::-1]
    np.testing.assert_array_equal(drawn[0]['canvas'], view1)  # masked on top, in grey
    assert int(drawn[0]['mask'].sum()) == 8
    drawn = browse(monkeypatch, m3i_workspace, '--show-number', 1, '--output-dir', tmp_path,
                   '--cfg-options', 'model.mask_ratio=0')
    assert drawn[0]['mask'] is None
    with Image.open(drawn[0]['path']) as png:
        assert png.size == (1200, 390)  # four panels


def test_m3i_errors(m3i_workspace, monkeypatch):
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    monkeypatch.setattr(sys, 'platform', 'linux')
    with pytest.raises(UsageError, match='no display here: pass --output-dir'):
        browse(monkeypatch, m3i_workspace)
    with pytest.raises(UsageError, match='unknown options for an M3I config: --mode x'):
        browse(monkeypatch, m3i_workspace, '--output-dir', 'out', '--mode', 'x')


def args_for(*argv):
    return tool.parse_args(list(argv))


def test_downstream_command_lines(monkeypatch):
    monkeypatch.setattr(tool, 'has_display', lambda: False)  # no windows: --not-show
    det = Config.fromfile(config_path('detector'))
    args, rest = args_for(config_path('detector'), '--output-dir', 'o', '--show-number', '3')
    command = tool.downstream_command(det, args, rest)
    assert command[:3] == [sys.executable, '-m', 'm3i_mm.cli.downstream_browse']
    assert command[3].endswith('mmdet/.mim/tools/analysis_tools/browse_dataset.py')
    assert osp.isfile(command[3])
    assert command[4:] == [config_path('detector'), '--output-dir', 'o', '--not-show',
                           '--show-interval', '2', '--cfg-options',
                           'train_dataloader.dataset.indices=3']
    cls = Config.fromfile(config_path('classifier'))
    args, rest = args_for(config_path('classifier'), '--output-dir', 'o', '--show-number', '3',
                          '--mode', 'concat', '--cfg-options', 'train_dataloader.batch_size=1')
    command = tool.downstream_command(cls, args, rest)
    assert command[3].endswith('mmpretrain/.mim/tools/visualization/browse_dataset.py')
    assert command[4:] == [config_path('classifier'), '--output-dir', 'o', '--not-show',
                           '--show-interval', '2', '--show-number', '3', '--cfg-options',
                           'train_dataloader.batch_size=1', '--mode', 'concat']
    assert tool.limit_key(dict(type='RepeatDataset', times=2, dataset=dict(
        type='MultiImageMixDataset', dataset=dict(type='CocoDataset')))) == \
        'train_dataloader.dataset.dataset.dataset.indices'
    assert tool.limit_key(dict(type='ConcatDataset', datasets=[])) is None
    with pytest.raises(UsageError, match="no dataset browser for default_scope 'mmocr'"):
        tool.browser_script('mmocr')


@pytest.mark.slow
@pytest.mark.parametrize('family', ['classifier', 'detector', 'segmentor'])
def test_downstream_browsers_write_pictures(family, demo_workspace, tmp_path):
    """The real mmpretrain / mmdet / mmseg browsers, through this tool, on the demo data."""
    out = tmp_path / 'pictures'
    res = run_tool(['tools/analysis/browse_dataset.py', config_path(family), '--output-dir',
                    str(out), '--show-number', '2'], cwd=demo_workspace,
                   env=dict(DISPLAY=''))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    files = sorted(os.listdir(out))
    assert len(files) == 2, files
    for name in files:
        with Image.open(out / name) as picture:
            assert min(picture.size) >= 32
            assert np.asarray(picture.convert('RGB'), dtype=np.float64).std() > 10
