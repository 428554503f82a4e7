"""Models registered in the m3i_mm scope (imported lazily by the MODELS registry)."""
from . import backbones, data_preprocessors, heads, layers, necks, selfsup, text  # noqa: F401
from .backbones import InternImage
from .data_preprocessors import M3IBatch, M3IDataPreprocessor
from .heads import BoltzmannMIHead, GaussianMIHead
from .necks import AttentionPooling, InternImageCLIPNeck, InternImageConvNeck, Stride16Fusion
from .selfsup import M3I, M3IDecoder
from .text import HFTextEncoder

__all__ = [
    'InternImage', 'M3IBatch', 'M3IDataPreprocessor', 'BoltzmannMIHead', 'GaussianMIHead',
    'AttentionPooling', 'InternImageCLIPNeck', 'InternImageConvNeck', 'Stride16Fusion', 'M3I',
    'M3IDecoder', 'HFTextEncoder'
]
