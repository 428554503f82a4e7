"""m3i_mm.analysis.receptive_field on models whose receptive field is known."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from m3i_mm.analysis import (effective_receptive_field, input_gradient_of_centre, mass_radius,
                             stage_features)
from m3i_mm.analysis.dcnv3_sampling import AxisMap, conv_centre_maps


def conv_stack(layers: int, stride: int, seed: int = 0) -> nn.Sequential:
    """3x3 convolutions (padding 1) with positive weights and biases: on positive images
    every output is positive (the rectification passes it) and no gradient cancels."""
    torch.manual_seed(seed)
    convs = []
    for i in range(layers):
        conv = nn.Conv2d(3 if i == 0 else 4, 4, 3, stride=stride, padding=1)
        nn.init.uniform_(conv.weight, 0.5, 1.5)
        nn.init.constant_(conv.bias, 0.5)
        convs.append(conv)
    return nn.Sequential(*convs).double()


def images(count: int, size=(33, 37)):
    gen = torch.Generator().manual_seed(1)
    return [torch.rand(1, 3, *size, generator=gen, dtype=torch.float64) for _ in range(count)]


@pytest.mark.parametrize('layers', [1, 2, 3])
def test_stride_one_stack_has_its_known_extent(layers):
    """``n`` 3x3 convolutions see exactly the (2n+1)^2 square around the centre."""
    field, size = effective_receptive_field(conv_stack(layers, 1), images(3))
    assert size == (33, 37)
    centre = (33 // 2, 37 // 2)
    ys, xs = np.nonzero(field)
    assert (ys.min(), ys.max()) == (centre[0] - layers, centre[0] + layers)
    assert (xs.min(), xs.max()) == (centre[1] - layers, centre[1] + layers)
    assert len(ys) == (2 * layers + 1)**2  # the whole square, nothing else
    radii = mass_radius(field, centre, (1.0, ))
    assert radii[1.0] == pytest.approx(layers * math.sqrt(2))


def test_strided_stack_extent_and_centre():
    """Two stride-2 3x3 convolutions: cell i is centred on pixel 4i and sees 4i-3..4i+3."""
    stack = conv_stack(2, 2)
    field, size = effective_receptive_field(stack, images(2, (64, 72)))
    centre_map = AxisMap()
    for conv in stack:
        centre_map = conv_centre_maps(conv)[0].then(centre_map)
    cy, cx = centre_map(size[0] // 2), centre_map(size[1] // 2)
    assert (cy, cx) == (4 * (size[0] // 2), 4 * (size[1] // 2))
    ys, xs = np.nonzero(field)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (cy - 3, cy + 3, cx - 3, cx + 3)


def test_average_over_images_and_gradient_magnitude():
    stack = conv_stack(1, 1)
    batch = images(2)
    single = [input_gradient_of_centre(stack, image)[0] for image in batch]
    mean, _ = effective_receptive_field(stack, batch)
    np.testing.assert_allclose(mean, (single[0] + single[1]) / 2)
    # a linear layer: |gradient| summed over colour channels = sum_c |sum_o w[o, c]| per tap
    weights = stack[0].weight.detach().sum(0).abs().sum(0).numpy()
    centre = (33 // 2, 37 // 2)
    np.testing.assert_allclose(single[0][centre[0] - 1:centre[0] + 2,
                                         centre[1] - 1:centre[1] + 2], weights)


def test_mass_radius_by_hand():
    field = np.zeros((7, 7))
    field[3, 3] = 1
    assert mass_radius(field, (3, 3), (0.5, 1.0)) == {0.5: 0.0, 1.0: 0.0}
    field[2:5, 2:5] = 1  # 9 equal pixels: 1 at distance 0, 4 at 1, 4 at sqrt(2)
    radii = mass_radius(field, (3, 3), (1 / 9, 0.5, 5 / 9, 0.6, 1.0))
    assert radii == pytest.approx({1 / 9: 0.0, 0.5: 1.0, 5 / 9: 1.0, 0.6: math.sqrt(2),
                                   1.0: math.sqrt(2)})
    with pytest.raises(ValueError, match='no mass'):
        mass_radius(np.zeros((3, 3)), (1, 1))
    with pytest.raises(ValueError, match='shares'):
        mass_radius(field, (3, 3), (0.0, ))


def test_stage_features_of_internimage():
    from m3i_mm.models.backbones.intern_image import InternImage
    backbone = InternImage(arch=dict(channels=16, depths=[1, 1, 1, 1], groups=[2, 4, 8, 16]),
                           out_indices=(1, 3))
    backbone.eval()
    x = torch.randn(1, 3, 64, 64)
    assert tuple(stage_features(backbone, x, 3).shape) == (1, 128, 2, 2)
    with pytest.raises(ValueError, match='not among the backbone outputs'):
        stage_features(backbone, x, 2)
    field, size = effective_receptive_field(lambda t: stage_features(backbone, t, 1), [x])
    assert size == (8, 8) and field.shape == (64, 64) and field.sum() > 0


def test_rectified_target_sees_through_a_final_layer_norm():
    """The plain channel sum of a LayerNorm output (weight 1, bias 0) does not depend on
    the input; the rectified sum does."""
    conv = conv_stack(1, 1)
    norm = nn.LayerNorm(4).double()

    def features(x):
        return norm(conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    image = images(1)[0] - 0.5
    x = image.clone().requires_grad_(True)
    (plain, ) = torch.autograd.grad(features(x)[0, :, 16, 18].sum(), x)
    assert float(plain.abs().max()) < 1e-12
    field, _ = input_gradient_of_centre(features, image)
    assert field.sum() > 0
