"""CB-InternImage: two InternImage backbones joined by CBNet-style assisting connections.

The composite backbone of the official InternImage system-level detectors (CB-InternImage-H
with DINO: 65.0 / 65.4 box AP on COCO val / test-dev, 65.8 on LVIS minival). Semantics, read
from the official ``detection/mmdet_custom/models/backbones/cbnet.py`` (commit 31c962d):

1. The *assisting* backbone (``cb_modules.0``) is a complete InternImage; it runs on the
   image and yields the four stage outputs ``a_0..a_3`` (before downsampling).
2. The *lead* backbone (``cb_modules.1``) has no stem of its own: it starts from the
   assisting backbone's stem output. Before its stage ``i`` it adds
   ``gamma_i * sum_{j >= i} resize(conv_ij(a_j))``, where ``conv_ij`` is a 1x1 convolution
   from stage ``j``'s width to stage ``i``'s (identity for ``j = i``), ``resize`` is nearest
   interpolation to stage ``i``'s resolution, and ``gamma_i`` (one value per channel) starts
   at zero, so the lead backbone starts as a plain InternImage.
3. Both backbones return ``out_indices``; training uses both (the detector weights the
   assisting backbone's loss by 0.5, see :class:`m3i_mm.models.detectors.CBDINO`), inference
   the lead backbone's.

Differences from the official module, none of which changes the function for inputs whose
sides are multiples of 32 (the official pipelines pad to 32): the target size of ``resize``
is taken from the assisting backbone's stage-``i`` map rather than halving the stem size
(which breaks on odd sizes); the official code casts ``gamma_i`` to fp16 before the product
(``gamma.half()``), i.e. rounds it to fp16 precision, which is not repeated here.

Cost: twice an InternImage forward plus six 1x1 convolutions; a training step also runs
the detection head twice. CB-InternImage-H has 2.153B backbone parameters (InternImage-H:
1.073B; about 2.18B with the DINO head, official README).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule

from m3i_mm.registry import MODELS
from .intern_image import InternImage
from .pretrained import init_cfg_with_pretrained


class _LeadInternImage(InternImage):
    """The lead InternImage of a CB-InternImage: no stem, one zero-initialised gate per
    stage (``gamma0..gamma3``, the official parameter names)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        del self.patch_embed
        for i, channels in enumerate(self.channels):
            setattr(self, f'gamma{i}', nn.Parameter(torch.zeros(channels)))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None):
        raise RuntimeError('the lead backbone of a CB-InternImage runs inside '
                           'CBInternImage.forward (it has no stem of its own)')

    def _freeze_stages(self) -> None:  # no stem to freeze; CBInternImage freezes nothing
        if self.frozen_stages >= 0:
            raise ValueError('CBInternImage does not support frozen_stages')


@MODELS.register_module()
class CBInternImage(BaseModule):
    """CB-InternImage backbone (see the module docstring).

    Args:
        arch: InternImage arch name (``'h'``, ...) or dict, as for
            :class:`~m3i_mm.models.backbones.InternImage`; both backbones use it.
        out_indices: Stages returned by each backbone.
        drop_path_rate, drop_path_type, drop_rate, act_layer, with_cp, dcn_backend: As for
            InternImage, applied to both backbones.
        init_cfg: ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` loads either
            a CB-InternImage checkpoint (official mmdet layout ``backbone.cb_modules.*``, or
            ours) or a single InternImage checkpoint, which then initialises both backbones
            (the assisting connections keep their initial values: gates at zero).
        pretrained: None, or a checkpoint for ``init_cfg`` (the old mmseg spelling, as for
            InternImage).
        **overrides: InternImage arch overrides (e.g. ``layer_scale``).

    ``forward(x)`` returns ``(assisting, lead)``, each a tuple of NCHW maps for
    ``out_indices``.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'h',
                 out_indices: Sequence[int] = (1, 2, 3),
                 drop_path_rate: float = 0.,
                 drop_path_type: str = 'linear',
                 drop_rate: float = 0.,
                 act_layer: str = 'GELU',
                 with_cp: bool = False,
                 dcn_backend: str = 'auto',
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 pretrained: Optional[str] = None,
                 **overrides) -> None:
        super().__init__(init_cfg=init_cfg_with_pretrained(pretrained, init_cfg,
                                                           type(self).__name__))
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of (0, 1, 2, 3), got '
                             f'{out_indices}')
        self.out_indices = out_indices
        kwargs = dict(arch=arch, drop_path_rate=drop_path_rate, drop_path_type=drop_path_type,
                      drop_rate=drop_rate, act_layer=act_layer, out_indices=(0, 1, 2, 3),
                      with_cp=with_cp, dcn_backend=dcn_backend, **overrides)
        self.cb_modules = nn.ModuleList([InternImage(**kwargs), _LeadInternImage(**kwargs)])
        assisting = self.cb_modules[0]
        self.arch = assisting.arch
        self.depths = assisting.depths
        self.channels = assisting.channels
        self.num_features = assisting.num_features
        # cb_linears[i][j] maps assisting stage i+j to the width of stage i (j = 0: identity).
        self.cb_linears = nn.ModuleList()
        for i in range(4):
            self.cb_linears.append(nn.ModuleList(
                [nn.Identity()] + [nn.Conv2d(self.channels[i + j], self.channels[i], 1)
                                   for j in range(1, 4 - i)]))

    def _assisting_inputs(self, stage_outputs: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per lead stage ``i``: ``sum_j resize(conv_ij(a_{i+j}))``, channels-last."""
        inputs = []
        for i in range(4):
            size = stage_outputs[i].shape[1:3]
            total = 0
            for j, linear in enumerate(self.cb_linears[i]):
                y = linear(stage_outputs[i + j].permute(0, 3, 1, 2))
                if y.shape[-2:] != size:
                    y = F.interpolate(y, size=size, mode='nearest')
                total = total + y.permute(0, 2, 3, 1)
            inputs.append(total)
        return inputs

    def forward(self, x: torch.Tensor) -> Tuple[Tuple[torch.Tensor, ...], ...]:
        """NCHW images -> (assisting features, lead features) for ``out_indices``."""
        if x.dim() != 4:
            raise ValueError(f'CBInternImage expects NCHW images, got shape {tuple(x.shape)}')
        assisting, lead = self.cb_modules
        stem = assisting.pos_drop(assisting.patch_embed(x))
        a_outs, h = [], stem
        for level in assisting.levels:
            feature, h = level(h)
            a_outs.append(feature)
        extra = self._assisting_inputs(a_outs)
        l_outs, h = [], stem
        for i, level in enumerate(lead.levels):
            h = h + getattr(lead, f'gamma{i}') * extra[i]
            feature, h = level(h)
            l_outs.append(feature)
        return tuple(
            tuple(outs[i].permute(0, 3, 1, 2) for i in self.out_indices)
            for outs in (a_outs, l_outs))

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """mmpretrain-style layer id: each backbone numbered as an InternImage; a stage's
        gate and assisting convolutions go with that stage's first block."""
        inner = self.cb_modules[0]
        if not param_name.startswith(prefix):
            return inner.get_layer_depth(param_name, prefix)
        name = param_name[len(prefix):]
        parts = name.split('.')
        if parts[0] == 'cb_modules' and parts[2].startswith('gamma'):
            stage = int(parts[2][len('gamma'):])
        elif parts[0] == 'cb_modules':
            return inner.get_layer_depth('.'.join(parts[2:]))
        elif parts[0] == 'cb_linears':
            stage = int(parts[1])
        else:
            raise KeyError(f'{param_name} is not a CBInternImage parameter')
        return inner.get_layer_depth(f'levels.{stage}.blocks.0.')

    def init_weights(self) -> None:
        """Default init of both backbones (and PyTorch's for the assisting convolutions),
        then the pretrained weights if ``init_cfg`` asks for them."""
        if getattr(self, '_is_init', False):
            print_log('CBInternImage.init_weights() called again: keeping the weights',
                      logger='current')
            return
        for module in self.cb_modules:
            module.init_weights()
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        for cfg in cfgs:
            if cfg and cfg.get('type') == 'Pretrained':
                self.load_pretrained(cfg['checkpoint'], prefix=cfg.get('prefix', 'backbone.'),
                                     map_location=cfg.get('map_location', 'cpu'))
            elif cfg:
                raise ValueError('CBInternImage init_cfg supports only type="Pretrained", got '
                                 f'{cfg}')
        self._is_init = True

    def load_pretrained(self, checkpoint: str, prefix: str = 'backbone.',
                        map_location: str = 'cpu') -> None:
        """Load a CB-InternImage checkpoint strictly, or a single InternImage into both
        backbones (see the class docstring)."""
        from mmengine.runner import CheckpointLoader

        from m3i_mm.zoo.cb_internimage import convert_cb_internimage, is_cb_internimage
        from m3i_mm.zoo.internimage import extract_state_dict
        raw = CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location)
        if not is_cb_internimage(extract_state_dict(raw)):
            from .pretrained import load_pretrained_backbone
            assisting, lead = self.cb_modules
            load_pretrained_backbone(assisting, checkpoint, prefix=prefix,
                                     map_location=map_location)
            copied = {k: v for k, v in assisting.state_dict().items()
                      if not k.startswith('patch_embed.')}
            missing, unexpected = lead.load_state_dict(copied, strict=False)
            if unexpected or not all(k.startswith('gamma') for k in missing):
                raise RuntimeError(f'lead backbone does not mirror the assisting one: '
                                   f'missing {missing[:10]}, unexpected {unexpected[:10]}')
            print_log(f'CBInternImage: both backbones start from the InternImage weights of '
                      f'{checkpoint}; assisting connections keep their initial values',
                      logger='current')
            return
        state = convert_cb_internimage(raw)['state_dict']
        selected = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        own = self.state_dict()
        missing = sorted(set(own) - set(selected))
        unexpected = sorted(set(selected) - set(own))
        mismatched = [f'{k}: checkpoint {tuple(selected[k].shape)} vs model '
                      f'{tuple(own[k].shape)}' for k in sorted(set(own) & set(selected))
                      if selected[k].shape != own[k].shape]
        if missing or unexpected or mismatched:
            raise ValueError(
                f'{checkpoint}: CB-InternImage checkpoint does not fit the model (prefix '
                f'{prefix!r}): {len(missing)} missing {missing[:10]}, {len(unexpected)} '
                f'unexpected {unexpected[:10]}, shape mismatches {mismatched[:10]}')
        self.load_state_dict(selected, strict=True)
        print_log(f'loaded {len(selected)} tensors into CBInternImage from {checkpoint} '
                  f'(prefix {prefix!r})', logger='current')
