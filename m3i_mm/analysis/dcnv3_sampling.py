"""Where DCNv3 layers look: the sampling points of chosen output locations, through a stack
of layers, in the pixels of the input image.

**One layer.** The points of a DCNv3 call are the op's own sampling locations
(:func:`m3i_mm.ops.dcnv3.pytorch.sampling_locations`, computed in float64 from the offsets
the layer predicts, :meth:`m3i_mm.models.layers.dcnv3.DCNv3.offsets_and_masks`), each with
its modulation weight (the softmax mask). Locations are in cells of the layer's input map,
an integer being a cell centre (a bilinear sample at an integer location is that cell).

**Cells to pixels** (:func:`stage_pixel_map`). The kernel of output cell ``i`` of a
convolution (kernel ``k``, stride ``s``, padding ``p``, dilation ``d``) is centred on input
cell ``s * i + d * (k - 1) / 2 - p``. The maps of an InternImage stage come from the image
through the stem (two 3x3 convolutions, stride 2, padding 1) and the downsampling layers of
the stages before (one such convolution each), so cell ``i`` of stage ``S`` is centred on
pixel ``4 * 2**S * i``: stride 4, 8, 16, 32 with offset 0, pixel ``j`` covering
``[j - 0.5, j + 0.5]``. Locations between cells map linearly. The map is composed from the
backbone's actual convolutions, not assumed.

**A stack** (the figures of stacked deformable layers in the DCN papers). For layers
``l_1 .. l_L`` of a stage, each feeding the next through its residual, norm and MLP (which
act per location), the points of the top layer ``l_L`` at an output location are where it
reads the output of ``l_{L-1}``; each expands into the points ``l_{L-1}`` uses at that
place, and so on down to ``l_1``'s points in the stage's input map. A point between cells
takes the lower layer's displacements (location minus kernel centre) and masks
interpolated bilinearly at it (the exact expansion would be the point sets of its four
neighbouring cells with the bilinear weights; the interpolation draws one set instead of
four). A point (partly) outside the map reads zero padding there (as the op does), so only
its share inside the map (the sum of its bilinear weights on cells inside) expands. The
weight of a path is the product of the masks along it; the channels of all groups of a
layer feed every group of the next (projections, MLP), so a point splits equally among the
lower layer's groups (x 1/G). A path keeps the group of its top-layer point; the paths of
one top-layer group and location weigh 1 in all, less what fell outside a map.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from m3i_mm.models.layers.dcnv3 import DCNv3
from m3i_mm.ops.dcnv3 import DCNv3Geometry
from m3i_mm.ops.dcnv3.pytorch import sampling_locations

__all__ = ['AxisMap', 'SamplingField', 'SamplingPoints', 'field_from_offsets', 'field_of_layer',
           'points_of_stack', 'record_layer_inputs', 'stage_layers', 'stage_pixel_map',
           'conv_centre_maps', 'inside_share']


@dataclass(frozen=True)
class AxisMap:
    """An affine map along one axis: ``out = scale * cell + offset``."""
    scale: float = 1.0
    offset: float = 0.0

    def __call__(self, cells):
        return self.scale * cells + self.offset

    def inverse(self, values):
        return (values - self.offset) / self.scale

    def then(self, outer: 'AxisMap') -> 'AxisMap':
        """``outer`` applied after this map."""
        return AxisMap(outer.scale * self.scale, outer.scale * self.offset + outer.offset)


def conv_centre_maps(conv: nn.Conv2d) -> Tuple[AxisMap, AxisMap]:
    """The ``(y, x)`` maps from a convolution's output cells to the input cell its kernel is
    centred on: ``stride * i + dilation * (kernel - 1) / 2 - padding``.

    Raises:
        ValueError: for string paddings (``'same'``), whose placement is not a fixed map.
    """
    if isinstance(conv.padding, str):
        raise ValueError(f'{conv}: padding {conv.padding!r} has no fixed centre map')
    return tuple(AxisMap(float(conv.stride[a]),
                         conv.dilation[a] * (conv.kernel_size[a] - 1) / 2 - conv.padding[a])
                 for a in (0, 1))


def _stem_and_stages(backbone: nn.Module) -> Tuple[nn.Module, nn.ModuleList]:
    """The stem and the DCNv3 stages of an InternImage, or of the lead backbone of a
    CB-InternImage (whose features the detector uses; it starts from the assisting
    backbone's stem)."""
    if hasattr(backbone, 'cb_modules'):
        return backbone.cb_modules[0].patch_embed, backbone.cb_modules[-1].levels
    if hasattr(backbone, 'patch_embed') and hasattr(backbone, 'levels'):
        return backbone.patch_embed, backbone.levels
    raise ValueError(f'{type(backbone).__name__} has no DCNv3 stages: an InternImage (or '
                     'CB-InternImage) backbone is needed')


def stage_layers(backbone: nn.Module, stage: int) -> List[DCNv3]:
    """The DCNv3 layers of a stage, in order.

    Raises:
        ValueError: if the stage does not exist or holds no DCNv3 layer.
    """
    _, stages = _stem_and_stages(backbone)
    if not 0 <= stage < len(stages):
        raise ValueError(f'stage {stage} does not exist: {type(backbone).__name__} has stages '
                         f'0..{len(stages) - 1}')
    layers = [m for m in stages[stage].modules() if isinstance(m, DCNv3)]
    if not layers:
        raise ValueError(f'stage {stage} of {type(backbone).__name__} has no DCNv3 layer')
    return layers


def stage_pixel_map(backbone: nn.Module, stage: int) -> Tuple[AxisMap, AxisMap]:
    """``(y, x)`` maps from cells of a stage's maps to input pixels, composed from the stem's
    and the earlier stages' downsampling convolutions (see the module docstring)."""
    stem, stages = _stem_and_stages(backbone)
    stage_layers(backbone, stage)  # validates the stage
    convs = [m for m in stem.modules() if isinstance(m, nn.Conv2d)]
    convs += [stages[i].downsample.conv for i in range(stage)]
    map_y, map_x = AxisMap(), AxisMap()
    for conv in convs:  # pixel = first(second(...(cell)))
        conv_y, conv_x = conv_centre_maps(conv)
        map_y, map_x = conv_y.then(map_y), conv_x.then(map_x)
    return map_y, map_x


@contextmanager
def record_layer_inputs(layers: Sequence[nn.Module]) -> Iterator[Dict[nn.Module, torch.Tensor]]:
    """Record the input of each layer's last call (a detached copy) while in the context."""
    inputs: Dict[nn.Module, torch.Tensor] = {}

    def hook(module, args):
        inputs[module] = args[0].detach().clone()

    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def inside_share(y: np.ndarray, x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Share of a bilinear sample at ``(y, x)`` that falls on cells of a ``height x width``
    map (1 inside, 0 a cell or more outside; zero padding reads nothing)."""

    def axis(v, size):
        v0 = np.floor(v)
        frac = v - v0
        low = ((v0 >= 0) & (v0 < size)) * (1 - frac)
        high = ((v0 + 1 >= 0) & (v0 + 1 < size)) * frac
        return low + high

    return axis(y, height) * axis(x, width)


@dataclass
class SamplingField:
    """The sampling points of one DCNv3 call at every output location (one image).

    Attributes:
        loc_x, loc_y: ``(H_out, W_out, G, P)`` float64 locations in input cells.
        mask: ``(H_out, W_out, G, P)`` float64 weights of the points.
        geometry: The call's geometry.
        input_size: ``(H, W)`` of the input map.
    """
    loc_x: np.ndarray
    loc_y: np.ndarray
    mask: np.ndarray
    geometry: DCNv3Geometry
    input_size: Tuple[int, int]

    @property
    def output_size(self) -> Tuple[int, int]:
        return self.loc_x.shape[0], self.loc_x.shape[1]

    def centres(self, rows: np.ndarray, cols: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Kernel centres (input cells) of output positions, fractional ones too (the op's
        centres are linear in the output position)."""
        geo = self.geometry
        first_y, first_x = geo.centres(1, 1, torch.device('cpu'), torch.float64)
        return rows * geo.stride_h + float(first_y[0]), cols * geo.stride_w + float(first_x[0])

    def displacements(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(dx, dy)``: locations minus their kernel centres, ``(H_out, W_out, G, P)``."""
        out_h, out_w = self.output_size
        cy, cx = self.centres(np.arange(out_h)[:, None, None, None],
                              np.arange(out_w)[None, :, None, None])
        return self.loc_x - cx, self.loc_y - cy

    def at(self, rows: np.ndarray, cols: np.ndarray) -> Tuple[np.ndarray, ...]:
        """``(loc_x, loc_y, mask)``, each ``(M, G, P)``, at ``M`` output positions; between
        cells the displacements and masks are interpolated bilinearly (positions are
        clamped to the map for the interpolation)."""
        out_h, out_w = self.output_size
        r = np.clip(rows, 0, out_h - 1)
        c = np.clip(cols, 0, out_w - 1)
        r0 = np.minimum(np.floor(r).astype(np.int64), out_h - 1)
        c0 = np.minimum(np.floor(c).astype(np.int64), out_w - 1)
        r1, c1 = np.minimum(r0 + 1, out_h - 1), np.minimum(c0 + 1, out_w - 1)
        fr, fc = (r - r0)[:, None, None], (c - c0)[:, None, None]
        disp_x, disp_y = self.displacements()

        def lerp(field):
            return ((1 - fr) * (1 - fc) * field[r0, c0] + (1 - fr) * fc * field[r0, c1]
                    + fr * (1 - fc) * field[r1, c0] + fr * fc * field[r1, c1])

        cy, cx = self.centres(rows, cols)
        return (cx[:, None, None] + lerp(disp_x), cy[:, None, None] + lerp(disp_y),
                lerp(self.mask))


def field_from_offsets(offset: torch.Tensor, mask: torch.Tensor, geometry: DCNv3Geometry,
                       input_size: Tuple[int, int]) -> SamplingField:
    """The field of one DCNv3 call from the op's own arguments (batch of one).

    Args:
        offset: ``(1, H_out, W_out, G*P*2)`` as the op takes it.
        mask: ``(1, H_out, W_out, G*P)``, the point weights (already normalised).
        geometry: The call's geometry.
        input_size: ``(H, W)`` of the op's input.
    """
    if offset.dim() != 4 or offset.shape[0] != 1:
        raise ValueError(f'expected offsets of one image (1, H, W, C), got {tuple(offset.shape)}')
    with torch.no_grad():
        loc_x, loc_y = sampling_locations(offset.detach().double(), geometry, torch.float64)
    out_h, out_w = offset.shape[1:3]
    weights = mask.detach().double().view(out_h, out_w, geometry.group, geometry.num_points)
    return SamplingField(loc_x[0].cpu().numpy(), loc_y[0].cpu().numpy(),
                         weights.cpu().numpy(), geometry, (int(input_size[0]), int(input_size[1])))


def field_of_layer(layer: DCNv3, input: torch.Tensor) -> SamplingField:
    """The field of a DCNv3 module on its ``(1, H, W, C)`` input."""
    with torch.no_grad():
        offset, mask = layer.offsets_and_masks(input)
    return field_from_offsets(offset, mask, layer.geometry, tuple(input.shape[1:3]))


@dataclass
class SamplingPoints:
    """Sampling points of chosen output locations, in the input cells of the lowest layer.

    Attributes:
        x, y: ``(M,)`` float64 locations.
        weight: ``(M,)`` path weights (products of masks, see the module docstring).
        group: ``(M,)`` group of the top-layer point each path starts from.
        location: ``(M,)`` index of the output location it belongs to.
        layers: Number of stacked layers.
        total_weight: Weight of all top-layer points (one per group and location).
        dropped_weight: Weight of the paths left out by ``max_points`` (at the level where
            they were left out; what they would have expanded into weighs at most that).
    """
    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    group: np.ndarray
    location: np.ndarray
    layers: int
    total_weight: float
    dropped_weight: float = 0.0

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def _select(self, keep: np.ndarray) -> None:
        for name in ('x', 'y', 'weight', 'group', 'location'):
            setattr(self, name, getattr(self, name)[keep])

    def _prune(self, max_points: Optional[int]) -> None:
        self._select(self.weight > 0)
        if max_points is not None and len(self) > max_points:
            keep = np.argpartition(-self.weight, max_points - 1)[:max_points]
            self.dropped_weight += float(self.weight.sum() - self.weight[keep].sum())
            self._select(np.sort(keep))


def points_of_stack(fields: Sequence[SamplingField], locations: Sequence[Tuple[int, int]],
                    groups: Optional[Sequence[int]] = None,
                    max_points: Optional[int] = None) -> SamplingPoints:
    """Sampling points of output locations of the top layer, expanded through the stack.

    Args:
        fields: The layers' fields, lowest first; each layer's output map is the input map
            of the next.
        locations: ``(row, col)`` output cells of the top layer.
        groups: Top-layer groups to follow (default all).
        max_points: Keep at most this many paths, the heaviest (the rest is counted in
            ``dropped_weight``); ``None`` keeps all.

    Returns:
        The points in the input cells of ``fields[0]``; for one field, exactly the op's
        sampling locations and masks.
    """
    if not fields:
        raise ValueError('points_of_stack needs at least one layer')
    for lower, upper in zip(fields[:-1], fields[1:]):
        if lower.output_size != upper.input_size:
            raise ValueError(f'a layer with output {lower.output_size} cannot feed a layer with '
                             f'input {upper.input_size}')
    top = fields[-1]
    out_h, out_w = top.output_size
    num_groups, num_points = top.mask.shape[2:]
    groups = np.arange(num_groups) if groups is None else np.asarray(sorted(set(groups)))
    if groups.size == 0 or groups.min() < 0 or groups.max() >= num_groups:
        raise ValueError(f'groups {groups.tolist()} out of range: the top layer has groups '
                         f'0..{num_groups - 1}')
    parts = []
    for index, (row, col) in enumerate(locations):
        if not (0 <= row < out_h and 0 <= col < out_w):
            raise ValueError(f'output location (row {row}, col {col}) is outside the '
                             f'{out_h}x{out_w} map')
        parts.append((top.loc_x[row, col, groups].ravel(), top.loc_y[row, col, groups].ravel(),
                      top.mask[row, col, groups].ravel(), np.repeat(groups, num_points),
                      np.full(groups.size * num_points, index)))
    x, y, weight, group, location = (np.concatenate(p) for p in zip(*parts))
    points = SamplingPoints(x, y, weight, group, location, layers=len(fields),
                            total_weight=float(weight.sum()))
    points._prune(max_points)
    for field in reversed(fields[:-1]):
        height, width = field.output_size
        share = inside_share(points.y, points.x, height, width)
        loc_x, loc_y, mask = field.at(points.y, points.x)
        lower_groups = mask.shape[1]
        weight = (points.weight * share / lower_groups)[:, None, None] * mask
        per_point = mask.shape[1] * mask.shape[2]
        points = SamplingPoints(loc_x.ravel(), loc_y.ravel(), weight.ravel(),
                                np.repeat(points.group, per_point),
                                np.repeat(points.location, per_point), layers=len(fields),
                                total_weight=points.total_weight,
                                dropped_weight=points.dropped_weight)
        points._prune(max_points)
    return points
