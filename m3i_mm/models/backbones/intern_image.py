"""InternImage (Wang et al., CVPR 2023): a DCNv3 backbone, variants T/S/B/L/XL/H/G.

Blocks keep channels-last ``(N, H, W, C)`` tensors throughout (LayerNorm, MLP and DCNv3
all work on the last axis); convolutions take the NCHW *view* of a channels-last tensor,
which is ``torch.channels_last`` memory, so no layout copies are made. Outputs are NCHW
views per stage for mmdet/mmseg/mmpretrain necks.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_

from m3i_mm.models.layers.block_mask import expand_patch_mask
from m3i_mm.models.layers.dcnv3 import (DCNv3, ChannelsLastConv2d, activate,
                                        build_activation, eager_inference)
from m3i_mm.registry import MODELS
from m3i_mm.utils.suggest import did_you_mean
from .pretrained import init_cfg_with_pretrained


class StemLayer(nn.Module):
    """conv3x3/2 -> LN -> act -> conv3x3/2 -> LN: stride 4, channels-last output."""

    def __init__(self, in_channels: int, out_channels: int, act_layer: str = 'GELU') -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels // 2, 3, stride=2, padding=1)
        self.norm1 = nn.LayerNorm(out_channels // 2, eps=1e-6)
        self.act = build_activation(act_layer)
        self.conv2 = ChannelsLastConv2d(out_channels // 2, out_channels, 3, stride=2, padding=1)
        self.norm2 = nn.LayerNorm(out_channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW image in, ``(N, H/4, W/4, C)`` out."""
        x = activate(self.act, self.norm1(self.conv1(x).permute(0, 2, 3, 1)))
        x = self.conv2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.norm2(x)


class DownsampleLayer(nn.Module):
    """conv3x3/2 (no bias) doubling the channels, then LN; channels-last in and out."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = ChannelsLastConv2d(channels, 2 * channels, 3, stride=2, padding=1,
                                       bias=False)
        self.norm = nn.LayerNorm(2 * channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class MLP(nn.Module):
    """Linear -> act -> dropout -> Linear -> dropout."""

    def __init__(self, channels: int, hidden: int, act_layer: str = 'GELU',
                 drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = build_activation(act_layer)
        self.fc2 = nn.Linear(hidden, channels)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = activate(self.act, self.fc1(x))
        if self.drop.p == 0:  # (no module calls for nothing: 60 per image in InternImage-T)
            return self.fc2(hidden)
        return self.drop(self.fc2(self.drop(hidden)))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _residual(x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """``x + branch``; in eager inference added into ``branch`` (a fresh tensor of the block)
    when that keeps the result's dtype, which saves an allocation per residual."""
    if eager_inference() and branch.dtype == x.dtype and branch.shape == x.shape:
        return branch.add_(x)
    return x + branch


class InternImageLayer(nn.Module):
    """One InternImage block: DCNv3 token mixer and MLP, each with a residual.

    The residual form depends on the variant (official precedence):
    ``layer_scale`` set -> ``x + DP(gamma * N(f(.)))`` (post-norm) or ``x + DP(gamma * f(N(x)))``;
    otherwise ``post_norm`` -> ``x + DP(N(f(x)))``; ``res_post_norm`` ->
    ``x + DP(RPN(f(N(x))))``; plain pre-norm -> ``x + DP(f(N(x)))``.
    """

    def __init__(self,
                 channels: int,
                 groups: int,
                 mlp_ratio: float = 4.,
                 drop: float = 0.,
                 drop_path: float = 0.,
                 act_layer: str = 'GELU',
                 post_norm: bool = False,
                 layer_scale: Optional[float] = None,
                 offset_scale: float = 1.0,
                 with_cp: bool = False,
                 dw_kernel_size: Optional[int] = None,
                 res_post_norm: bool = False,
                 center_feature_scale: bool = False,
                 remove_center: bool = False,
                 dcn_backend: str = 'auto') -> None:
        super().__init__()
        self.post_norm = post_norm
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(channels, eps=1e-6)
        self.dcn = DCNv3(channels=channels, kernel_size=3, dw_kernel_size=dw_kernel_size,
                         stride=1, pad=1, dilation=1, group=groups, offset_scale=offset_scale,
                         act_layer=act_layer, center_feature_scale=center_feature_scale,
                         remove_center=remove_center, backend=dcn_backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = MLP(channels, int(channels * mlp_ratio), act_layer, drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(channels))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(channels))
        self.res_post_norm = res_post_norm and not self.layer_scale and not post_norm
        if self.res_post_norm:
            self.res_post_norm1 = nn.LayerNorm(channels, eps=1e-6)
            self.res_post_norm2 = nn.LayerNorm(channels, eps=1e-6)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # drop-path is the identity outside training: not called then
        dp = self.drop_path if self.training else _identity
        add = _residual
        if self.layer_scale:
            if self.post_norm:
                x = add(x, dp(self.gamma1 * self.norm1(self.dcn(x))))
                return add(x, dp(self.gamma2 * self.norm2(self.mlp(x))))
            x = add(x, dp(self.gamma1 * self.dcn(self.norm1(x))))
            return add(x, dp(self.gamma2 * self.mlp(self.norm2(x))))
        if self.post_norm:
            x = add(x, dp(self.norm1(self.dcn(x))))
            return add(x, dp(self.norm2(self.mlp(x))))
        if self.res_post_norm:
            x = add(x, dp(self.res_post_norm1(self.dcn(self.norm1(x)))))
            return add(x, dp(self.res_post_norm2(self.mlp(self.norm2(x)))))
        x = add(x, dp(self.dcn(self.norm1(x))))
        return add(x, dp(self.mlp(self.norm2(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class InternImageStage(nn.Module):
    """Blocks, optional post-norms after chosen blocks (H/G stage 3), final norm, downsample.

    Returns the stage output before downsampling (for dense tasks) and the input of the
    next stage.
    """

    def __init__(self,
                 channels: int,
                 depth: int,
                 groups: int,
                 drop_path: Sequence[float],
                 downsample: bool,
                 post_norm: bool,
                 center_feature_scale: bool,
                 post_norm_block_ids: Optional[Sequence[int]] = None,
                 **block_kwargs) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            InternImageLayer(channels, groups, drop_path=drop_path[i], post_norm=post_norm,
                             center_feature_scale=center_feature_scale, **block_kwargs)
            for i in range(depth)
        ])
        self.post_norm_block_ids = list(post_norm_block_ids or [])
        if any(i < 0 or i >= depth for i in self.post_norm_block_ids):
            raise ValueError(f'post_norm_block_ids {self.post_norm_block_ids} out of range for '
                             f'a stage of depth {depth}')
        if self.post_norm_block_ids:
            self.post_norms = nn.ModuleList(
                [nn.LayerNorm(channels, eps=1e-6) for _ in self.post_norm_block_ids])
        self.has_norm = not post_norm or center_feature_scale
        if self.has_norm:
            self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.downsample = DownsampleLayer(channels) if downsample else None

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.post_norm_block_ids:
                x = self.post_norms[self.post_norm_block_ids.index(i)](x)
        if self.has_norm:
            x = self.norm(x)
        return x, (self.downsample(x) if self.downsample is not None else x)


@MODELS.register_module()
class InternImage(BaseModule):
    """InternImage backbone.

    Args:
        arch: A name in :attr:`arch_settings` (``t``, ``s``, ``b``, ``l``, ``xl``, ``h``,
            ``g``) or a dict with the keys of those settings (missing keys take the
            defaults of ``t``). Other arguments override single settings of the arch.
        in_channels: Image channels.
        drop_path_rate: Stochastic depth of the last block.
        drop_path_type: ``'linear'`` (0 to ``drop_path_rate`` over all blocks) or
            ``'uniform'``.
        drop_rate: Dropout inside the MLPs.
        act_layer: Activation of stem, DCNv3 context branch and MLPs.
        out_indices: Stages whose outputs (before downsampling, NCHW) are returned.
        frozen_stages: Stem and stages ``0..frozen_stages`` get no gradients and stay in
            eval mode (-1: nothing frozen).
        with_cp: Activation checkpointing per block.
        dcn_backend: DCNv3 core backend (``'auto'``, ``'pytorch'``, ``'triton'``, ``'cuda'``).
        mask_token: Create a learnable token that replaces masked patches at the stem
            output (masked image modelling; see :meth:`forward`).
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=...,
            prefix=...)`` loads official InternImage checkpoints (classification ``model``,
            mmdet/mmseg ``state_dict``, Hugging Face ports) and m3i_mm ones.
        pretrained: The old mmseg spelling (stock mmseg configs and segmentors pass it):
            None, or a checkpoint that becomes ``init_cfg=dict(type='Pretrained',
            checkpoint=pretrained)`` with a FutureWarning.
    """
    arch_settings: Dict[str, dict] = {
        't': dict(channels=64, depths=[4, 4, 18, 4], groups=[4, 8, 16, 32], layer_scale=None,
                  offset_scale=1.0, post_norm=False),
        's': dict(channels=80, depths=[4, 4, 21, 4], groups=[5, 10, 20, 40], layer_scale=1e-5,
                  offset_scale=1.0, post_norm=True),
        'b': dict(channels=112, depths=[4, 4, 21, 4], groups=[7, 14, 28, 56],
                  layer_scale=1e-5, offset_scale=1.0, post_norm=True),
        'l': dict(channels=160, depths=[5, 5, 22, 5], groups=[10, 20, 40, 80],
                  layer_scale=1e-5, offset_scale=2.0, post_norm=True),
        'xl': dict(channels=192, depths=[5, 5, 24, 5], groups=[12, 24, 48, 96],
                   layer_scale=1e-5, offset_scale=2.0, post_norm=True),
        'h': dict(channels=320, depths=[6, 6, 32, 6], groups=[10, 20, 40, 80],
                  layer_scale=None, offset_scale=1.0, post_norm=False, res_post_norm=True,
                  dw_kernel_size=5, level2_post_norm_block_ids=[5, 11, 17, 23, 29],
                  center_feature_scale=True),
        'g': dict(channels=512, depths=[2, 2, 48, 4], groups=[16, 32, 64, 128],
                  layer_scale=None, offset_scale=1.0, post_norm=True, dw_kernel_size=5,
                  level2_post_norm_block_ids=[5, 11, 17, 23, 29, 35, 41, 47],
                  center_feature_scale=True),
    }
    _defaults = dict(mlp_ratio=4.0, res_post_norm=False, dw_kernel_size=None,
                     level2_post_norm_block_ids=None, center_feature_scale=False,
                     remove_center=False)
    _unset = object()

    def __init__(self,
                 arch: Union[str, dict] = 't',
                 in_channels: int = 3,
                 drop_path_rate: float = 0.,
                 drop_path_type: str = 'linear',
                 drop_rate: float = 0.,
                 act_layer: str = 'GELU',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 dcn_backend: str = 'auto',
                 mask_token: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 pretrained: Optional[str] = None,
                 **overrides) -> None:
        super().__init__(init_cfg=init_cfg_with_pretrained(pretrained, init_cfg,
                                                           type(self).__name__))
        self.arch = self._resolve_arch(arch, overrides)
        a = self.arch
        depths, groups = list(a['depths']), list(a['groups'])
        if len(depths) != 4 or len(groups) != 4:
            raise ValueError(f'InternImage needs 4 depths and 4 groups, got {depths}, {groups}')
        self.num_stages = 4
        self.depths = depths
        self.channels = [a['channels'] * 2**i for i in range(4)]
        for c, g in zip(self.channels, groups):
            if c % g:
                raise ValueError(f'InternImage: stage width {c} is not divisible by groups {g}')
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of (0, 1, 2, 3), got '
                             f'{out_indices}')
        if frozen_stages not in range(-1, 4):
            raise ValueError(f'frozen_stages must be in -1..3, got {frozen_stages}')
        if drop_path_type not in ('linear', 'uniform'):
            raise ValueError(f"drop_path_type must be 'linear' or 'uniform', got "
                             f'{drop_path_type!r}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.num_features = self.channels[-1]

        total = sum(depths)
        if drop_path_type == 'uniform':
            dpr = [drop_path_rate] * total
        else:
            dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.patch_embed = StemLayer(in_channels, self.channels[0], act_layer)
        self.mask_token = nn.Parameter(torch.zeros(self.channels[0])) if mask_token else None
        self.pos_drop = nn.Dropout(drop_rate)
        self.levels = nn.ModuleList()
        for i in range(4):
            self.levels.append(InternImageStage(
                channels=self.channels[i],
                depth=depths[i],
                groups=groups[i],
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                downsample=i < 3,
                post_norm=a['post_norm'],
                center_feature_scale=a['center_feature_scale'],
                post_norm_block_ids=a['level2_post_norm_block_ids'] if i == 2 else None,
                mlp_ratio=a['mlp_ratio'],
                drop=drop_rate,
                act_layer=act_layer,
                layer_scale=a['layer_scale'],
                offset_scale=a['offset_scale'],
                with_cp=with_cp,
                dw_kernel_size=a['dw_kernel_size'],
                res_post_norm=a['res_post_norm'],
                remove_center=a['remove_center'],
                dcn_backend=dcn_backend))
        self._freeze_stages()

    @classmethod
    def _resolve_arch(cls, arch: Union[str, dict], overrides: dict) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_settings:
                raise ValueError(f'InternImage arch {arch!r} unknown; choose one of '
                                 f'{list(cls.arch_settings)} or pass a dict')
            settings = {**cls._defaults, **cls.arch_settings[key]}
        elif isinstance(arch, dict):
            known = set(cls.arch_settings['h']) | set(cls._defaults)
            unknown = sorted(set(arch) - known)
            if unknown:
                raise ValueError(f'InternImage arch dict has unknown keys {unknown}.'
                                 + did_you_mean(unknown[0], sorted(known)))
            settings = {**cls._defaults, **cls.arch_settings['t'], **arch}
        else:
            raise TypeError(f'arch must be a str or dict, got {type(arch).__name__}')
        unknown = sorted(set(overrides) - set(settings))
        if unknown:
            raise TypeError(f'InternImage got unexpected arguments {unknown}.'
                            + did_you_mean(unknown[0], sorted(settings)))
        settings.update(overrides)
        if settings['level2_post_norm_block_ids'] is not None:
            settings['level2_post_norm_block_ids'] = list(settings['level2_post_norm_block_ids'])
        return copy.deepcopy(settings)

    def forward(self, x: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, ...]:
        """NCHW images -> tuple of NCHW stage features for ``out_indices``.

        Args:
            x: ``(N, 3, H, W)`` images.
            mask: Optional ``(N, h, w)`` bool patch mask (True = masked) on a grid that
                divides the stride-4 stem grid (e.g. 16-pixel patches: ``h = H / 16``).
                The masked patches' pixels are set to 0 before the stem, and their cells
                of the stem output are replaced by ``mask_token``: no pixel of a masked
                patch reaches the features (the stem's 3x3 convolutions would otherwise
                carry it into the neighbouring visible cells).
        """
        if x.dim() != 4:
            raise ValueError(f'InternImage expects NCHW images, got shape {tuple(x.shape)}')
        if mask is not None:
            x = self._blank_masked_pixels(x, mask)
        x = self.patch_embed(x)
        if mask is not None:
            x = self._apply_mask(x, mask)
        x = self.pos_drop(x)
        outs = []
        for i, level in enumerate(self.levels):
            feature, x = level(x)
            if i in self.out_indices:
                outs.append(feature.permute(0, 3, 1, 2))
        return tuple(outs)

    def _blank_masked_pixels(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mask_token is None:
            raise ValueError('InternImage got a mask but was built with mask_token=False')
        if mask.dim() != 3 or mask.shape[0] != x.shape[0]:
            raise ValueError(f'mask of shape {tuple(mask.shape)} does not tile the images '
                             f'{tuple(x.shape)}')
        pixels = expand_patch_mask(mask, x.shape[2], x.shape[3])
        return x.masked_fill(pixels.unsqueeze(1), 0.0)

    def _apply_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mask_token is None:
            raise ValueError('InternImage got a mask but was built with mask_token=False')
        n, h, w, _ = x.shape
        if mask.shape[0] != n:
            raise ValueError(f'mask of shape {tuple(mask.shape)} does not tile the stem grid '
                             f'{(n, h, w)}')
        cells = expand_patch_mask(mask, h, w)
        return torch.where(cells.unsqueeze(-1), self.mask_token.to(x.dtype), x)

    def _freeze_stages(self) -> None:
        frozen = [self.patch_embed] if self.frozen_stages >= 0 else []
        frozen += list(self.levels[:self.frozen_stages + 1])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'InternImage':
        super().train(mode)
        self._freeze_stages()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise lr decay, and the number of layers.

        Follows the official InternImage decay: block ``b`` (counted over all stages from
        0) gets decay exponent ``D - 1 - b`` (``D`` blocks); the stem goes with the first
        block; a stage's norm and downsample go with the first block of the next stage; the
        stage-3 post-norms go with the block they follow; the last stage's norm and
        everything outside the backbone get exponent 0. With mmpretrain's convention
        ``scale = rate ** (num_layers - layer_id - 1)``, ids run from 1 to ``D``.
        """
        total = sum(self.depths)
        num_layers = total + 1
        if not param_name.startswith(prefix):
            return total, num_layers
        name = param_name[len(prefix):]
        parts = name.split('.')
        if parts[0] in ('patch_embed', 'mask_token'):
            return 1, num_layers
        if parts[0] == 'levels':
            stage = int(parts[1])
            first = sum(self.depths[:stage])
            if parts[2] == 'blocks':
                return first + int(parts[3]) + 1, num_layers
            if parts[2] == 'post_norms':
                return first + self.levels[stage].post_norm_block_ids[int(parts[3])] + 1, \
                    num_layers
            if stage == 3:  # last norm
                return total, num_layers
            return sum(self.depths[:stage + 1]) + 1, num_layers
        return total, num_layers

    def init_weights(self) -> None:
        """Default init (truncated normal Linears, unit LayerNorms, DCNv3's own), then the
        pretrained weights if ``init_cfg`` asks for them (never the other way round)."""
        if getattr(self, '_is_init', False):
            print_log(f'{type(self).__name__}.init_weights() called again: keeping the weights',
                      logger='current')
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, DCNv3):
                module.reset_parameters()
        if self.mask_token is not None:
            trunc_normal_(self.mask_token, std=.02)
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        for cfg in cfgs:
            if cfg and cfg.get('type') == 'Pretrained':
                from m3i_mm.models.backbones.pretrained import load_pretrained_backbone
                load_pretrained_backbone(self, cfg['checkpoint'], prefix=cfg.get('prefix'),
                                         map_location=cfg.get('map_location', 'cpu'))
            elif cfg:
                raise ValueError(f'InternImage init_cfg supports only type="Pretrained" (the '
                                 f'default init is built in), got {cfg}')
        self._is_init = True
