"""The DCNv3 module: official parameter names and initialisation, forward semantics."""
import pytest
import torch
import torch.nn.functional as F

from m3i_mm.models.layers import DCNv3


def box_mean(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean with zero padding of a channels-last map (independent of the op)."""
    c = x.shape[-1]
    weight = torch.full((c, 1, 3, 3), 1 / 9, dtype=x.dtype)
    return F.conv2d(x.permute(0, 3, 1, 2), weight, padding=1, groups=c).permute(0, 2, 3, 1)


def test_parameter_names_follow_the_official_module():
    names = {n for n, _ in DCNv3(16, group=2, center_feature_scale=True).named_parameters()}
    assert names == {
        'offset.weight', 'offset.bias', 'mask.weight', 'mask.bias', 'input_proj.weight',
        'input_proj.bias', 'output_proj.weight', 'output_proj.bias', 'dw_conv.conv.weight',
        'dw_conv.conv.bias', 'dw_conv.norm.weight', 'dw_conv.norm.bias',
        'center_feature_scale_proj_weight', 'center_feature_scale_proj_bias'
    }
    m = DCNv3(16, group=2, dw_kernel_size=5, remove_center=True)
    assert m.offset.weight.shape == (2 * 8 * 2, 16) and m.mask.weight.shape == (2 * 8, 16)
    assert m.dw_conv.conv.weight.shape == (16, 1, 5, 5)


def test_at_init_dcnv3_is_a_box_filter_between_the_projections():
    torch.manual_seed(0)
    m = DCNv3(8, group=2, backend='pytorch').double()
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)
    expected = m.output_proj(box_mean(m.input_proj(x)))
    torch.testing.assert_close(m(x), expected)


def test_center_feature_scale_starts_as_an_even_blend():
    torch.manual_seed(0)
    m = DCNv3(8, group=2, center_feature_scale=True, backend='pytorch').double()
    x = torch.randn(1, 4, 4, 8, dtype=torch.float64)
    projected = m.input_proj(x)
    expected = m.output_proj(0.5 * box_mean(projected) + 0.5 * projected)
    torch.testing.assert_close(m(x), expected)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = DCNv3(8, group=2, center_feature_scale=True, backend='pytorch')
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    m(torch.randn(2, 5, 5, 8)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_configs_and_inputs_are_named():
    with pytest.raises(ValueError, match='divisible by group'):
        DCNv3(10, group=3)
    with pytest.raises(ValueError, match='needs stride=1'):
        DCNv3(8, group=2, stride=2)
    with pytest.raises(ValueError, match=r'expects \(N, H, W, 8\)'):
        DCNv3(8, group=2)(torch.randn(1, 8, 4, 4).permute(0, 2, 3, 1)[..., :4])
