"""Attention pooling of a token sequence (official InternImage-H/G ``clip_projector``)."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from m3i_mm.registry import MODELS


@MODELS.register_module()
class AttentionPooling(BaseModule):
    """One cross-attention whose single query is the mean token.

    ``q = LN_q(mean(x))``, ``k = LN_k(x)``, ``v = LN_v(x)``; multi-head attention with
    bias-carrying q/k/v projections, then a projection to ``out_dim``.

    Args:
        dim: Token width.
        num_heads: Attention heads.
        out_dim: Output width (``dim`` by default).
    """

    def __init__(self, dim: int = 1024, num_heads: int = 16, out_dim: Optional[int] = None,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        if dim % num_heads:
            raise ValueError(f'AttentionPooling: dim {dim} not divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_k = nn.LayerNorm(dim, eps=1e-6)
        self.norm_v = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.k_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, out_dim or dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, L, dim)`` -> ``(N, out_dim)``."""
        n, length, dim = tokens.shape
        heads = self.num_heads
        q = F.linear(self.norm_q(tokens.mean(1, keepdim=True)), self.q.weight, self.q_bias)
        k = F.linear(self.norm_k(tokens), self.k.weight, self.k_bias)
        v = F.linear(self.norm_v(tokens), self.v.weight, self.v_bias)
        q = q.view(n, 1, heads, -1).transpose(1, 2)
        k = k.view(n, length, heads, -1).transpose(1, 2)
        v = v.view(n, length, heads, -1).transpose(1, 2)
        pooled = F.scaled_dot_product_attention(q, k, v)
        return self.proj(pooled.transpose(1, 2).reshape(n, dim))
