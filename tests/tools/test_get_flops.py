"""tools/analysis/get_flops.py: FLOPs and parameters of configs, DCNv3 counted, against the
official counting code's numbers."""
import importlib.util
import os.path as osp

import pytest

from m3i_mm.utils.errors import UsageError
from tests.conftest import REPO

# Measured, not computed here: the official counting code (``get_flops`` of
# OpenGVLab/InternImage detection/get_flops.py, commit 31c962d: mmcv's hook counter, here
# mmcv 2.1.0, plus 5 * n * k * c per DCNv3 block) on the official InternImage-T classifier
# at 224 px, run side by side by
#   python tools/analysis/get_flops.py configs/internimage/internimage-t_32xb128-300e_in1k.py \
#       --official /path/to/InternImage
# on this project's machine (2026-12-06). The README table lists the other variants.
OFFICIAL_T_224_FLOPS = 4_903_577_856
OFFICIAL_T_PARAMS = 29_918_424
PUBLISHED_T_224_GFLOPS = 5  # classification/README.md of the official repository

T_CONFIG = 'configs/internimage/internimage-t_32xb128-300e_in1k.py'
TINY = dict(channels=16, depths=[1, 1, 2, 1])  # the backbone of the configs/demo configs


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'get_flops_tool', osp.join(REPO, 'tools', 'analysis', 'get_flops.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def count(tool, config, shape=None, weights=None, options=None):
    cfg = tool.load_config(osp.join(REPO, config), options)
    task = tool.task_of(cfg)
    weights = weights or ('empty' if task == 'classification' else 'random')
    shape = shape or tool.default_shape(cfg, task)[0]
    model = tool.build_model(cfg, 'cpu', weights)
    return task, shape, tool.count_model(model, task, shape, 'cpu')


def tiny_dcnv3_flops(height: int, width: int) -> int:
    """The official rule for the tiny backbone, by hand: 5 * pixels * 9 points * channels per
    block, stride 4 * 2**i at stage i."""
    total = 0
    for i, depth in enumerate(TINY['depths']):
        pixels = (height // (4 * 2**i)) * (width // (4 * 2**i))
        total += depth * 5 * pixels * 9 * TINY['channels'] * 2**i
    return total


def test_internimage_t_matches_the_official_count():
    tool = load_tool()
    task, shape, result = count(tool, T_CONFIG)
    assert (task, shape) == ('classification', (224, 224))
    assert abs(result.flops / OFFICIAL_T_224_FLOPS - 1) < 0.01
    assert round(result.flops / 1e9) == PUBLISHED_T_224_GFLOPS
    assert result.params == OFFICIAL_T_PARAMS
    # the DCNv3 core: the official per-block rule, 18 blocks at 14 x 14 etc.
    expected_core = sum(depth * 5 * (56 // 2**i)**2 * 9 * 64 * 2**i
                        for i, depth in enumerate([4, 4, 18, 4]))
    assert result.dcnv3_flops == expected_core


def test_empty_weights_count_like_random_weights():
    tool = load_tool()
    config = 'configs/demo/internimage-tiny_in22k-pre_1xb4-2e_demo-cls.py'
    _, _, empty = count(tool, config, (64, 96), 'empty')
    _, _, random = count(tool, config, (64, 96), 'random')
    assert (empty.flops, empty.params, empty.dcnv3_flops) == \
        (random.flops, random.params, random.dcnv3_flops)
    assert empty.dcnv3_flops == tiny_dcnv3_flops(64, 96)


@pytest.mark.parametrize('config', [
    'configs/demo/mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py',
    'configs/demo/upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py'])
def test_detection_and_segmentation_count_the_backbone_and_heads(config):
    tool = load_tool()
    task, _, result = count(tool, config, (64, 128))
    assert task in ('detection', 'segmentation')
    assert result.dcnv3_flops == tiny_dcnv3_flops(64, 128)
    _, _, backbone = count(tool, 'configs/demo/internimage-tiny_in22k-pre_1xb4-2e_demo-cls.py',
                           (64, 128))
    assert result.flops > backbone.flops  # plus neck and heads


def test_report_lines():
    tool = load_tool()
    ours = tool.Complexity(flops=4_924_000_000, params=29_918_424, dcnv3_flops=99_000_000,
                           uncounted={'aten::gelu': 62})
    official = tool.Complexity(flops=4_903_577_856, params=29_918_424, dcnv3_flops=99_000_000)
    lines = tool.report(T_CONFIG, 'classification', (224, 224), '--shape', ours, official)
    assert lines[2] == 'FLOPs: 4.924 G (multiply-adds; DCNv3 core 0.099 G)'
    assert lines[3] == 'params: 29.92 M'
    assert lines[4] == 'not counted (no FLOP rule; element-wise or cheap): aten::gelu x62'
    assert lines[-1] == 'ours / official: FLOPs 1.0042, params 1.0000'


def test_bad_arguments(tmp_path, capsys):
    tool = load_tool()
    det = osp.join(REPO, 'configs/demo/mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py')
    with pytest.raises(UsageError, match='--weights empty counts classifiers only'):
        tool.main([det, '--weights', 'empty'])
    with pytest.raises(UsageError, match='no such directory'):
        tool.main([osp.join(REPO, T_CONFIG), '--official', str(tmp_path / 'missing')])
    with pytest.raises(UsageError, match='config file not found'):
        tool.main([str(tmp_path / 'missing.py')])
    no_scope = tmp_path / 'no_scope.py'
    no_scope.write_text('model = dict(type="ResNet")\n')
    with pytest.raises(UsageError, match='default_scope None is not one of'):
        tool.main([str(no_scope)])
    with pytest.raises(SystemExit):
        tool.parse_args([det, '--shape', '1', '2', '3'])
    assert '--shape takes one or two positive sizes' in capsys.readouterr().err
