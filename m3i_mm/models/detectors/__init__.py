"""Detectors of the m3i_mm scope. They import mmdet, so m3i_mm.models does not import this
package: configs that use them list ``'m3i_mm.models.detectors'`` in ``custom_imports``."""
from .cb_dino import CBDINO

__all__ = ['CBDINO']
