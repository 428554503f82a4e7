"""Classification necks of InternImage, for mmpretrain's ImageClassifier.

Both end in a pooled vector that mmpretrain's ``LinearClsHead`` turns into logits:

* T-XL: ``InternImageConvNeck`` (1x1 conv to 1.5x width, BatchNorm, GELU, global pool);
* H/G: ``InternImageCLIPNeck`` (stride-16 fusion, attention pooling, LayerNorm).
"""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from m3i_mm.models.layers.dcnv3 import build_activation
from m3i_mm.registry import MODELS
from .attention_pooling import AttentionPooling
from .stride16_fusion import Stride16Fusion


@MODELS.register_module()
class InternImageConvNeck(BaseModule):
    """Official T-XL head body: conv1x1 (no bias) -> BN -> act -> global average pool.

    Args:
        in_channels: Width of the last stage.
        scale: Width multiplier of the 1x1 conv (official ``cls_scale`` 1.5).
    """

    def __init__(self, in_channels: int, scale: float = 1.5, act_layer: str = 'GELU',
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.out_channels = int(in_channels * scale)
        self.conv = nn.Conv2d(in_channels, self.out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(self.out_channels)
        self.act = build_activation(act_layer)

    def forward(self, inputs: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor]:
        x = self.act(self.bn(self.conv(inputs[-1])))
        return (x.mean(dim=(2, 3)), )


@MODELS.register_module()
class InternImageCLIPNeck(BaseModule):
    """Official H/G head body: stride-16 fusion -> attention pooling -> LayerNorm.

    Args:
        in_channels: Widths of stages 3 and 4.
        embed_dim: Width of the fused tokens (1024 officially).
        out_dim: Width of the pooled vector (768 officially).
        num_heads: Heads of the attention pooling (16 officially).
    """

    def __init__(self, in_channels: Sequence[int], embed_dim: int = 1024, out_dim: int = 768,
                 num_heads: int = 16, init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.fusion = Stride16Fusion(in_channels, embed_dim)
        self.attn_pool = AttentionPooling(embed_dim, num_heads, out_dim)
        self.fc_norm = nn.LayerNorm(out_dim, eps=1e-6)

    def forward(self, inputs: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor]:
        tokens = self.fusion(inputs).flatten(2).transpose(1, 2)
        return (self.fc_norm(self.attn_pool(tokens)), )
