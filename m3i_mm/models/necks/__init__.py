"""Necks registered in the m3i_mm scope."""
from .attention_pooling import AttentionPooling
from .intern_image_necks import InternImageCLIPNeck, InternImageConvNeck
from .stride16_fusion import Stride16Fusion

__all__ = ['AttentionPooling', 'InternImageCLIPNeck', 'InternImageConvNeck', 'Stride16Fusion']
