"""m3i_mm's registries are found from mmpretrain, mmdet and mmseg configs."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModule
from mmengine.registry import DefaultScope, init_default_scope

from m3i_mm import registry


def test_registries_are_children_of_the_mmengine_roots():
    import mmengine.registry as root
    for name in registry.__all__:
        child = getattr(registry, name)
        assert child.scope == 'm3i_mm'
        assert child.parent is getattr(root, name), name
        assert root.MODELS._children['m3i_mm'] is registry.MODELS


@registry.MODELS.register_module(force=True)
class RegistryProbePyramid(BaseModule):
    """A 4-level conv pyramid registered in m3i_mm only (no other scope knows it)."""

    def __init__(self, channels=(8, 16, 32, 64), out_indices=(0, 1, 2, 3), init_cfg=None):
        super().__init__(init_cfg)
        layers, c_in = [], 3
        for i, c in enumerate(channels):
            layers.append(nn.Conv2d(c_in, c, 3, stride=4 if i == 0 else 2, padding=1))
            c_in = c
        self.layers = nn.ModuleList(layers)
        self.out_indices = out_indices

    def forward(self, x):
        outs = []
        for i, layer in enumerate(self.layers):
            x = torch.relu(layer(x))
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


def build_from(text: str, scope: str, tmp_path):
    path = tmp_path / f'{scope}_cfg.py'
    path.write_text(text)
    cfg = Config.fromfile(str(path))
    init_default_scope(cfg.default_scope)
    assert DefaultScope.get_current_instance().scope_name == scope
    module = __import__(f'{scope}.registry', fromlist=['MODELS'])
    return module.MODELS.build(cfg.model)


BACKBONE = "dict(_delete_=True, type='m3i_mm.RegistryProbePyramid'{extra})"


def test_built_from_an_mmpretrain_config(tmp_path):
    model = build_from(f"""
_base_ = 'mmpretrain::_base_/models/resnet18.py'
default_scope = 'mmpretrain'
model = dict(backbone={BACKBONE.format(extra=", out_indices=(3, )")},
             head=dict(in_channels=64, num_classes=5))
""", 'mmpretrain', tmp_path)
    assert type(model.backbone) is RegistryProbePyramid
    assert model(torch.rand(2, 3, 64, 64), mode='tensor').shape == (2, 5)


def test_built_from_an_mmdet_config(tmp_path):
    model = build_from(f"""
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
default_scope = 'mmdet'
model = dict(backbone={BACKBONE.format(extra=", out_indices=(1, 2, 3)")},
             neck=dict(in_channels=[16, 32, 64]))
""", 'mmdet', tmp_path)
    assert type(model.backbone) is RegistryProbePyramid
    cls_scores, box_preds = model(torch.rand(1, 3, 128, 128), mode='tensor')
    assert len(cls_scores) == 5 and cls_scores[0].shape[-2:] == (8, 8)  # FPN start_level=1: stride 16


def test_built_from_an_mmseg_config(tmp_path):
    model = build_from(f"""
_base_ = 'mmseg::_base_/models/upernet_r50.py'
default_scope = 'mmseg'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(data_preprocessor=None, pretrained=None, backbone={BACKBONE.format(extra='')},
             decode_head=dict(in_channels=[8, 16, 32, 64], channels=16, norm_cfg=norm_cfg),
             auxiliary_head=dict(in_channels=32, channels=8, norm_cfg=norm_cfg))
""", 'mmseg', tmp_path)
    assert type(model.backbone) is RegistryProbePyramid
    model.eval()
    assert model(torch.rand(1, 3, 64, 64), mode='tensor').shape == (1, 19, 16, 16)  # the base's 19 classes


def test_unknown_m3i_mm_type_names_the_type():
    import mmdet.registry
    init_default_scope('mmdet')
    with pytest.raises(KeyError, match='m3i_mm.NoSuchBackbone is not in the'):
        mmdet.registry.MODELS.build(dict(type='m3i_mm.NoSuchBackbone'))


def test_lazy_locations_find_real_modules_without_importing_m3i_mm():
    """A fresh interpreter that never imports m3i_mm builds m3i_mm.InternImage from mmdet
    and mmseg scopes: the scoped name imports m3i_mm.registry, whose locations import
    m3i_mm.models on first look-up."""
    import subprocess
    import sys
    code = """
import sys
from mmengine.registry import init_default_scope
import mmdet.registry, mmseg.registry
assert 'm3i_mm' not in sys.modules
tiny = dict(channels=16, depths=[1, 1, 1, 1], groups=[4, 8, 16, 32])
for scope, registry in (('mmdet', mmdet.registry.MODELS), ('mmseg', mmseg.registry.MODELS)):
    init_default_scope(scope)
    model = registry.build(dict(type='m3i_mm.InternImage', arch=tiny, out_indices=(3,)))
    print(scope, type(model).__module__, model.channels[-1])
"""
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split('\n')[:2] == [
        'mmdet m3i_mm.models.backbones.intern_image 128',
        'mmseg m3i_mm.models.backbones.intern_image 128']
