"""Backbones registered in the m3i_mm scope."""
from .intern_image import InternImage

__all__ = ['InternImage']
