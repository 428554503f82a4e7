"""Fuse InternImage stages 3 and 4 into one stride-16 map (the official H/G interface)."""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from m3i_mm.registry import MODELS


@MODELS.register_module()
class Stride16Fusion(BaseModule):
    """``conv1x1(stage3) + PixelShuffle2(conv1x1(stage4, 4*D))``: a D-channel map at stride 16.

    InternImage-H/G's classifier and M3I pre-training read features through this fusion
    (official ``dcnv3_head_x3``/``dcnv3_head_x4``, D=1024). When the stage-3 map has an odd
    size, the shuffled stage-4 map (twice the stage-4 size) is one row/column larger and is
    cropped.

    Args:
        in_channels: Channels of stage 3 and stage 4.
        embed_dim: D.
        in_indices: Which two of the backbone outputs are stage 3 and stage 4.
    """

    def __init__(self, in_channels: Sequence[int], embed_dim: int = 1024,
                 in_indices: Sequence[int] = (-2, -1), init_cfg=None) -> None:
        super().__init__(init_cfg)
        if len(in_channels) != 2 or len(in_indices) != 2:
            raise ValueError('Stride16Fusion takes two inputs (stage 3, stage 4); got '
                             f'in_channels={in_channels}, in_indices={in_indices}')
        self.in_indices = tuple(in_indices)
        self.embed_dim = embed_dim
        self.stage3_proj = nn.Conv2d(in_channels[0], embed_dim, 1)
        self.stage4_proj = nn.Conv2d(in_channels[1], embed_dim * 4, 1)

    def forward(self, inputs: Tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Backbone outputs (NCHW) -> ``(N, D, H/16, W/16)``."""
        x3, x4 = (inputs[i] for i in self.in_indices)
        if x4.shape[-2] * 2 < x3.shape[-2] or x4.shape[-1] * 2 < x3.shape[-1]:
            raise ValueError(f'stage-4 map {tuple(x4.shape[-2:])} is not half the stage-3 map '
                             f'{tuple(x3.shape[-2:])}')
        up = F.pixel_shuffle(self.stage4_proj(x4), 2)[..., :x3.shape[-2], :x3.shape[-1]]
        return self.stage3_proj(x3) + up
