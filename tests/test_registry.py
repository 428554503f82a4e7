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


# ---------------------------------------------------------------- plain names (issue 20)
def _import_model_modules():
    import importlib
    for module in set(registry.PLAIN_MODEL_NAMES.values()):
        importlib.import_module(module)


def test_plain_model_names_cover_every_registered_model():
    _import_model_modules()
    assert sorted(registry.PLAIN_MODEL_NAMES) == sorted(  # (tests register probes too)
        k for k, v in registry.MODELS.module_dict.items() if v.__module__.startswith('m3i_mm.'))
    for name, module in registry.PLAIN_MODEL_NAMES.items():
        assert registry.MODELS.get(name).__module__.startswith(module), name


def test_no_plain_model_name_clashes_with_mmdet_mmseg_or_mmpretrain():
    """The decision to register plain model names in mmengine's root rests on this: none of
    them is a model of mmdet, mmseg or mmpretrain (mmpretrain's own InternImage lives in its
    projects/ folder, which the package does not ship), so every scope means ours."""
    import mmdet.registry
    import mmpretrain.registry
    import mmseg.registry
    for codebase in (mmdet.registry, mmseg.registry, mmpretrain.registry):
        codebase.MODELS.import_from_location()
        clashes = set(registry.PLAIN_MODEL_NAMES) & set(codebase.MODELS.module_dict)
        assert not clashes, (codebase.__name__, clashes)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_plain_internimage_builds_in_every_scope(scope):
    import importlib
    codebase = importlib.import_module(f'{scope}.registry')
    init_default_scope(scope)
    model = codebase.MODELS.build(dict(type='InternImage', arch=dict(
        channels=16, depths=[1, 1, 1, 1], groups=[4, 8, 16, 32]), out_indices=(3, )))
    from m3i_mm.models.backbones import InternImage
    assert type(model) is InternImage
    # after the first build the root registry holds the class itself
    import mmengine.registry as root
    assert root.MODELS.get('InternImage') is InternImage


def test_registering_plain_names_again_changes_nothing():
    import mmengine.registry as root
    before = dict(root.MODELS.module_dict)
    registry.register_plain_model_names()
    assert dict(root.MODELS.module_dict) == before


@pytest.mark.parametrize('message, hint', [
    ('MultiSourceDataset is not in the mmpretrain::dataset registry. Please check ...',
     "m3i_mm registers MultiSourceDataset in its scope: write type='m3i_mm.MultiSourceDataset'"),
    ('class `ImageClassifier` in mmpretrain/models/classifiers/image.py: LVISMetric is not '
     'in the mmseg::metric registry.', "write type='m3i_mm.LVISMetric'"),
    ('InternImag is not in the mmdet::model registry.', "did you mean 'm3i_mm.InternImage'"),
    ('m3i_mm.GausianMIHead is not in the m3i_mm::model registry.',
     "did you mean 'm3i_mm.GaussianMIHead'?"),
    ('ResNet is not in the mmdet::model registry.', None),
    ('NoSuchThing is not in the mmdet::nosuchkind registry.', None),
    ('an unrelated KeyError', None),
])
def test_scoped_name_hint(message, hint):
    found = registry.scoped_name_hint(message)
    if hint is None:
        assert found is None
    else:
        assert hint in found


@pytest.mark.slow
def test_stock_mmdet_mmseg_mmpretrain_configs_with_plain_internimage(tmp_path):
    """A user's config on top of a stock config of each codebase (from the installed
    packages' .mim/configs), backbone swapped for ``type='InternImage'``, with
    ``custom_imports=dict(imports=['m3i_mm'])``: in a fresh interpreter that has not
    imported m3i_mm, the config's custom_imports is what makes the plain name work (without
    it: the KeyError). mmseg's segmentor hands its ``pretrained`` to the backbone, which
    loads it."""
    import subprocess
    import sys
    tiny = "dict(channels=16, depths=[1, 1, 1, 1], groups=[4, 8, 16, 32])"
    imports = "custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)\n"
    configs = {
        'mmdet': f"""_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
model = dict(backbone=dict(_delete_=True, type='InternImage', arch={tiny}),
             neck=dict(in_channels=[16, 32, 64, 128]))
""",
        'mmseg': f"""_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(pretrained={str(tmp_path / 'internimage_tiny.pth')!r},
             backbone=dict(_delete_=True, type='InternImage', arch={tiny}),
             decode_head=dict(in_channels=[16, 32, 64, 128], channels=16, norm_cfg=norm_cfg),
             auxiliary_head=dict(in_channels=64, channels=8, norm_cfg=norm_cfg))
""",
        'mmpretrain': f"""_base_ = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
model = dict(backbone=dict(_delete_=True, type='InternImage', arch={tiny}, out_indices=(3, )),
             head=dict(in_channels=128, num_classes=7))
""",
    }
    for scope, text in configs.items():
        (tmp_path / f'{scope}_plain.py').write_text(text)
        (tmp_path / f'{scope}_imports.py').write_text(imports + text)
    code = f"""
import sys, warnings
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
import mmdet.registry, mmseg.registry, mmpretrain.registry
folder = {str(tmp_path)!r}
init_default_scope('mmdet')
try:
    mmdet.registry.MODELS.build(Config.fromfile(folder + '/mmdet_plain.py').model)
except KeyError as e:
    print('RESULT without custom_imports:', str(e).split('.')[0])
assert 'm3i_mm' not in sys.modules
cfgs = {{s: Config.fromfile(folder + f'/{{s}}_imports.py') for s in ('mmdet', 'mmseg', 'mmpretrain')}}
assert 'm3i_mm' in sys.modules  # imported by the configs' custom_imports
from m3i_mm.models.backbones import InternImage
torch.manual_seed(0)
source = InternImage(arch={tiny})
source.init_weights()
torch.save({{'state_dict': {{'backbone.' + k: v for k, v in source.state_dict().items()}}}},
           folder + '/internimage_tiny.pth')
x = torch.rand(1, 3, 64, 64)
for scope, cfg in cfgs.items():
    init_default_scope(cfg.default_scope)
    registry = sys.modules[scope + '.registry']
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model = registry.MODELS.build(cfg.model)
    assert type(model.backbone) is InternImage, type(model.backbone)
    model.eval()
    if scope == 'mmdet':
        out = [tuple(f.shape) for f in model.extract_feat(x)]
    elif scope == 'mmseg':
        assert any('pretrained=' in str(w.message) for w in caught)
        model.init_weights()
        assert all(torch.equal(model.backbone.state_dict()[k], v)
                   for k, v in source.state_dict().items())
        out = [tuple(model(x, mode='tensor').shape)]
    else:
        out = [tuple(model(x, mode='tensor').shape)]
    print('RESULT', scope, type(model).__name__, out)
"""
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    lines = [line[len('RESULT '):] for line in res.stdout.splitlines()
             if line.startswith('RESULT ')]
    assert lines == [
        "without custom_imports: 'InternImage is not in the mmdet::model registry",
        'mmdet MaskRCNN [(1, 256, 16, 16), (1, 256, 8, 8), (1, 256, 4, 4), (1, 256, 2, 2), '
        '(1, 256, 1, 1)]',
        'mmseg EncoderDecoder [(1, 150, 16, 16)]',
        'mmpretrain ImageClassifier [(1, 7)]',
    ], res.stdout[-3000:]
