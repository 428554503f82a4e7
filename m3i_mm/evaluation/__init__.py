"""Metrics registered in the m3i_mm scope."""
from .lvis_metric import LVISMetric, numpy_float_alias

__all__ = ['LVISMetric', 'numpy_float_alias']
