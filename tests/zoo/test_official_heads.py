"""Errors of the official-head converters (their layouts are proven in
test_official_checkpoints.py): nothing is dropped or guessed silently."""
import pytest
import torch

from m3i_mm.zoo import ConverterError, apply_converter
from m3i_mm.zoo.official_heads import merge_efficient_ffns
from tests.zoo import official_layouts as layouts

TINY = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16], layer_scale=1.0)


def zeros(layout):
    return {k: torch.zeros(s) for k, s in layout.items()}


def test_unknown_head_keys_are_named():
    state = zeros(layouts.dino(TINY, classes=2, dims=8, hidden=8, heads=2, encoder_layers=1,
                               decoder_layers=1, queries=3, neck=8))
    state['bbox_head.transformer.reference_points.weight'] = torch.zeros(2, 8)
    state['bbox_head.transformer.decoder.layers.0.attentions.2.x'] = torch.zeros(1)
    with pytest.raises(ConverterError, match=r"official DINO head: 2 checkpoint keys are not in "
                                             r"the official layout .*reference_points\.weight"):
        apply_converter('internimage_dino', {'state_dict': state})


def test_mask2former_converter_refuses_a_segformer_like_head():
    state = zeros(layouts.mask2former(TINY, classes=2, dims=8, hidden=8, heads=2,
                                      encoder_layers=1, decoder_layers=1, queries=3))
    state['decode_head.conv_seg.weight'] = torch.zeros(2, 8, 1, 1)
    with pytest.raises(ConverterError, match=r'decode_head\.conv_seg\.weight'):
        apply_converter('internimage_mask2former', {'state_dict': state})


def test_head_converters_need_a_whole_detector():
    backbone_only = {k[len('backbone.'):]: v for k, v in zeros(layouts.internimage(TINY)).items()}
    with pytest.raises(ConverterError, match='expected an mmdet/mmseg checkpoint .* got the '
                                             'classification layout'):
        apply_converter('internimage_dino', {'model': backbone_only})


def test_incomplete_efficient_ffn_is_named():
    prefix = 'bbox_head.transformer.encoder.layers.0.ffns.0'
    state = zeros(layouts.ffn(prefix, 8, 16, efficient_splits=4))
    del state[f'{prefix}.fc2_bias']
    with pytest.raises(ConverterError, match=rf'EfficientFFN {prefix} is incomplete: missing '
                                             rf"\['{prefix}\.fc2_bias'\]"):
        merge_efficient_ffns(state)


def test_cb_neck_list_becomes_the_shared_neck():
    state = zeros(layouts.dino(TINY, classes=2, composite=True, dims=8, hidden=8, heads=2,
                               encoder_layers=1, decoder_layers=1, queries=3, neck=8))
    converted = apply_converter('cb_internimage_dino', {'state_dict': state})['state_dict']
    assert not any(k.startswith('neck.0.') for k in converted)
    assert converted['neck.convs.0.conv.weight'].shape == (8, 32, 1, 1)
    assert 'backbone.cb_modules.1.gamma3' in converted
    assert 'backbone.cb_modules.1.levels.0.blocks.0.norm1.weight' in converted  # renamed
