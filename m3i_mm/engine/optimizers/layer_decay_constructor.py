"""Layer-wise learning-rate decay for InternImage, usable from mmpretrain, mmdet and mmseg.

mmdet's and mmseg's own layer-decay constructors accept only ConvNeXt/BEiT/MAE backbones;
this one reproduces the official InternImage rules (:mod:`.layer_decay_rules`: one for
classification, one each for detection and segmentation) and also works with any model or
backbone that implements ``get_layer_depth`` (mmpretrain's convention).
"""
from collections import defaultdict
from typing import Callable, List, Sequence

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor

from m3i_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS
from .layer_decay_rules import (CLASSIFICATION_DCN_KEYS, DENSE_NO_DECAY_KEYS, DENSE_OFFSET_KEYS,
                                NUMBERINGS)

#: ``layer_decay_numbering`` values: the official rules, and ``'model'`` (the model's or
#: backbone's own ``get_layer_depth``, mmpretrain's convention).
NUMBERING_CHOICES = ('model', *NUMBERINGS)


def _get_layer_depth_exponent(model: nn.Module) -> Callable[[str], int]:
    if hasattr(model, 'get_layer_depth'):
        depth_of = model.get_layer_depth
    else:
        backbone = getattr(model, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'get_layer_depth'):
            raise TypeError(
                'layer-wise lr decay with layer_decay_numbering="model" needs a model or '
                f'backbone with get_layer_depth(); {type(model).__name__} (backbone '
                f'{type(backbone).__name__}) has none. For InternImage choose one of '
                f'{sorted(NUMBERINGS)}.')

        def depth_of(name):
            return backbone.get_layer_depth(name, 'backbone.')

    def exponent(name: str) -> int:
        layer_id, num_layers = depth_of(name)
        return num_layers - layer_id - 1

    return exponent


def _backbone_depths(model: nn.Module, numbering: str) -> Sequence[int]:
    depths = getattr(getattr(model, 'backbone', None), 'depths', None)
    if depths is None or len(depths) != 4:
        raise TypeError(f'layer_decay_numbering={numbering!r} is the official InternImage rule '
                        f'and needs model.backbone.depths (4 stages); {type(model).__name__} '
                        'has none. Use layer_decay_numbering="model" for other backbones.')
    return list(depths)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimizer param groups with layer-wise lr decay and the official lr multipliers.

    ``paramwise_cfg`` keys:

    - ``layer_decay_rate`` (float, 1.0): a parameter with decay exponent ``e`` trains at
      ``lr * rate ** e``.
    - ``layer_decay_numbering`` (str, ``'model'``): how exponents are assigned.
      ``'classification'``, ``'detection'``, ``'segmentation'``: the official InternImage
      rules (see :mod:`m3i_mm.engine.optimizers.layer_decay_rules`; they need
      ``model.backbone.depths``); ``'model'``: ``rate ** (num_layers - layer_id - 1)`` with
      the ids of the model's or backbone's ``get_layer_depth``.
    - ``dcn_lr_mult`` (float, 1.0) and ``dcn_lr_keys``: extra lr factor for parameters whose
      name contains one of the keys; by default the official classification ``DCN_LR_MUL``
      keys (DCNv3 offset and centre-feature-scale projections, not the mask projection).
    - ``offset_lr_scale`` (float, 1.0): the official det/seg factor for deformable-attention
      ``sampling_offsets``/``reference_points`` (DINO, Mask2Former heads); the segmentation
      rule applies it only to backbone parameters (so never to an InternImage model).
      Only with the ``'detection'``/``'segmentation'`` numberings.
    - ``no_decay_1d`` (bool, True): no weight decay for biases and other 1-D parameters; the
      det/seg numberings also exempt names containing ``norm``, ``relative_position`` or
      ``sampling_offsets`` (as the official det/seg constructor does).
    - ``custom_keys`` (dict): ``{substring: dict(lr_mult=..., decay_mult=...)}``, longest
      matching key applied on top of the rules above.

    Parameters sharing (lr, weight decay) are put into one group.
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        if prefix:
            raise ValueError('LayerDecayOptimWrapperConstructor groups the whole model at once')
        model = module.module if is_model_wrapper(module) else module
        cfg = dict(self.paramwise_cfg)
        rate = cfg.pop('layer_decay_rate', 1.0)
        numbering = cfg.pop('layer_decay_numbering', 'model')
        dcn_mult = cfg.pop('dcn_lr_mult', 1.0)
        dcn_keys = tuple(cfg.pop('dcn_lr_keys', CLASSIFICATION_DCN_KEYS))
        offset_scale = cfg.pop('offset_lr_scale', 1.0)
        no_decay_1d = cfg.pop('no_decay_1d', True)
        custom_keys = cfg.pop('custom_keys', {})
        if cfg:
            raise ValueError(f'unknown paramwise_cfg keys for LayerDecayOptimWrapperConstructor: '
                             f'{sorted(cfg)}')
        if numbering not in NUMBERING_CHOICES:
            raise ValueError(f'layer_decay_numbering must be one of {NUMBERING_CHOICES}, got '
                             f'{numbering!r}')
        dense = numbering in ('detection', 'segmentation')
        if offset_scale != 1.0 and not dense:
            raise ValueError('offset_lr_scale is the official det/seg multiplier: use it with '
                             "layer_decay_numbering='detection' or 'segmentation'")
        if numbering == 'model':
            exponent_of = _get_layer_depth_exponent(model)
        else:
            depths = _backbone_depths(model, numbering)
            rule = NUMBERINGS[numbering]

            def exponent_of(name):
                return rule(name, depths)

        base_wd = self.base_wd or 0.0
        sorted_custom = sorted(custom_keys, key=len, reverse=True)
        groups = defaultdict(list)
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            lr_scale = rate**exponent_of(name)
            no_decay = param.ndim == 1 or name.endswith('.bias')
            if dense:
                no_decay = no_decay or any(key in name for key in DENSE_NO_DECAY_KEYS)
            wd = 0.0 if no_decay_1d and no_decay else base_wd
            if any(key in name for key in dcn_keys):
                lr_scale *= dcn_mult
            if dense and any(key in name for key in DENSE_OFFSET_KEYS) and (
                    numbering == 'detection' or 'backbone' in name):
                lr_scale *= offset_scale
            custom = next((k for k in sorted_custom if k in name), None)
            if custom is not None:
                lr_scale *= custom_keys[custom].get('lr_mult', 1.0)
                wd *= custom_keys[custom].get('decay_mult', 1.0)
            groups[(lr_scale, wd)].append(param)
        for (lr_scale, wd), group_params in sorted(groups.items(), key=lambda kv: -kv[0][0]):
            params.append(dict(params=group_params, lr=self.base_lr * lr_scale,
                               weight_decay=wd, lr_scale=lr_scale))
        print_log(f'layer-wise lr decay {rate} ({numbering} numbering, dcn lr x{dcn_mult}, '
                  f'offset lr x{offset_scale}): {len(params)} param groups, lr scales '
                  f'{min(g["lr_scale"] for g in params):.3g}..'
                  f'{max(g["lr_scale"] for g in params):.3g}', logger='current')

    def __call__(self, model: nn.Module):
        # The default constructor skips add_params when paramwise_cfg is empty.
        if not self.paramwise_cfg:
            self.paramwise_cfg = dict(layer_decay_rate=1.0)
        return super().__call__(model)
