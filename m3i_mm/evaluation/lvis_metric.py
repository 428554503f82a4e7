"""mmdet's ``LVISMetric`` working with the ``lvis`` package from PyPI on numpy >= 1.24.

``lvis`` 0.5.3 (the last PyPI release) calls ``np.float`` in ``LVISEval.accumulate``; numpy
1.24 removed that alias, so mmdet's ``LVISMetric`` fails at the end of every evaluation with
``module 'numpy' has no attribute 'float'``. This subclass provides the alias (as Python's
``float``, which is what it always meant) only while the metric computes, and removes it
afterwards, so nothing else in the process sees it. Use ``type='m3i_mm.LVISMetric'``.
"""
import contextlib
from typing import Dict, Iterator, List

import numpy as np
from mmdet.evaluation import LVISMetric as MMDetLVISMetric

from ..registry import METRICS


@contextlib.contextmanager
def numpy_float_alias() -> Iterator[None]:
    """Temporarily define ``np.float = float`` if this numpy lacks it."""
    if 'float' in np.__dict__:
        yield
        return
    np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del np.float  # type: ignore[attr-defined]


@METRICS.register_module()
class LVISMetric(MMDetLVISMetric):
    """mmdet's ``LVISMetric`` (same arguments and results), compatible with numpy >= 1.24."""

    def compute_metrics(self, results: List) -> Dict[str, float]:
        with numpy_float_alias():
            return super().compute_metrics(results)
