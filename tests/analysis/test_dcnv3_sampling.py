"""m3i_mm.analysis.dcnv3_sampling: the points are where the op samples (checked by
re-computing the op's output from them with the independent float64 bilinear reference),
the propagation through two stacked layers equals a hand computation, and cells map to the
pixels their convolution chain is centred on."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from m3i_mm.analysis import (field_from_offsets, field_of_layer, points_of_stack,
                             record_layer_inputs, stage_layers, stage_pixel_map)
from m3i_mm.analysis.dcnv3_sampling import conv_centre_maps, inside_share
from m3i_mm.models.backbones.intern_image import InternImage
from m3i_mm.ops.dcnv3 import dcnv3, make_geometry
from m3i_mm.ops.dcnv3.pytorch import softmax_over_points
from tests.ops.dcnv3.reference import bilinear_zero_padded

TINY = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16])

# (kernel, stride, pad, dilation, offset_scale, remove_center)
GEOMETRIES = {
    'plain': ((3, 3), (1, 1), (1, 1), (1, 1), 1.0, False),
    'non-square, dilated, strided': ((3, 5), (2, 1), (0, 3), (2, 1), 1.0, False),
    'offset scale 2, no padding': ((3, 3), (1, 1), (0, 0), (1, 1), 2.0, False),
    'remove center, stride 2': ((3, 3), (2, 2), (1, 1), (1, 1), 1.5, True),
}


@pytest.mark.parametrize('name', sorted(GEOMETRIES))
def test_points_are_where_the_op_samples(name):
    """Sum of weight x bilinear(input, point) over the drawn points of each output location
    and group = the op's output there, for every location (points outside the map and
    between cells included)."""
    kernel, stride, pad, dilation, scale, remove_center = GEOMETRIES[name]
    group, gc, height, width = 2, 3, 7, 6
    geo = make_geometry(group * gc, kernel, stride, pad, dilation, group, gc, scale,
                        remove_center)
    out_h, out_w = geo.output_size(height, width)
    gen = torch.Generator().manual_seed(0)
    inp = torch.randn(1, height, width, group * gc, generator=gen, dtype=torch.float64)
    offset = 1.7 * torch.randn(1, out_h, out_w, group * geo.num_points * 2, generator=gen,
                               dtype=torch.float64)  # many points between cells, some outside
    mask = softmax_over_points(torch.randn(1, out_h, out_w, group * geo.num_points,
                                           generator=gen, dtype=torch.float64), geo)
    out = dcnv3(inp, offset, mask, kernel, stride, pad, dilation, group, gc, scale,
                remove_center, backend='pytorch')
    field = field_from_offsets(offset, mask, geo, (height, width))
    cells = [(r, c) for r in range(out_h) for c in range(out_w)]
    points = points_of_stack([field], cells)
    assert len(points) == len(cells) * group * geo.num_points  # nothing dropped at one layer
    outside = 0
    for index, (r, c) in enumerate(cells):
        for g in range(group):
            mine = (points.location == index) & (points.group == g)
            for ch in range(g * gc, (g + 1) * gc):
                value = sum(w * bilinear_zero_padded(inp[0, :, :, ch].numpy(), y, x)
                            for x, y, w in zip(points.x[mine], points.y[mine],
                                               points.weight[mine]))
                assert value == pytest.approx(float(out[0, r, c, ch]), abs=1e-10), (r, c, ch)
            outside += int(((points.x[mine] <= -1) | (points.x[mine] >= width)
                            | (points.y[mine] <= -1) | (points.y[mine] >= height)).sum())
    assert outside > 0  # the zero padding was exercised


def test_stack_of_two_layers_by_hand():
    """A 3x3 top layer (1 group) over a 1x1 lower layer (2 groups) on a 4x4 map, top
    location (row 1, col 1); every expected point is computed here by hand."""
    top_geo = make_geometry(1, 3, 1, 1, 1, 1, 1, 1.0, False)
    low_geo = make_geometry(2, 1, 1, 0, 1, 2, 1, 1.0, False)
    # top: points x-major k = i * 3 + j at (x, y) = (1 + i - 1, 1 + j - 1) + offsets
    top_offset = torch.zeros(1, 4, 4, 9 * 2, dtype=torch.float64)
    top_offset[0, 1, 1, 0 * 2] = -1.5      # k=0: (0, 0) -> x = -1.5: fully outside
    top_offset[0, 1, 1, 1 * 2] = -0.5      # k=1: (0, 1) -> x = -0.5: half outside
    top_offset[0, 1, 1, 8 * 2] = 0.5       # k=8: (2, 2) -> x = 2.5: between cells
    top_mask = torch.zeros(1, 4, 4, 9, dtype=torch.float64)
    top_mask[0, 1, 1] = torch.tensor([0.1] * 8 + [0.2], dtype=torch.float64)
    # lower (kernel 1): location = cell + offset; group g shifted by g + 0.1 * col in x
    low_offset = torch.zeros(1, 4, 4, 2 * 2, dtype=torch.float64)
    for col in range(4):
        low_offset[0, :, col, 0] = 0.1 * col
        low_offset[0, :, col, 2] = 1 + 0.1 * col
    low_offset[0, :, :, 3] = -0.25        # group 1 also moves up by 0.25
    low_mask = torch.ones(1, 4, 4, 2, dtype=torch.float64)
    fields = [field_from_offsets(low_offset, low_mask, low_geo, (4, 4)),
              field_from_offsets(top_offset, top_mask, top_geo, (4, 4))]
    points = points_of_stack(fields, [(1, 1)])

    expected = []
    for i in range(3):
        for j in range(3):
            k = i * 3 + j
            x = i + float(top_offset[0, 1, 1, 2 * k])
            y = float(j)
            m = float(top_mask[0, 1, 1, k])
            share = {-1.5: 0.0, -0.5: 0.5}.get(x, 1.0)
            if share == 0:
                continue
            col = min(max(x, 0.0), 3.0)  # offsets are read at the clamped position
            for g, (dx, dy) in enumerate(((0.1 * col, 0.0), (1 + 0.1 * col, -0.25))):
                expected.append((x + dx, y + dy, m * share / 2))
    got = sorted(zip(points.x.round(12), points.y.round(12), points.weight.round(12)))
    assert got == sorted((round(x, 12), round(y, 12), round(w, 12)) for x, y, w in expected)
    assert len(points) == 16  # 8 top points inside (partly), 2 lower groups each
    # the k=8 point at x=2.5: lower offsets interpolated between cols 2 and 3 (0.25)
    assert (2.75, 2.0, 0.1) in [(round(a, 12), round(b, 12), round(c, 12))
                                for a, b, c in zip(points.x, points.y, points.weight)]
    assert points.weight.sum() == pytest.approx(1.0 - 0.1 - 0.05)
    assert set(points.group) == {0} and set(points.location) == {0}


def test_pruning_keeps_the_heaviest_and_counts_the_rest():
    geo = make_geometry(2, 3, 1, 1, 1, 2, 1, 1.0, False)
    gen = torch.Generator().manual_seed(1)
    offset = torch.randn(1, 5, 5, 36, generator=gen, dtype=torch.float64)
    mask = softmax_over_points(torch.randn(1, 5, 5, 18, generator=gen, dtype=torch.float64), geo)
    fields = [field_from_offsets(offset, mask, geo, (5, 5))] * 2
    full = points_of_stack(fields, [(2, 2)])
    pruned = points_of_stack(fields, [(2, 2)], max_points=50)
    assert len(pruned) == 50 and pruned.dropped_weight > 0
    heaviest = np.sort(full.weight)[-50:]
    np.testing.assert_allclose(np.sort(pruned.weight), heaviest, rtol=1e-12)
    assert full.weight.sum() == pytest.approx(pruned.weight.sum() + pruned.dropped_weight)
    only = points_of_stack(fields, [(2, 2)], groups=[1])
    assert set(only.group) == {1} and 0 < len(only) <= 9 * 18  # one top group of 9 points
    with pytest.raises(ValueError, match='groups'):
        points_of_stack(fields, [(2, 2)], groups=[2])
    with pytest.raises(ValueError, match='outside the 5x5 map'):
        points_of_stack(fields, [(5, 0)])


def test_inside_share_is_the_bilinear_mass_on_the_map():
    y = np.array([0.0, -0.25, -1.0, 2.5, 3.5, 1.0])
    x = np.array([0.0, 1.0, 1.0, 3.75, 1.0, -0.5])
    np.testing.assert_allclose(inside_share(y, x, 4, 4), [1, 0.75, 0, 0.25, 0.5, 0.5])


def ones_conv_chain(convs):
    """The convolutions alone, all weights 1, no bias: a linear, symmetric chain."""
    chain = []
    for conv in convs:
        plain = nn.Conv2d(1, 1, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                          bias=False)
        nn.init.ones_(plain.weight)
        chain.append(plain)
    return nn.Sequential(*chain).double()


@pytest.mark.parametrize('stage', [0, 1, 2, 3])
def test_stage_cells_map_to_the_centre_of_their_receptive_field(stage):
    backbone = InternImage(arch=TINY)
    map_y, map_x = stage_pixel_map(backbone, stage)
    assert (map_y.scale, map_y.offset) == (4 * 2**stage, 0.0)
    assert (map_x.scale, map_x.offset) == (4 * 2**stage, 0.0)
    convs = [backbone.patch_embed.conv1, backbone.patch_embed.conv2]
    convs += [backbone.levels[i].downsample.conv for i in range(stage)]
    chain = ones_conv_chain(convs)
    image = torch.zeros(1, 1, 160, 192, dtype=torch.float64, requires_grad=True)
    out = chain(image)
    row, col = out.shape[2] // 2, out.shape[3] // 2  # an interior cell
    (grad, ) = torch.autograd.grad(out[0, 0, row, col], image)
    field = grad[0, 0].numpy()
    ys, xs = np.indices(field.shape)
    centre = ((field * ys).sum() / field.sum(), (field * xs).sum() / field.sum())
    assert centre == pytest.approx((map_y(row), map_x(col)), abs=1e-9)


def test_conv_centre_maps_of_odd_and_even_kernels():
    y, x = conv_centre_maps(nn.Conv2d(1, 1, (3, 4), stride=(2, 3), padding=(1, 0),
                                      dilation=(2, 1)))
    assert (y.scale, y.offset) == (2.0, 1.0)   # 2*i + 2*(3-1)/2 - 1
    assert (x.scale, x.offset) == (3.0, 1.5)   # 3*i + (4-1)/2 - 0
    with pytest.raises(ValueError, match='padding'):
        conv_centre_maps(nn.Conv2d(1, 1, 3, padding='same'))


def test_layers_of_a_backbone_and_their_recorded_inputs():
    torch.manual_seed(0)
    backbone = InternImage(arch=TINY, dcn_backend='pytorch')
    backbone.init_weights()
    for layer in stage_layers(backbone, 2):
        nn.init.normal_(layer.offset.weight, std=0.3)
    layers = stage_layers(backbone, 2)
    assert len(layers) == 2
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad(), record_layer_inputs(layers) as inputs:
        backbone(image)
    assert [tuple(inputs[layer].shape) for layer in layers] == [(1, 4, 6, 64)] * 2
    field = field_of_layer(layers[1], inputs[layers[1]])
    assert field.loc_x.shape == (4, 6, 8, 9) and field.input_size == (4, 6)
    assert float(np.abs(field.displacements()[0]).max()) > 1.0  # the random offsets show
    with pytest.raises(ValueError, match='stage 4 does not exist'):
        stage_layers(backbone, 4)
    no_stage = InternImage(arch=dict(TINY, depths=[1, 1, 0, 1]))
    with pytest.raises(ValueError, match='stage 2 of InternImage has no DCNv3 layer'):
        stage_layers(no_stage, 2)
    with pytest.raises(ValueError, match='no DCNv3 stages'):
        stage_layers(nn.Conv2d(3, 3, 1), 0)


def test_cb_internimage_uses_the_lead_stages_on_the_assisting_stem():
    from m3i_mm.models.backbones.cb_intern_image import CBInternImage
    backbone = CBInternImage(arch=TINY)
    assert stage_layers(backbone, 1)[0] is backbone.cb_modules[1].levels[1].blocks[0].dcn
    assert stage_pixel_map(backbone, 1)[1].scale == 8.0
