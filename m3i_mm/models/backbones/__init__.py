"""Backbones registered in the m3i_mm scope."""
from .cb_intern_image import CBInternImage
from .intern_image import InternImage

__all__ = ['CBInternImage', 'InternImage']
