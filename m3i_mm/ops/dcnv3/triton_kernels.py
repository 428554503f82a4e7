"""DCNv3 forward and backward as Triton kernels (no build step).

One program handles ``BLOCK_Q`` output pixels of one group: it loops over the sampling
points (unrolled), reads the four bilinear corners as ``[BLOCK_Q, C']`` tiles of the
channels-last input and accumulates in float32. Backward recomputes the geometry, reduces
the offset and mask gradients over the channels in registers, and scatters the input
gradient with float32 atomics. Inputs may be float32, float16 or bfloat16 (and float64 for
checks); offsets and masks may have their own float dtype.

With ``TRITON_INTERPRET=1`` (set before import) the same kernels run on CPU tensors, which
is how the test suite checks them on machines without a GPU.
"""
import torch
import triton
import triton.language as tl

from .geometry import DCNv3Geometry


@triton.jit
def _corner(input_ptr, row_base, ys, xs, height, width, row_stride, c_idx, c_ok, q_ok,
            ACC: tl.constexpr):
    """Load one bilinear corner tile; out-of-image corners read as zero."""
    ok = q_ok & (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    offsets = (row_base + (ys.to(tl.int64) * width + xs) * row_stride)[:, None] \
        + c_idx[None, :]
    values = tl.load(input_ptr + offsets, mask=ok[:, None] & c_ok[None, :], other=0.0)
    return values.to(ACC), ok, offsets


@triton.jit
def _point_geometry(offset_ptr, mask_ptr, q, q_ok, g, k: tl.constexpr, out_w, out_hw,
                    height, width, GROUPS: tl.constexpr, POINTS: tl.constexpr,
                    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,
                    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr, PAD_H: tl.constexpr,
                    PAD_W: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,
                    REMOVE_CENTER: tl.constexpr, OFFSET_SCALE: tl.constexpr,
                    ACC: tl.constexpr):
    # Point k in x-major order, skipping the centre with remove_center.
    CENTRE: tl.constexpr = (KERNEL_W // 2) * KERNEL_H + KERNEL_H // 2
    FULL_K: tl.constexpr = k + 1 if (REMOVE_CENTER and k >= CENTRE) else k
    GRID_X: tl.constexpr = (FULL_K // KERNEL_H) * DIL_W - (DIL_W * (KERNEL_W - 1)) // 2
    GRID_Y: tl.constexpr = (FULL_K % KERNEL_H) * DIL_H - (DIL_H * (KERNEL_H - 1)) // 2
    rem = q % out_hw
    ho = rem // out_w
    wo = rem % out_w
    centre_y = (ho * STRIDE_H + ((DIL_H * (KERNEL_H - 1)) // 2 - PAD_H)).to(ACC)
    centre_x = (wo * STRIDE_W + ((DIL_W * (KERNEL_W - 1)) // 2 - PAD_W)).to(ACC)
    point = q.to(tl.int64) * (GROUPS * POINTS) + g * POINTS + k
    off_x = tl.load(offset_ptr + point * 2, mask=q_ok, other=0.0).to(ACC)
    off_y = tl.load(offset_ptr + point * 2 + 1, mask=q_ok, other=0.0).to(ACC)
    m = tl.load(mask_ptr + point, mask=q_ok, other=0.0).to(ACC)
    loc_x = centre_x + (GRID_X + off_x) * OFFSET_SCALE
    loc_y = centre_y + (GRID_Y + off_y) * OFFSET_SCALE
    # Beyond (-1, size) every corner is outside: clamping keeps the int conversion safe.
    inside_x = (loc_x > -1.0) & (loc_x < width)
    inside_y = (loc_y > -1.0) & (loc_y < height)
    loc_x = tl.minimum(tl.maximum(loc_x, -2.0), width + 1.0)
    loc_y = tl.minimum(tl.maximum(loc_y, -2.0), height + 1.0)
    x0f = tl.floor(loc_x)
    y0f = tl.floor(loc_y)
    return (point, m, loc_x - x0f, loc_y - y0f, x0f.to(tl.int32), y0f.to(tl.int32),
            inside_x, inside_y)


@triton.jit
def _dcnv3_forward_kernel(
        input_ptr, offset_ptr, mask_ptr, out_ptr, num_q, height, width, out_w, out_hw,
        GROUPS: tl.constexpr, CHANNELS: tl.constexpr, POINTS: tl.constexpr,
        KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, STRIDE_H: tl.constexpr,
        STRIDE_W: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,
        DIL_H: tl.constexpr, DIL_W: tl.constexpr, REMOVE_CENTER: tl.constexpr,
        OFFSET_SCALE: tl.constexpr, ACC: tl.constexpr, BLOCK_Q: tl.constexpr,
        BLOCK_C: tl.constexpr):
    g = tl.program_id(1)
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = q < num_q
    c_idx = tl.arange(0, BLOCK_C)
    c_ok = c_idx < CHANNELS
    row_stride = GROUPS * CHANNELS
    n = (q // out_hw).to(tl.int64)
    row_base = n * height * width * row_stride + g * CHANNELS
    acc = tl.zeros((BLOCK_Q, BLOCK_C), dtype=ACC)
    for k in tl.static_range(POINTS):
        point, m, fx, fy, x0, y0, _, _ = _point_geometry(
            offset_ptr, mask_ptr, q, q_ok, g, k, out_w, out_hw, height, width, GROUPS,
            POINTS, KERNEL_H, KERNEL_W, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
            REMOVE_CENTER, OFFSET_SCALE, ACC)
        v00, _, _ = _corner(input_ptr, row_base, y0, x0, height, width, row_stride, c_idx,
                            c_ok, q_ok, ACC)
        v01, _, _ = _corner(input_ptr, row_base, y0, x0 + 1, height, width, row_stride,
                            c_idx, c_ok, q_ok, ACC)
        v10, _, _ = _corner(input_ptr, row_base, y0 + 1, x0, height, width, row_stride,
                            c_idx, c_ok, q_ok, ACC)
        v11, _, _ = _corner(input_ptr, row_base, y0 + 1, x0 + 1, height, width, row_stride,
                            c_idx, c_ok, q_ok, ACC)
        top = v00 + (v01 - v00) * fx[:, None]
        bottom = v10 + (v11 - v10) * fx[:, None]
        acc += (top + (bottom - top) * fy[:, None]) * m[:, None]
    out_ptrs = out_ptr + (q.to(tl.int64) * row_stride + g * CHANNELS)[:, None] + c_idx[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_ok[:, None] & c_ok[None, :])


@triton.jit
def _dcnv3_backward_kernel(
        input_ptr, offset_ptr, mask_ptr, grad_out_ptr, grad_input_ptr, grad_offset_ptr,
        grad_mask_ptr, num_q, height, width, out_w, out_hw,
        GROUPS: tl.constexpr, CHANNELS: tl.constexpr, POINTS: tl.constexpr,
        KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, STRIDE_H: tl.constexpr,
        STRIDE_W: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,
        DIL_H: tl.constexpr, DIL_W: tl.constexpr, REMOVE_CENTER: tl.constexpr,
        OFFSET_SCALE: tl.constexpr, ACC: tl.constexpr, NEED_INPUT_GRAD: tl.constexpr,
        BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    g = tl.program_id(1)
    q = tl.program_id(0) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = q < num_q
    c_idx = tl.arange(0, BLOCK_C)
    c_ok = c_idx < CHANNELS
    row_stride = GROUPS * CHANNELS
    n = (q // out_hw).to(tl.int64)
    row_base = n * height * width * row_stride + g * CHANNELS
    gout_ptrs = grad_out_ptr + (q.to(tl.int64) * row_stride + g * CHANNELS)[:, None] \
        + c_idx[None, :]
    gout = tl.load(gout_ptrs, mask=q_ok[:, None] & c_ok[None, :], other=0.0).to(ACC)
    for k in tl.static_range(POINTS):
        point, m, fx, fy, x0, y0, inside_x, inside_y = _point_geometry(
            offset_ptr, mask_ptr, q, q_ok, g, k, out_w, out_hw, height, width, GROUPS,
            POINTS, KERNEL_H, KERNEL_W, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
            REMOVE_CENTER, OFFSET_SCALE, ACC)
        v00, ok00, p00 = _corner(input_ptr, row_base, y0, x0, height, width, row_stride,
                                 c_idx, c_ok, q_ok, ACC)
        v01, ok01, p01 = _corner(input_ptr, row_base, y0, x0 + 1, height, width, row_stride,
                                 c_idx, c_ok, q_ok, ACC)
        v10, ok10, p10 = _corner(input_ptr, row_base, y0 + 1, x0, height, width, row_stride,
                                 c_idx, c_ok, q_ok, ACC)
        v11, ok11, p11 = _corner(input_ptr, row_base, y0 + 1, x0 + 1, height, width,
                                 row_stride, c_idx, c_ok, q_ok, ACC)
        d00 = tl.sum(v00 * gout, axis=1)
        d01 = tl.sum(v01 * gout, axis=1)
        d10 = tl.sum(v10 * gout, axis=1)
        d11 = tl.sum(v11 * gout, axis=1)
        gx = 1.0 - fx
        gy = 1.0 - fy
        grad_m = gy * (gx * d00 + fx * d01) + fy * (gx * d10 + fx * d11)
        grad_fx = m * (gy * (d01 - d00) + fy * (d11 - d10))
        grad_fy = m * (gx * (d10 - d00) + fx * (d11 - d01))
        grad_fx = tl.where(inside_x, grad_fx, 0.0) * OFFSET_SCALE
        grad_fy = tl.where(inside_y, grad_fy, 0.0) * OFFSET_SCALE
        tl.store(grad_mask_ptr + point, grad_m, mask=q_ok)
        tl.store(grad_offset_ptr + point * 2, grad_fx, mask=q_ok)
        tl.store(grad_offset_ptr + point * 2 + 1, grad_fy, mask=q_ok)
        if NEED_INPUT_GRAD:
            cm = c_ok[None, :]
            tl.atomic_add(grad_input_ptr + p00, gout * (m * gy * gx)[:, None],
                          mask=ok00[:, None] & cm, sem='relaxed')
            tl.atomic_add(grad_input_ptr + p01, gout * (m * gy * fx)[:, None],
                          mask=ok01[:, None] & cm, sem='relaxed')
            tl.atomic_add(grad_input_ptr + p10, gout * (m * fy * gx)[:, None],
                          mask=ok10[:, None] & cm, sem='relaxed')
            tl.atomic_add(grad_input_ptr + p11, gout * (m * fy * fx)[:, None],
                          mask=ok11[:, None] & cm, sem='relaxed')


def _launch_config(geo: DCNv3Geometry, num_q: int) -> tuple:
    block_c = triton.next_power_of_2(geo.group_channels)
    block_q = max(16, min(128, 2048 // block_c))
    grid = (triton.cdiv(num_q, block_q), geo.group)
    return grid, block_q, block_c


def _static_kwargs(geo: DCNv3Geometry, dtype: torch.dtype) -> dict:
    return dict(OFFSET_SCALE=geo.offset_scale,
                ACC=tl.float64 if dtype == torch.float64 else tl.float32, GROUPS=geo.group, CHANNELS=geo.group_channels, POINTS=geo.num_points,
                KERNEL_H=geo.kernel_h, KERNEL_W=geo.kernel_w, STRIDE_H=geo.stride_h,
                STRIDE_W=geo.stride_w, PAD_H=geo.pad_h, PAD_W=geo.pad_w,
                DIL_H=geo.dilation_h, DIL_W=geo.dilation_w, REMOVE_CENTER=geo.remove_center)


def dcnv3_forward_triton(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                         geo: DCNv3Geometry) -> torch.Tensor:
    n, height, width, channels = input.shape
    _, out_h, out_w, _ = offset.shape
    input, offset, mask = input.contiguous(), offset.contiguous(), mask.contiguous()
    out = input.new_empty(n, out_h, out_w, channels)
    num_q = n * out_h * out_w
    grid, block_q, block_c = _launch_config(geo, num_q)
    _dcnv3_forward_kernel[grid](
        input, offset, mask, out, num_q, height, width, out_w, out_h * out_w,
        BLOCK_Q=block_q, BLOCK_C=block_c, num_warps=4, **_static_kwargs(geo, input.dtype))
    return out


def dcnv3_backward_triton(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                          grad_out: torch.Tensor, geo: DCNv3Geometry,
                          need_input_grad: bool = True) -> tuple:
    n, height, width, channels = input.shape
    _, out_h, out_w, _ = offset.shape
    input, offset, mask = input.contiguous(), offset.contiguous(), mask.contiguous()
    grad_out = grad_out.contiguous()
    acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    # Atomics accumulate in float32 (float64 for float64 checks), cast at the end.
    grad_input = torch.zeros(input.shape, dtype=acc_dtype, device=input.device)
    grad_offset = torch.empty(offset.shape, dtype=acc_dtype, device=input.device)
    grad_mask = torch.empty(mask.shape, dtype=acc_dtype, device=input.device)
    num_q = n * out_h * out_w
    grid, block_q, block_c = _launch_config(geo, num_q)
    _dcnv3_backward_kernel[grid](
        input, offset, mask, grad_out, grad_input, grad_offset, grad_mask, num_q, height,
        width, out_w, out_h * out_w, NEED_INPUT_GRAD=need_input_grad, BLOCK_Q=block_q,
        BLOCK_C=block_c, num_warps=4, **_static_kwargs(geo, input.dtype))
    return (grad_input.to(input.dtype), grad_offset.to(offset.dtype), grad_mask.to(mask.dtype))
