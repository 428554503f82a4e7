"""Convert official CB-InternImage checkpoints (mmdet 2.x detectors) to m3i_mm names.

The official CB-InternImage (``detection/mmdet_custom/models/backbones/cbnet.py``) keeps its
two InternImage backbones under ``backbone.cb_modules.0.`` (with stem) and
``backbone.cb_modules.1.`` (without stem, plus the gates ``gamma0..3``), and the assisting
1x1 convolutions under ``backbone.cb_linears.{i}.{j}.``. Inside each ``cb_modules.K.`` the
keys are those of an official InternImage, renamed here with the InternImage rules of
:mod:`m3i_mm.zoo.internimage`; ``cb_linears`` and the gates keep their names. Keys outside
the backbone (neck, DINO head) are returned unchanged: converting the mmdet 2.x DINO head to
mmdet 3.x is the job of the detector converters.
"""
import re
from typing import Any, Dict

import torch

from .converters import register_converter
from .errors import ConverterError
from .internimage import _BACKBONE_RULES, _rename, extract_state_dict

_CB_MODULE = re.compile(r'^((?:backbone\.)?cb_modules\.\d+\.)(.*)$')


def is_cb_internimage(state: Dict[str, torch.Tensor]) -> bool:
    """Whether a state dict holds a CB-InternImage (``cb_modules.K.`` keys)."""
    return any(_CB_MODULE.match(key) for key in state)


def convert_cb_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename the InternImage keys inside ``cb_modules.K.``; other keys are kept."""
    converted = {}
    for key, value in state.items():
        match = _CB_MODULE.match(key)
        new = match.group(1) + _rename(match.group(2), _BACKBONE_RULES) if match else key
        if new in converted:
            raise ConverterError(f'two checkpoint keys map to {new!r}')
        converted[new] = value
    return converted


@register_converter('cb_internimage')
def convert_cb_internimage(checkpoint: Any) -> dict:
    """Converter of CB-InternImage checkpoints (official mmdet 2.x or m3i_mm)."""
    state = extract_state_dict(checkpoint)
    if not is_cb_internimage(state):
        raise ConverterError('not a CB-InternImage checkpoint: no cb_modules.K.* keys; first '
                             f'keys: {sorted(state)[:8]}')
    meta = dict(checkpoint.get('meta', {})) if isinstance(checkpoint, dict) and isinstance(
        checkpoint.get('meta'), dict) else {}
    meta['converted_from'] = 'CB-InternImage'
    return {'state_dict': convert_cb_state_dict(state), 'meta': meta}
