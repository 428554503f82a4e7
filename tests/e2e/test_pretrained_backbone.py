"""A backbone checkpoint as M3I pre-training leaves it (InternImage tensors under
``backbone.``) is what the demo configs' backbones hold after ``init_weights``, when it is
given the documented way (``--cfg-options model.backbone.init_cfg.checkpoint=PATH``)."""
import argparse
import os.path as osp

import pytest
import torch
from mmengine.registry import MODELS, DefaultScope

from m3i_mm.cli.launch import add_common_args, load_config
from tests.e2e.conftest import DEMO_CONFIGS, demo_config, tiny_backbone_state


def build_backbone(name: str, checkpoint=None):
    """The initialised backbone of a demo config, optionally pointed at ``checkpoint``."""
    parser = argparse.ArgumentParser()
    add_common_args(parser)
    option = (f'model.backbone.init_cfg.checkpoint={checkpoint}' if checkpoint else
              'model.backbone.init_cfg=None')
    cfg = load_config(demo_config(name), parser.parse_args(['--cfg-options', option]).cfg_options)
    model_cfg = cfg.model
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(model_cfg)
        model.init_weights()
    return model.backbone


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    state = tiny_backbone_state()
    path = str(tmp_path_factory.mktemp('m3i') / 'backbone.pth')
    torch.save(dict(state_dict=state, meta=dict()), path)
    return path, {k[len('backbone.'):]: v for k, v in state.items()}


@pytest.mark.parametrize('name', sorted(DEMO_CONFIGS))
def test_demo_backbone_holds_the_checkpoint_after_init(name, checkpoint):
    path, expected = checkpoint
    loaded = build_backbone(name, path).state_dict()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), f'{key} was not loaded'
    # Detection/segmentation backbones use layer_scale=1.0; tiny M3I backbones have no
    # gammas, so they stay at 1.0 (identity), as for the official InternImage-T.
    for key in set(loaded) - set(expected):
        assert key.endswith(('gamma1', 'gamma2')), f'{key} is neither loaded nor a gamma'
        assert torch.equal(loaded[key], torch.ones_like(loaded[key]))
    # control: without the checkpoint the same build holds other weights
    fresh = build_backbone(name).state_dict()
    assert not all(torch.equal(fresh[k], v) for k, v in expected.items())


def test_bare_state_dict_loads_too(checkpoint, tmp_path):
    """A plain ``{name: tensor}`` file (no mmengine container) is accepted as well."""
    _, expected = checkpoint
    path = osp.join(str(tmp_path), 'bare.pth')
    torch.save({f'backbone.{k}': v for k, v in expected.items()}, path)
    loaded = build_backbone('finetune', path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
