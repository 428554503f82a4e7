"""Load pretrained InternImage weights into a backbone, from any supported checkpoint."""
import warnings
from typing import Optional, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from m3i_mm.zoo.internimage import convert_internimage

_SHOW = 20  # keys listed per category in the report


def _listing(keys) -> str:
    keys = sorted(keys)
    more = f' ... and {len(keys) - _SHOW} more' if len(keys) > _SHOW else ''
    return ', '.join(keys[:_SHOW]) + more


def load_pretrained_backbone(model: nn.Module, checkpoint: str, prefix: Optional[str] = None,
                             map_location: str = 'cpu') -> None:
    """Load backbone weights from ``checkpoint`` into ``model`` and report what did not fit.

    Args:
        model: The backbone.
        checkpoint: A path, URL or ``m3i://NAME``: an official InternImage checkpoint
            (classification, mmdet/mmseg or Hugging Face layout) or an m3i_mm one.
        prefix: Key prefix of the backbone in the (converted) checkpoint; ``'backbone.'`` by
            default (e.g. ``'target_encoder.backbone.'`` for an M3I EMA teacher).
        map_location: Where tensors are loaded.

    Raises:
        ValueError: when no key carries ``prefix`` or a tensor's shape does not match.
    """
    raw = CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location)
    converted = convert_internimage(raw)
    state = converted['state_dict']
    prefix = 'backbone.' if prefix is None else prefix
    selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not selected:
        raise ValueError(f'{checkpoint}: no weights under prefix {prefix!r}; the checkpoint has '
                         f'e.g. {sorted(state)[:5]}')
    own = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in selected.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise ValueError(f'{checkpoint}: shapes do not match the model (wrong arch?): '
                         + '; '.join(mismatched[:10]))
    missing, unexpected = model.load_state_dict(selected, strict=False)
    print_log(f'loaded {len(selected) - len(unexpected)} tensors into {type(model).__name__} '
              f'from {checkpoint} ({converted["meta"]["converted_from"]}, prefix {prefix!r})',
              logger='current')
    if missing:
        print_log(f'{len(missing)} model tensors missing in the checkpoint (left at their '
                  f'initial values): {_listing(missing)}', logger='current', level=30)
    if unexpected:
        print_log(f'{len(unexpected)} checkpoint tensors not used by the model: '
                  f'{_listing(unexpected)}', logger='current', level=30)


def init_cfg_with_pretrained(pretrained: Optional[str], init_cfg: Optional[Union[dict, list]],
                             owner: str) -> Optional[Union[dict, list]]:
    """The ``init_cfg`` of a backbone given the old-style ``pretrained`` argument as well.

    mmseg's segmentors and many stock configs still pass ``pretrained`` to the backbone.
    As mmseg's own backbones do: ``None`` changes nothing; a path (or URL, ``m3i://NAME``)
    becomes ``dict(type='Pretrained', checkpoint=pretrained)`` with a FutureWarning.

    Raises:
        ValueError: When both ``pretrained`` and ``init_cfg`` are given.
        TypeError: When ``pretrained`` is neither a string nor None.
    """
    if pretrained is None:
        return init_cfg
    if not isinstance(pretrained, str):
        raise TypeError(f'{owner}: pretrained must be a path (str) or None, got {pretrained!r}')
    if init_cfg:
        raise ValueError(f'{owner}: pretrained={pretrained!r} and init_cfg={init_cfg!r} both '
                         'set; give init_cfg=dict(type="Pretrained", checkpoint=...) only')
    warnings.warn(f'{owner}: pretrained={pretrained!r} is deprecated (as in mmseg); use '
                  f"init_cfg=dict(type='Pretrained', checkpoint={pretrained!r})", FutureWarning,
                  stacklevel=3)
    return dict(type='Pretrained', checkpoint=pretrained)
