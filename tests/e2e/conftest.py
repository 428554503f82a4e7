"""Shared pieces of the end-to-end tests: a working directory holding the tiny demo datasets,
a tiny backbone checkpoint as M3I pre-training leaves it, and the tools run as users run them."""
import glob
import json
import os
import os.path as osp
from typing import Dict, Tuple

import pytest
import torch

from tests.conftest import REPO, run_tool

DEMO_CONFIGS = {
    'finetune': 'internimage-tiny_m3i-pre_1xb4-5e_demo-cls.py',
    'linear': 'internimage-tiny_m3i-pre_1xb4-linear-5e_demo-cls.py',
    'coco': 'mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py',
    'lvis': 'mask-rcnn_internimage-tiny_fpn_sample0.4_1xb2-1e_demo-lvis.py',
    'ade': 'upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py',
}


def demo_config(name: str) -> str:
    path = osp.join(REPO, 'configs', 'demo', DEMO_CONFIGS[name])
    assert osp.isfile(path), path
    return path


def tiny_backbone_state(seed: int = 1234) -> Dict[str, torch.Tensor]:
    """State dict of the demo configs' tiny InternImage under ``backbone.``, every tensor
    moved away from its initial value so that a load cannot match by accident."""
    from mmengine.config import Config

    from m3i_mm.models.backbones.intern_image import InternImage
    arch = Config.fromfile(demo_config('finetune')).model.backbone.arch.to_dict()
    torch.manual_seed(seed)
    backbone = InternImage(arch=arch)
    backbone.init_weights()
    with torch.no_grad():
        for tensor in backbone.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
    return {f'backbone.{k}': v.clone() for k, v in backbone.state_dict().items()}


@pytest.fixture(scope='session')
def demo_workspace(tmp_path_factory):
    """A working directory with ``data/demo/{cls,coco,lvis,ade}``."""
    from m3i_mm.demo.photo_datasets import write_demo_datasets
    workspace = tmp_path_factory.mktemp('demo')
    write_demo_datasets(str(workspace / 'data' / 'demo'))
    return str(workspace)


@pytest.fixture(scope='session')
def m3i_backbone(demo_workspace) -> Tuple[str, Dict[str, torch.Tensor]]:
    """(path, state dict) of a tiny backbone checkpoint saved as an mmengine checkpoint."""
    state = tiny_backbone_state()
    path = osp.join(demo_workspace, 'm3i_tiny', 'backbone.pth')
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save(dict(state_dict=state, meta=dict(source='tests/e2e')), path)
    return path, state


def check_ok(res) -> None:
    assert res.returncode == 0, (f'exit {res.returncode}\nSTDOUT\n{res.stdout[-3000:]}\n'
                                 f'STDERR\n{res.stderr[-5000:]}')


def train(name: str, workspace: str, backbone: str, *options: str) -> str:
    """tools/train.py on a demo config, starting from ``backbone``; returns the work dir."""
    work_dir = osp.join(workspace, f'work_{name}')
    res = run_tool(['tools/train.py', demo_config(name), '--work-dir', work_dir,
                    '--cfg-options', f'model.backbone.init_cfg.checkpoint={backbone}',
                    *options], cwd=workspace)
    check_ok(res)
    log = res.stdout + res.stderr
    assert f'into InternImage from {backbone}' in log, 'the backbone checkpoint was not loaded'
    assert '[m3i_mm] rank 0/1 finished training' in res.stdout
    return work_dir


def last_checkpoint(work_dir: str) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        path = f.read().strip()
    assert osp.isfile(path), (path, glob.glob(osp.join(work_dir, '*.pth')))
    return path


def run_test_tool(name: str, workspace: str, checkpoint: str):
    """tools/test.py on a demo config (the completed process)."""
    return run_tool(['tools/test.py', demo_config(name), checkpoint, '--work-dir',
                     osp.join(workspace, f'test_{name}')], cwd=workspace)


def parse_metrics(res) -> dict:
    check_ok(res)
    marker = '[m3i_mm] test metrics: '
    assert marker in res.stdout, res.stdout[-3000:]
    return json.loads(res.stdout.split(marker)[1].splitlines()[0])


def assert_scores(metrics: dict, keys, low: float, high: float) -> None:
    """``keys`` are reported as finite numbers in [low, high]."""
    missing = set(keys) - set(metrics)
    assert not missing, f'metrics {sorted(missing)} missing from {sorted(metrics)}'
    for key in keys:
        value = metrics[key]
        assert isinstance(value, float) and low <= value <= high, (key, value)
