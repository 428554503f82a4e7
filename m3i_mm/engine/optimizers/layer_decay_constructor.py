"""Layer-wise learning-rate decay for InternImage, usable from mmpretrain, mmdet and mmseg.

mmdet's and mmseg's own layer-decay constructors accept only ConvNeXt/BEiT/MAE backbones;
this one works with any backbone that implements ``get_layer_depth(name, prefix)``.
"""
from collections import defaultdict
from typing import Callable, List, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor

from m3i_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

#: Parameters the official recipe trains at ``DCN_LR_MUL`` (it covers the offset and the
#: centre-feature-scale projections; the mask projection is added here, as our design asks).
DEFAULT_DCN_KEYS = ('dcn.offset.', 'dcn.mask.', 'dcn.center_feature_scale_proj')


def _layer_depth_fn(model: nn.Module) -> Callable[[str], Tuple[int, int]]:
    if hasattr(model, 'get_layer_depth'):
        return model.get_layer_depth
    backbone = getattr(model, 'backbone', None)
    if backbone is not None and hasattr(backbone, 'get_layer_depth'):
        return lambda name: backbone.get_layer_depth(name, 'backbone.')
    raise TypeError(f'layer-wise lr decay needs a model or backbone with get_layer_depth(); '
                    f'{type(model).__name__} (backbone {type(backbone).__name__}) has none')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimizer param groups with layer-wise lr decay and a DCN lr multiplier.

    ``paramwise_cfg`` keys:

    - ``layer_decay_rate`` (float, 1.0): lr of layer ``i`` of ``L`` is scaled by
      ``rate ** (L - i - 1)``, with the layer ids of the backbone's ``get_layer_depth``.
    - ``dcn_lr_mult`` (float, 1.0) and ``dcn_lr_keys`` (names containing any of these
      substrings, default :data:`DEFAULT_DCN_KEYS`): extra lr factor for DCNv3 offsets/masks.
    - ``no_decay_1d`` (bool, True): no weight decay for biases and other 1-D parameters
      (norms, layer scales), as in the official recipe.
    - ``custom_keys`` (dict): ``{substring: dict(lr_mult=..., decay_mult=...)}``.

    Parameters sharing (lr, weight decay) are put into one group.
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        if prefix:
            raise ValueError('LayerDecayOptimWrapperConstructor groups the whole model at once')
        model = module.module if is_model_wrapper(module) else module
        cfg = dict(self.paramwise_cfg)
        rate = cfg.pop('layer_decay_rate', 1.0)
        dcn_mult = cfg.pop('dcn_lr_mult', 1.0)
        dcn_keys = tuple(cfg.pop('dcn_lr_keys', DEFAULT_DCN_KEYS))
        no_decay_1d = cfg.pop('no_decay_1d', True)
        custom_keys = cfg.pop('custom_keys', {})
        if cfg:
            raise ValueError(f'unknown paramwise_cfg keys for LayerDecayOptimWrapperConstructor: '
                             f'{sorted(cfg)}')
        depth_of = _layer_depth_fn(model)
        base_wd = self.base_wd or 0.0
        sorted_custom = sorted(custom_keys, key=len, reverse=True)
        groups = defaultdict(list)
        layer_of_group = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            layer_id, num_layers = depth_of(name)
            lr_scale = rate**(num_layers - layer_id - 1)
            wd = 0.0 if no_decay_1d and (param.ndim == 1 or name.endswith('.bias')) else base_wd
            if any(key in name for key in dcn_keys):
                lr_scale *= dcn_mult
            custom = next((k for k in sorted_custom if k in name), None)
            if custom is not None:
                lr_scale *= custom_keys[custom].get('lr_mult', 1.0)
                wd *= custom_keys[custom].get('decay_mult', 1.0)
            key = (lr_scale, wd)
            groups[key].append(param)
            layer_of_group.setdefault(key, layer_id)
        for (lr_scale, wd), group_params in sorted(groups.items(), key=lambda kv: -kv[0][0]):
            params.append(dict(params=group_params, lr=self.base_lr * lr_scale,
                               weight_decay=wd, lr_scale=lr_scale))
        print_log(f'layer-wise lr decay {rate} (dcn lr x{dcn_mult}): {len(params)} param '
                  f'groups, lr scales {min(g["lr_scale"] for g in params):.3g}..'
                  f'{max(g["lr_scale"] for g in params):.3g}', logger='current')

    def __call__(self, model: nn.Module):
        # The default constructor skips add_params when paramwise_cfg is empty.
        if not self.paramwise_cfg:
            self.paramwise_cfg = dict(layer_decay_rate=1.0)
        return super().__call__(model)

