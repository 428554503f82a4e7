"""Convert official InternImage checkpoints to m3i_mm's parameter names.

Accepted inputs (internimage.md section 2.4):

* classification ``.pth``: weights under ``'model'`` (or ``'module'``), keys
  ``patch_embed.*``, ``levels.*``, and the head (``conv_head``/``head`` for T-XL,
  ``dcnv3_head_x3/x4``, ``clip_projector``, ``fc_norm``, ``head`` for H/G; the iNaturalist
  classifier's ``meta_head_1/2``, ``meta_norm``, ``meta_head`` go to
  :class:`~m3i_mm.models.heads.MetadataLinearClsHead`);
* mmdet/mmseg checkpoints: ``'state_dict'`` with ``backbone.`` (and neck/head) prefixes;
* Hugging Face ports: prefix ``model.`` and ``layer_scale1/2`` instead of ``gamma1/2``;
* m3i_mm checkpoints (already converted): returned unchanged.

The result is ``{'state_dict': ..., 'meta': ...}`` with the keys of an m3i_mm model:
``backbone.*`` (:class:`~m3i_mm.models.InternImage`), ``neck.*`` and ``head.fc.*`` (the
classification neck and mmpretrain ``LinearClsHead``); keys of other modules (an mmdet
neck, say) keep their names.
"""
import re
from typing import Any, Dict, List, Tuple

import torch

from .converters import register_converter
from .errors import ConverterError

# Official backbone names -> ours (the official code wraps LayerNorms in Sequentials
# with a permute at index 0, hence the ".0."/".1." levels).
_BACKBONE_RULES: List[Tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    (r'^patch_embed\.norm([12])\.1\.', r'patch_embed.norm\1.'),
    (r'\.dcn\.dw_conv\.0\.', '.dcn.dw_conv.conv.'),
    (r'\.dcn\.dw_conv\.1\.1\.', '.dcn.dw_conv.norm.'),
    (r'\.(norm[12]|res_post_norm[12])\.0\.', r'.\1.'),
    (r'^(levels\.\d+)\.norm\.0\.', r'\1.norm.'),
    (r'\.post_norms\.(\d+)\.0\.', r'.post_norms.\1.'),
    (r'\.downsample\.norm\.1\.', '.downsample.norm.'),
    (r'\.layer_scale([12])$', r'.gamma\1'),
]]

# Official classification heads -> m3i_mm neck (InternImageConvNeck / InternImageCLIPNeck)
# and mmpretrain's LinearClsHead.
_HEAD_RULES: List[Tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    (r'^conv_head\.0\.', 'neck.conv.'),
    (r'^conv_head\.1\.0\.', 'neck.bn.'),
    (r'^dcnv3_head_x4\.0\.', 'neck.fusion.stage4_proj.'),
    (r'^dcnv3_head_x3\.', 'neck.fusion.stage3_proj.'),
    (r'^clip_projector\.norm1_([qkv])\.0\.', r'neck.attn_pool.norm_\1.'),
    (r'^clip_projector\.cross_dcn\.([qkv])\.weight$', r'neck.attn_pool.\1.weight'),
    (r'^clip_projector\.cross_dcn\.([qkv])_bias$', r'neck.attn_pool.\1_bias'),
    (r'^clip_projector\.cross_dcn\.proj\.', 'neck.attn_pool.proj.'),
    (r'^fc_norm\.0\.', 'neck.fc_norm.'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
    # iNaturalist 2018 (InternImageMetaFormer) -> MetadataLinearClsHead
    (r'^meta_head_1\.', 'head.meta_encoders.0.'),
    (r'^meta_head_2\.', 'head.meta_encoders.1.'),
    (r'^(head\.meta_encoders\.\d+\.3)\.w([12])\.', r'\1.fc\2.'),
    (r'^(head\.meta_encoders\.\d+\.3)\.norm_fn([12])\.', r'\1.norm\2.'),
    (r'^meta_norm\.', 'head.meta_norm.'),
    (r'^meta_head\.(weight|bias)$', r'head.meta_fc.\1'),
]]

_BACKBONE_ROOTS = ('patch_embed.', 'levels.')
_CONTAINER_KEYS = ('model', 'state_dict', 'module', 'model_ema')


def extract_state_dict(checkpoint: Any) -> Dict[str, torch.Tensor]:
    """The tensor dict of a checkpoint (whatever container it came in), ``module.`` stripped.

    Raises:
        ConverterError: when no tensor dict can be found.
    """
    state = checkpoint
    if isinstance(checkpoint, dict):
        for key in _CONTAINER_KEYS:
            if isinstance(checkpoint.get(key), dict):
                state = checkpoint[key]
                break
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        found = list(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint)
        raise ConverterError('no state dict of tensors in the checkpoint (looked for '
                             f'{_CONTAINER_KEYS} and top-level tensors); found {found}')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def _rename(key: str, rules: List[Tuple[re.Pattern, str]]) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key)
    return key


def detect_format(keys: List[str]) -> str:
    """``'classification'``, ``'huggingface'``, ``'openmmlab'`` (backbone. prefix) or
    raises ConverterError."""
    if any(k.startswith(_BACKBONE_ROOTS) for k in keys):
        return 'classification'
    if any(k.startswith('model.' + r) for k in keys for r in _BACKBONE_ROOTS):
        return 'huggingface'
    if any(k.startswith('backbone.' + r) for k in keys for r in _BACKBONE_ROOTS):
        return 'openmmlab'
    raise ConverterError('not an InternImage checkpoint: no patch_embed.*/levels.* keys '
                         f'(with or without a model./backbone. prefix); first keys: {keys[:8]}')


def convert_state_dict(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
    """Rename an official (or m3i_mm) InternImage state dict to m3i_mm model keys."""
    fmt = detect_format(list(state))
    converted: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if fmt == 'huggingface':
            if not key.startswith('model.'):
                continue  # e.g. a separate classifier wrapper; the model. part holds it all
            key = key[len('model.'):]
        if fmt == 'openmmlab':
            new = 'backbone.' + _rename(key[len('backbone.'):], _BACKBONE_RULES) \
                if key.startswith('backbone.') else key
        elif key.startswith(_BACKBONE_ROOTS):
            new = 'backbone.' + _rename(key, _BACKBONE_RULES)
        else:
            new = _rename(key, _HEAD_RULES)
        if new in converted:
            raise ConverterError(f'two checkpoint keys map to {new!r}')
        converted[new] = value
    return converted, fmt


@register_converter('internimage')
def convert_internimage(checkpoint: Any) -> dict:
    """Converter of the ``internimage`` zoo entries (and of ``init_cfg`` Pretrained loads)."""
    state, fmt = convert_state_dict(extract_state_dict(checkpoint))
    meta = dict(checkpoint.get('meta', {})) if isinstance(checkpoint, dict) and isinstance(
        checkpoint.get('meta'), dict) else {}
    meta['converted_from'] = f'official InternImage ({fmt})'
    return {'state_dict': state, 'meta': meta}
