"""The converter registry."""
import pytest
import torch

from m3i_mm.zoo import (ConverterError, apply_converter, get_converter, list_converters,
                        register_converter)


def test_register_and_apply():
    @register_converter('converters_test_unwrap')
    def unwrap(checkpoint):
        return dict(state_dict=checkpoint['model'], meta=dict(source='test'))

    assert get_converter('converters_test_unwrap') is unwrap
    assert 'converters_test_unwrap' in list_converters()
    weights = {'w': torch.arange(3.0)}
    converted = apply_converter('converters_test_unwrap', {'model': weights})
    assert converted['state_dict'] is weights and converted['meta'] == {'source': 'test'}


def test_a_name_is_taken_once_unless_forced():
    register_converter('converters_test_taken')(lambda ckpt: dict(state_dict={}))
    with pytest.raises(ConverterError, match="'converters_test_taken' is already registered"):
        register_converter('converters_test_taken')(lambda ckpt: dict(state_dict={}))

    def replacement(ckpt):
        return dict(state_dict={'x': torch.zeros(1)})

    register_converter('converters_test_taken', force=True)(replacement)
    assert get_converter('converters_test_taken') is replacement


def test_unknown_converter_lists_the_known_ones():
    register_converter('converters_test_known')(lambda ckpt: dict(state_dict={}))
    with pytest.raises(ConverterError, match="no checkpoint converter named 'nope'; registered "
                                             ".*'converters_test_known'"):
        get_converter('nope')


def test_converter_output_is_checked():
    register_converter('converters_test_broken')(lambda ckpt: ckpt['model'])
    with pytest.raises(ConverterError, match='must return a dict with a "state_dict" dict, got '
                                             "dict with keys \\['w'\\]"):
        apply_converter('converters_test_broken', {'model': {'w': torch.ones(1)}})
