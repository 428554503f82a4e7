"""DCNv3 in plain PyTorch ops: any device, any float dtype, autograd and ONNX export.

Every output value is a weighted sum of ``4 * points`` input rows of ``group_channels``
contiguous channels (bilinear corners x sampling points, with the mask folded into the
bilinear weights). That is exactly ``F.embedding_bag(mode='sum')`` with per-sample weights
over the channels-last input viewed as a ``(rows, group_channels)`` table, so the sampled
values are never materialised (the official grid_sample reference builds a ``points``-times
larger intermediate and keeps it for backward).

Zero padding without per-corner validity tests: the input gets a zero border (1 before,
2 after, on H and W) and a sampling location outside ``[-1, size)`` is moved to ``size``: it
has all four corners outside the image either way, so it samples zero with zero gradient;
inside that range, corners outside the image land on the zero border.

Non-finite values follow the rule of every backend (``tests/ops/dcnv3/
test_dcnv3_nan_semantics.py``): a NaN location keeps NaN bilinear fractions (so the output
of its pixel and group, and its offset and mask gradients, are NaN) while its corner indices
point at the zero border and it sends nothing to the input gradient; an infinite location is
outside (samples 0). Indices never see NaN or Inf.
"""
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .geometry import DCNv3Geometry

# Zero border added before/after each spatial axis (see the module docstring).
_PAD_BEFORE, _PAD_AFTER = 1, 2


def softmax_over_points(mask_logits: torch.Tensor, geo: DCNv3Geometry) -> torch.Tensor:
    """InternImage's mask normalisation: softmax over the points of each group.

    Args:
        mask_logits: ``(N, H_out, W_out, G*P)``, laid out ``[g][k]``.

    Returns:
        The masks, same shape and dtype.

    On the CPU the explicit form: aten's softmax is slow over a last dimension this short
    (9): about 1.0 ms against 0.18 ms at stage 1 of InternImage-T, 2 cores.
    """
    n, out_h, out_w, _ = mask_logits.shape
    logits = mask_logits.view(n, out_h, out_w, geo.group, geo.num_points)
    if logits.device.type != 'cpu':
        return logits.softmax(-1).view(mask_logits.shape)
    exp = (logits - logits.amax(-1, keepdim=True)).exp()
    return (exp / exp.sum(-1, keepdim=True)).view(mask_logits.shape)


def sampling_locations(offset: torch.Tensor, geo: DCNv3Geometry,
                       compute_dtype: torch.dtype) -> tuple:
    """Sampling locations ``(loc_x, loc_y)`` in unpadded input pixels.

    Args:
        offset: ``(N, H_out, W_out, G*P*2)``, laid out ``[g][k][(dx, dy)]``.
        geo: The call's geometry.
        compute_dtype: Dtype of the coordinate arithmetic (at least float32).

    Returns:
        Two tensors of shape ``(N, H_out, W_out, G, P)``.
    """
    n, out_h, out_w, _ = offset.shape
    off = offset.to(compute_dtype).view(n, out_h, out_w, geo.group, geo.num_points, 2)
    grid_x, grid_y = geo.kernel_grid(offset.device, compute_dtype)
    centre_y, centre_x = geo.centres(out_h, out_w, offset.device, compute_dtype)
    scale = geo.offset_scale
    base_x = (centre_x[:, None] + grid_x * scale).view(1, 1, out_w, 1, -1)
    base_y = (centre_y[:, None] + grid_y * scale).view(1, out_h, 1, 1, -1)
    return off[..., 0] * scale + base_x, off[..., 1] * scale + base_y


class _Corners(NamedTuple):
    """Bilinear corners of every sampling point, shapes ``(B, P)`` with ``B = N*H_out*W_out*G``.

    ``top_left`` is the row of the top-left corner in the zero-bordered input table; the other
    corners are ``top_left + step`` for ``step`` in :meth:`steps`.
    """
    top_left: torch.Tensor
    frac_x: torch.Tensor
    frac_y: torch.Tensor
    inside_x: torch.Tensor  # whether the location was inside the clamp range (has gradient)
    inside_y: torch.Tensor
    nan: torch.Tensor  # whether the location is NaN
    padded_w: int
    group: int

    def steps(self) -> torch.Tensor:
        g, w = self.group, self.padded_w
        return torch.tensor([0, g, w * g, (w + 1) * g], dtype=self.top_left.dtype,
                            device=self.top_left.device)

    def index(self) -> torch.Tensor:
        """``(B, P*4)`` table rows, corners ordered (y0,x0) (y0,x1) (y1,x0) (y1,x1)."""
        return (self.top_left.unsqueeze(-1) + self.steps()).flatten(1)

    def weight(self, mask: torch.Tensor) -> torch.Tensor:
        """``(B, P*4)`` bilinear weights times the ``(B, P)`` mask, in :meth:`index` order."""
        # four element-wise products: a broadcast outer product over 2x2 trailing dims is
        # ~10x slower on CPU
        fx, fy = self.frac_x, self.frac_y
        top, bottom, left = (1 - fy) * mask, fy * mask, 1 - fx
        return torch.stack((top * left, top * fx, bottom * left, bottom * fx),
                           dim=-1).flatten(1)


def bilinear_corners(offset: torch.Tensor, height: int, width: int, geo: DCNv3Geometry,
                     compute_dtype: torch.dtype) -> _Corners:
    """Locate the bilinear corners of every sampling point in the zero-bordered input."""
    n = offset.shape[0]
    g = geo.group
    loc_x, loc_y = sampling_locations(offset, geo, compute_dtype)
    inside_x = (loc_x > -1) & (loc_x < width)
    inside_y = (loc_y > -1) & (loc_y < height)
    nan = loc_x.isnan() | loc_y.isnan()
    # Beyond [-1, size) every corner is outside: such a location moves to ``size``, whose
    # corners are on the zero border. (Clamping it to -1 instead would make pixel 0 a corner
    # of weight 0, through which a NaN input spreads where it does not in the other backends.)
    # Both keep NaN: the fractions below stay NaN.
    loc_x = torch.where(loc_x < -1, width, loc_x).clamp(max=width)
    loc_y = torch.where(loc_y < -1, height, loc_y).clamp(max=height)
    x0 = torch.floor(loc_x.nan_to_num(nan=-1.0))  # a NaN point's corners: the zero border
    y0 = torch.floor(loc_y.nan_to_num(nan=-1.0))
    padded_h, padded_w = height + _PAD_BEFORE + _PAD_AFTER, width + _PAD_BEFORE + _PAD_AFTER
    # ONNX Gather wants int64; elsewhere int32 halves what is kept for backward
    small = n * padded_h * padded_w * g < 2**31 and not torch.onnx.is_in_onnx_export()
    index_dtype = torch.int32 if small else torch.int64
    batch = torch.arange(n, device=offset.device, dtype=index_dtype).view(n, 1, 1, 1, 1)
    groups = torch.arange(g, device=offset.device, dtype=index_dtype).view(1, 1, 1, g, 1)
    top_left = ((batch * padded_h + (y0.to(index_dtype) + _PAD_BEFORE)) * padded_w
                + (x0.to(index_dtype) + _PAD_BEFORE)) * g + groups
    p = geo.num_points
    return _Corners(top_left.reshape(-1, p), (loc_x - x0).reshape(-1, p),
                    (loc_y - y0).reshape(-1, p), inside_x.reshape(-1, p),
                    inside_y.reshape(-1, p), nan.reshape(-1, p), padded_w, g)


def _bordered_table(input: torch.Tensor, geo: DCNv3Geometry,
                    compute_dtype: torch.dtype) -> torch.Tensor:
    bordered = F.pad(input.to(compute_dtype),
                     (0, 0, _PAD_BEFORE, _PAD_AFTER, _PAD_BEFORE, _PAD_AFTER))
    return bordered.view(-1, geo.group_channels)


def _forward(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
             geo: DCNv3Geometry) -> tuple:
    n, height, width, channels = input.shape
    out_h, out_w = offset.shape[1:3]
    compute_dtype = torch.promote_types(input.dtype, torch.float32)
    corners = bilinear_corners(offset, height, width, geo, compute_dtype)
    mask_rows = mask.to(compute_dtype).reshape(-1, geo.num_points)
    table = _bordered_table(input, geo, compute_dtype)
    out = F.embedding_bag(corners.index(), table, per_sample_weights=corners.weight(mask_rows),
                          mode='sum')
    return out.view(n, out_h, out_w, channels).to(input.dtype), corners, mask_rows


def _corner_dots(table: torch.Tensor, index: torch.Tensor,
                 grad_rows: torch.Tensor) -> torch.Tensor:
    """``dots[b, j] = <table[index[b, j]], grad_rows[b]>``, without gathering the rows.

    On CPU a sampled dense-dense product over the sparsity pattern of the bags (fused in
    aten); elsewhere, and while compiling, a gather and a reduction.
    """
    num_rows, bag = index.shape
    # (sampled_addmm also fails when a row has more entries than the table has rows)
    if (table.device.type != 'cpu' or table.dtype not in (torch.float32, torch.float64)
            or torch.compiler.is_compiling() or bag >= table.shape[0]):
        gathered = table.index_select(0, index.reshape(-1)).view(num_rows, bag, table.shape[1])
        return (gathered * grad_rows.unsqueeze(1)).sum(-1)
    crow = torch.arange(0, num_rows * bag + 1, bag, dtype=index.dtype, device=index.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on one op
        warnings.simplefilter('ignore', UserWarning)
        pattern = torch.sparse_csr_tensor(crow, index.reshape(-1), grad_rows.new_zeros(
            num_rows * bag), size=(num_rows, table.shape[0]), check_invariants=False)
    dots = torch.sparse.sampled_addmm(pattern, grad_rows, table.t(), beta=0.0)
    return dots.values().view(num_rows, bag)


def _grad_input(input_shape: torch.Size, grad_out: torch.Tensor, mask_rows: torch.Tensor,
                loc_x: torch.Tensor, loc_y: torch.Tensor, geo: DCNv3Geometry) -> torch.Tensor:
    """Scatter ``grad_out`` back to the input with aten's fused bilinear-sampler backward.

    The sampling points of each output pixel are laid side by side along the width, so
    one call covers all of them; channels-first per group, as the sampler wants.
    """
    n, height, width, channels = input_shape
    _, out_h, out_w, _ = grad_out.shape
    g, c, p = geo.group, geo.group_channels, geo.num_points
    dtype = loc_x.dtype
    # contiguous operands first: the broadcast product over strided views is 2-3x slower
    grad_planes = grad_out.to(dtype).view(n, out_h, out_w, g, c).permute(0, 3, 4, 1,
                                                                          2).contiguous()
    weights = mask_rows.view(n, out_h, out_w, g, p).permute(0, 3, 1, 2, 4).contiguous()
    grad_samples = (grad_planes.unsqueeze(-1) * weights.unsqueeze(2)).view(
        n * g, c, out_h, out_w * p)
    # NaN/Inf locations scatter nothing: moved where every corner is outside the image
    loc_x = loc_x.nan_to_num(nan=-2.0).clamp(-2, width + 1)
    loc_y = loc_y.nan_to_num(nan=-2.0).clamp(-2, height + 1)
    # normalised coordinates (align_corners=False: pixel i spans [i, i+1) -> centre i+0.5)
    grid_x = (loc_x + 0.5) * (2.0 / width) - 1.0
    grid_y = (loc_y + 0.5) * (2.0 / height) - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1).view(n, out_h, out_w, g, p, 2)
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * g, out_h, out_w * p, 2)
    planes_shape = (n * g, c, height, width)
    placeholder = grad_samples.new_zeros(()).expand(planes_shape)  # only its shape is read
    grad_planes, _ = torch.ops.aten.grid_sampler_2d_backward(
        grad_samples, placeholder, grid, 0, 0, False, [True, False])
    return grad_planes.view(n, g, c, height, width).permute(0, 3, 4, 1, 2).reshape(
        n, height, width, channels)


def dcnv3_backward_pytorch(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                           grad_out: torch.Tensor, geo: DCNv3Geometry,
                           need_input_grad: bool = True, need_offset_grad: bool = True,
                           need_mask_grad: bool = True) -> tuple:
    """Gradients of the PyTorch forward for input, offset and mask (``None`` where not
    needed), with fused aten kernels (sampled dense-dense product, bilinear-sampler
    backward) and nothing kept from the forward but its inputs."""
    n, height, width, _ = input.shape
    compute_dtype = torch.promote_types(input.dtype, torch.float32)
    loc_x, loc_y = sampling_locations(offset, geo, compute_dtype)
    m = mask.to(compute_dtype).reshape(-1, geo.num_points)
    grad_input = grad_offset = grad_mask = None
    if need_input_grad:
        grad_input = _grad_input(input.shape, grad_out, m, loc_x, loc_y, geo).to(input.dtype)
    if need_offset_grad or need_mask_grad:
        corners = bilinear_corners(offset, height, width, geo, compute_dtype)
        table = _bordered_table(input, geo, compute_dtype)
        grad_rows = grad_out.to(compute_dtype).reshape(-1, geo.group_channels)
        dots = _corner_dots(table, corners.index(), grad_rows)
        # a NaN location has no sample and no slope: NaN offset and mask gradients
        dots = dots.view(-1, geo.num_points, 4) + torch.where(
            corners.nan, float('nan'), 0.0).to(dots.dtype).unsqueeze(-1)
        d00, d01, d10, d11 = dots.unbind(-1)
        fx, fy = corners.frac_x, corners.frac_y
        if need_offset_grad:
            # no slope outside (-1, size): a select, as in the kernels (a product with the
            # flag would keep the NaN of a weight-0 corner at -1)
            zero = dots.new_zeros(())
            grad_fx = torch.where(corners.inside_x | corners.nan,
                                  m * ((1 - fy) * (d01 - d00) + fy * (d11 - d10)), zero)
            grad_fy = torch.where(corners.inside_y | corners.nan,
                                  m * ((1 - fx) * (d10 - d00) + fx * (d11 - d01)), zero)
            grad_offset = (torch.stack((grad_fx, grad_fy), dim=-1) * geo.offset_scale)
            grad_offset = grad_offset.view(offset.shape).to(offset.dtype)
        if need_mask_grad:
            grad_mask = (1 - fy) * ((1 - fx) * d00 + fx * d01) + fy * (
                (1 - fx) * d10 + fx * d11)
            grad_mask = grad_mask.view(mask.shape).to(mask.dtype)
    return grad_input, grad_offset, grad_mask


def dcnv3_forward_pytorch(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                          geo: DCNv3Geometry) -> torch.Tensor:
    """The PyTorch forward without autograd (the custom op's ``pytorch`` kernel)."""
    return _forward(input, offset, mask, geo)[0]


class _DCNv3PyTorch(torch.autograd.Function):
    """Forward by ``embedding_bag``; backward by :func:`dcnv3_backward_pytorch`."""

    @staticmethod
    def forward(ctx, input, offset, mask, geo):
        ctx.geo = geo
        ctx.save_for_backward(input, offset, mask)
        return _forward(input, offset, mask, geo)[0]

    @staticmethod
    def backward(ctx, grad_out):
        input, offset, mask = ctx.saved_tensors
        return (*dcnv3_backward_pytorch(input, offset, mask, grad_out, ctx.geo,
                                        *ctx.needs_input_grad[:3]), None)


def dcnv3_pytorch(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                  geo: DCNv3Geometry) -> torch.Tensor:
    """DCNv3 forward with standard ops (differentiable by autograd).

    Arguments are assumed validated (see :func:`geometry.check_tensors`). float16/bfloat16
    inputs are computed in float32 and returned in the input dtype.
    """
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (input, offset, mask))
    if needs_grad and not torch.onnx.is_in_onnx_export():
        return _DCNv3PyTorch.apply(input, offset, mask, geo)
    return _forward(input, offset, mask, geo)[0]
