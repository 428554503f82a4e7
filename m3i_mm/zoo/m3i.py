"""Extract the InternImage backbone from an M3I pre-training checkpoint.

An :class:`~m3i_mm.models.M3I` training checkpoint holds two copies of the backbone:

* the **online** encoder, keys ``backbone.*`` (what the optimiser trained);
* the **EMA** target encoder, keys ``target_encoder.module.0.*`` (mmpretrain's
  ``CosineEMA`` wraps ``Sequential(backbone, fusion_neck)``; ``.module.1.*`` is the
  fusion neck), present when the run used EMA targets.

Downstream configs (mmpretrain, mmdet, mmseg) load the result with
``init_cfg=dict(type='Pretrained', checkpoint=OUT, prefix='backbone.')``. The pre-training
mask token (``backbone.mask_token``) is dropped: downstream backbones have no masking.
"""
from typing import Any, Dict

import torch

from .converters import register_converter
from .errors import ConverterError

ONLINE_PREFIX = 'backbone.'
EMA_PREFIX = 'target_encoder.module.0.'
PRETRAIN_ONLY = ('mask_token', )


def extract_m3i_backbone(checkpoint: Any, weights: str = 'auto') -> Dict[str, Any]:
    """The backbone weights of an M3I checkpoint, keys prefixed ``backbone.``.

    Args:
        checkpoint: A loaded mmengine checkpoint (``{'state_dict': ..., 'meta': ...}``) or
            a bare state dict.
        weights: ``'ema'`` (target encoder), ``'online'`` (trained encoder) or ``'auto'``
            (EMA when the checkpoint has it, else online).

    Returns:
        ``{'state_dict': {'backbone.<name>': tensor}, 'meta': {...}}`` with CPU tensors.

    Raises:
        ConverterError: If ``weights`` is unknown, the checkpoint has no backbone, or EMA
            weights are asked for and the run had no EMA target encoder.
    """
    if weights not in ('auto', 'ema', 'online'):
        raise ConverterError(f"weights must be 'auto', 'ema' or 'online', got {weights!r}")
    if not isinstance(checkpoint, dict):
        raise ConverterError(f'not a checkpoint: got {type(checkpoint).__name__}')
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict):
        raise ConverterError('checkpoint "state_dict" is not a dict')
    has_ema = any(k.startswith(EMA_PREFIX) for k in state_dict)
    if weights == 'auto':
        weights = 'ema' if has_ema else 'online'
    if weights == 'ema' and not has_ema:
        raise ConverterError(
            f'no EMA weights ({EMA_PREFIX}*) in this checkpoint: the run had no EMA target '
            "encoder; use weights='online'")
    prefix = EMA_PREFIX if weights == 'ema' else ONLINE_PREFIX
    backbone = {
        ONLINE_PREFIX + key[len(prefix):]: value.detach().cpu()
        for key, value in state_dict.items()
        if key.startswith(prefix) and isinstance(value, torch.Tensor)
        and key[len(prefix):] not in PRETRAIN_ONLY
    }
    if not backbone:
        found = sorted({k.split('.')[0] for k in state_dict})[:10]
        raise ConverterError(f'no {prefix}* weights in this checkpoint (top-level names: '
                             f'{found}); is it an M3I pre-training checkpoint?')
    source_meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    meta = {k: source_meta[k] for k in ('iter', 'epoch', 'seed') if k in source_meta}
    meta['m3i_backbone'] = dict(weights=weights, source_prefix=prefix)
    return dict(state_dict=backbone, meta=meta)


@register_converter('m3i')
def convert_m3i(checkpoint: Any) -> Dict[str, Any]:
    """Zoo converter: an M3I training checkpoint to its (EMA if present) backbone."""
    return extract_m3i_backbone(checkpoint, 'auto')
