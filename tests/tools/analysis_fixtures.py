"""Shared by the tests of the analysis tools that read a backbone: a tiny InternImage
checkpoint whose DCNv3 layers really deform, the same weights in the official
classification layout served by a loopback zoo, and the tools loaded as modules."""
import importlib.util
import io
import os.path as osp
from typing import Dict

import torch
import yaml

from tests.conftest import REPO
from tests.models.backbones.official_checkpoint import expected_name, official_shapes

TINY = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16])
# one config per family, all with the tiny backbone above
CONFIGS = {
    'm3i': 'configs/m3i/m3i_internimage-tiny_1xb8-300it_photos.py',
    'classifier': 'configs/demo/internimage-tiny_m3i-pre_1xb4-5e_demo-cls.py',
    'detector': 'configs/demo/mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py',
    'segmentor': 'configs/demo/upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py',
}
ZOO_NAME = 'tiny_internimage_official_cls'


def config_path(family: str) -> str:
    return osp.join(REPO, CONFIGS[family])


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(
        name, osp.join(REPO, 'tools', 'analysis', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deformed_backbone_state(seed: int = 0) -> Dict[str, torch.Tensor]:
    """The tiny backbone with every tensor
    off its initial value and offset/mask predictors large enough to move the points by
    about a cell; keys ``backbone.*``."""
    from m3i_mm.models.backbones.intern_image import InternImage
    from m3i_mm.models.layers.dcnv3 import DCNv3
    torch.manual_seed(seed)
    backbone = InternImage(arch=TINY)
    backbone.init_weights()
    with torch.no_grad():
        for tensor in backbone.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
        for module in backbone.modules():
            if isinstance(module, DCNv3):
                module.offset.weight.normal_(0, 0.3)
                module.mask.weight.normal_(0, 0.3)
    return {f'backbone.{k}': v.clone() for k, v in backbone.state_dict().items()}


def save_checkpoint(path: str, state: Dict[str, torch.Tensor]) -> str:
    torch.save({'state_dict': state, 'meta': {'iter': 1}}, path)
    return path


def official_classification_bytes(state: Dict[str, torch.Tensor]) -> bytes:
    """``state`` (ours, ``backbone.*``) in the official classification layout: official key
    names (internimage.md section 2.4, via the tests' own table) under ``'model'``."""
    shapes = official_shapes(TINY['channels'], TINY['depths'], TINY['groups'],
                             layer_scale=False, post_norm=False, num_classes=0)
    official = {}
    for key, shape in shapes.items():
        value = state[expected_name(key)]
        assert tuple(value.shape) == tuple(shape), key
        official[key] = value.clone()
    buffer = io.BytesIO()
    torch.save({'model': official, 'epoch': 300}, buffer)
    return buffer.getvalue()


def serve_official_entry(server, tmp_path, monkeypatch, state) -> str:
    """A zoo index with one official-format entry on the loopback server; returns its
    ``m3i://`` name."""
    from tests.zoo.conftest import model_entry, sha256_hex
    data = official_classification_bytes(state)
    url = server.serve(f'/hub/{ZOO_NAME}.pth', data)
    index = tmp_path / 'index.yml'
    index.write_text(yaml.safe_dump(
        {'Models': [model_entry(ZOO_NAME, url, sha256_hex(data), converter='internimage')]},
        sort_keys=False))
    monkeypatch.setenv('M3I_MM_MODEL_INDEX', str(index))
    return f'm3i://{ZOO_NAME}'
