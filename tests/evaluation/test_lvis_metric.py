"""m3i_mm.LVISMetric: mmdet's LVISMetric with the np.float alias lvis 0.5.3 needs, scoped."""
import numpy as np
import pytest

from m3i_mm.evaluation import LVISMetric, numpy_float_alias


def test_alias_exists_only_inside_the_context():
    had_alias = 'float' in np.__dict__
    with numpy_float_alias():
        assert np.float is float
        assert np.zeros(2).astype(np.float).dtype == np.float64
    assert ('float' in np.__dict__) == had_alias


def test_alias_is_removed_when_the_metric_raises():
    had_alias = 'float' in np.__dict__
    with pytest.raises(RuntimeError):
        with numpy_float_alias():
            raise RuntimeError('evaluation failed')
    assert ('float' in np.__dict__) == had_alias


def test_the_metric_is_mmdets_registered_in_m3i_mm():
    from mmdet.evaluation import LVISMetric as MMDetLVISMetric

    from m3i_mm.registry import METRICS
    assert issubclass(LVISMetric, MMDetLVISMetric)
    assert METRICS.get('m3i_mm.LVISMetric') is LVISMetric
