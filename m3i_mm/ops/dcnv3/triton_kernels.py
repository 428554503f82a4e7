"""DCNv3 forward and backward as Triton kernels (no build step).

Design (checked on the compiled code with ``tools/analysis/kernel_report.py``: no spills,
at most 128 registers per thread, 64/128-bit channel loads, with Triton 3.6 to 3.8):

* One program handles ``BLOCK_Q`` consecutive output pixels of one group; groups vary
  fastest across programs, so the programs that run together read the same input rows,
  offsets and masks (whole cache lines) for all groups.
* Channel tiles are 3-D (pixel, 16-byte vector, channel) so that each thread holds whole
  pixel rows: a sampling point's geometry (location, bilinear weights times the mask,
  corner rows, validity) is computed once per (pixel, group) and point, not per channel,
  and never moved through shared memory. Row offsets are multiples of ``group_channels``
  (known to the compiler), so the corners are read with 128-bit loads (64-bit where
  the channels do not allow more); a point's ``(dx, dy)`` is one 64-bit (32-bit) load.
* The sampling points are a loop, not unrolled (bounded registers); accumulation in
  float32 (float64 for float64 checks) with the mask folded into the four bilinear weights
  (4 FMAs per channel and point).
* Backward keeps the ``grad_out`` row in registers and loops over the points: four dot
  products per point (reduced inside the thread) give the offset and mask gradients,
  written once in the offset/mask dtype; the input gradient is scattered with float32
  atomics (128-bit vector atomics on Hopper).
* Launch parameters come from :data:`LAUNCH_TABLES` per GPU generation and shape class
  (channels per group, element size); 32-bit index arithmetic unless a tensor has 2**31
  elements or more.

NaN/Inf semantics (shared by every backend, see ``tests/ops/dcnv3/test_dcnv3_nan_semantics.py``):
a NaN offset or mask makes the output of its (pixel, group) NaN; a NaN location (offset)
makes the point's offset and mask gradients NaN and sends nothing to the input gradient; a
NaN mask makes the point's offset gradient and its corners' input gradient NaN; an infinite
offset puts the point outside the image (it samples zero, with zero gradients). Locations
are clamped with NaN-preserving selects, and index arithmetic never sees a NaN.

With ``TRITON_INTERPRET=1`` (set before import) the same kernels run on CPU tensors, which
is how the test suite checks them on machines without a GPU.
"""
import functools
from typing import Dict, NamedTuple, Tuple

import torch
import triton
import triton.language as tl

from .geometry import DCNv3Geometry

_INT32_LIMIT = 2**31 - 1
_ROWS_LAST_FROM = (3, 7)  # first Triton giving tied tile axes to the higher axis (rows_axis)


@triton.jit
def _unpack_pair(bits, dtype: tl.constexpr, HALF_INT: tl.constexpr):
    """The two halves of unsigned words as ``dtype`` (low half first)."""
    HALF: tl.constexpr = HALF_INT.primitive_bitwidth
    low = (bits & ((1 << HALF) - 1)).to(HALF_INT).to(dtype, bitcast=True)
    high = (bits >> HALF).to(HALF_INT).to(dtype, bitcast=True)
    return low, high


@triton.jit
def _pack_pair(low, high, PAIR_INT: tl.constexpr, HALF_INT: tl.constexpr):
    """Unsigned words holding ``low`` in their low half and ``high`` in the high one."""
    HALF: tl.constexpr = HALF_INT.primitive_bitwidth
    low_bits = low.to(HALF_INT, bitcast=True).to(PAIR_INT)
    high_bits = high.to(HALF_INT, bitcast=True).to(PAIR_INT)
    return low_bits | (high_bits << HALF)


@triton.jit
def _point_geometry(offset_ptr, mask_ptr, point, q_ok, centre_x, centre_y, k, height, width,
                    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, DIL_H: tl.constexpr,
                    DIL_W: tl.constexpr, REMOVE_CENTER: tl.constexpr,
                    OFFSET_SCALE: tl.constexpr, ACC: tl.constexpr, PAIRED: tl.constexpr,
                    PAIR_INT: tl.constexpr, HALF_INT: tl.constexpr):
    """Location, bilinear fractions and top-left corner of point ``k`` for ``[BLOCK_Q]`` pixels.

    Returns ``(fx, fy, m, x0, y0, inside_x, inside_y, is_number)``: fractions and mask (NaN
    kept), integer corner (never computed from a NaN; a NaN location gets a corner outside
    the image), whether the location lies in the open range (-1, size) where the offset has
    a gradient (True for NaN, so that a NaN gradient is not masked to zero), and whether the
    location is a number (not NaN).
    """
    CENTRE: tl.constexpr = (KERNEL_W // 2) * KERNEL_H + KERNEL_H // 2
    if REMOVE_CENTER:
        full_k = k + (k >= CENTRE)
    else:
        full_k = k
    grid_x = (full_k // KERNEL_H) * DIL_W - (DIL_W * (KERNEL_W - 1)) // 2
    grid_y = (full_k % KERNEL_H) * DIL_H - (DIL_H * (KERNEL_H - 1)) // 2
    if PAIRED:
        # (dx, dy) as one 64-bit (32-bit for 16-bit offsets) load, split in registers
        off_x, off_y = _unpack_pair(
            tl.load(offset_ptr.to(tl.pointer_type(PAIR_INT), bitcast=True) + point,
                    mask=q_ok, other=0), offset_ptr.dtype.element_ty, HALF_INT)
        off_x = off_x.to(ACC)
        off_y = off_y.to(ACC)
    else:
        off_x = tl.load(offset_ptr + point * 2, mask=q_ok, other=0.0).to(ACC)
        off_y = tl.load(offset_ptr + point * 2 + 1, mask=q_ok, other=0.0).to(ACC)
    m = tl.load(mask_ptr + point, mask=q_ok, other=0.0).to(ACC)
    loc_x = centre_x + (grid_x + off_x) * OFFSET_SCALE
    loc_y = centre_y + (grid_y + off_y) * OFFSET_SCALE
    inside_x = ~((loc_x <= -1.0) | (loc_x >= width))
    inside_y = ~((loc_y <= -1.0) | (loc_y >= height))
    # Beyond (-1, size) every corner is outside: clamping keeps the int conversion safe.
    # Selects, not minimum/maximum, which would turn NaN into the bound.
    loc_x = tl.where(loc_x < -2.0, -2.0, tl.where(loc_x > width + 1.0, width + 1.0, loc_x))
    loc_y = tl.where(loc_y < -2.0, -2.0, tl.where(loc_y > height + 1.0, height + 1.0, loc_y))
    x0f = tl.floor(loc_x)
    y0f = tl.floor(loc_y)
    is_number = (loc_x == loc_x) & (loc_y == loc_y)
    x0 = tl.where(is_number, x0f, -2.0).to(tl.int32)
    y0 = tl.where(is_number, y0f, -2.0).to(tl.int32)
    return loc_x - x0f, loc_y - y0f, m, x0, y0, inside_x, inside_y, is_number


@triton.jit
def _corner_rows(n, x0, y0, q_ok, height, width, WIDE_INDEX: tl.constexpr):
    """Input rows of the four corners and whether each lies in the image."""
    if WIDE_INDEX:
        top = (n * height + y0.to(tl.int64)) * width + x0
    else:
        top = (n * height + y0) * width + x0
    x_in0 = (x0 >= 0) & (x0 < width)
    x_in1 = (x0 >= -1) & (x0 < width - 1)
    y_in0 = q_ok & (y0 >= 0) & (y0 < height)
    y_in1 = q_ok & (y0 >= -1) & (y0 < height - 1)
    return (top, top + 1, top + width, top + width + 1, y_in0 & x_in0, y_in0 & x_in1,
            y_in1 & x_in0, y_in1 & x_in1)


@triton.jit
def _pixels(pid, num_q, out_w, out_hw, GROUPS: tl.constexpr, STRIDE_H: tl.constexpr,
            STRIDE_W: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,
            KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, DIL_H: tl.constexpr,
            DIL_W: tl.constexpr, ACC: tl.constexpr, BLOCK_Q: tl.constexpr,
            WIDE_INDEX: tl.constexpr):
    """Group, pixel indices, image index and kernel centres of this program's pixels."""
    g = pid % GROUPS
    block = pid // GROUPS
    if WIDE_INDEX:
        block = block.to(tl.int64)
    q = block * BLOCK_Q + tl.arange(0, BLOCK_Q)
    q_ok = q < num_q
    n = q // out_hw
    rem = q - n * out_hw
    ho = rem // out_w
    wo = rem - ho * out_w
    centre_y = (ho * STRIDE_H + ((DIL_H * (KERNEL_H - 1)) // 2 - PAD_H)).to(ACC)
    centre_x = (wo * STRIDE_W + ((DIL_W * (KERNEL_W - 1)) // 2 - PAD_W)).to(ACC)
    return g, q, q_ok, n, centre_x, centre_y


@triton.jit
def _per_row(x, ROWS_AXIS: tl.constexpr):
    """A ``[BLOCK_Q]`` per-pixel vector as a 3-D tile that broadcasts over the channels."""
    if ROWS_AXIS == 0:
        return x[:, None, None]
    else:
        return x[None, :, None]


@triton.jit
def _channel_tile(g, CHANNELS: tl.constexpr, BLOCK_C: tl.constexpr, VEC: tl.constexpr,
                  ROWS_AXIS: tl.constexpr):
    """Channel indices of group ``g`` as a 3-D tile of ``BLOCK_C // VEC`` vectors of ``VEC``.

    Tiles are 3-D, (pixel, sub-vector, channel in the vector) with the pixel axis at
    ``ROWS_AXIS`` (0 or 1): laid out so, the compiler gives each thread whole pixel rows
    (all the vectors of a row) when ``BLOCK_Q`` is 32 x the warps, and a point's geometry,
    a ``[BLOCK_Q]`` vector, lives once per (pixel, group), in the thread that uses it.
    (Which of the two equally non-contiguous axes gets the threads first depends on the
    Triton version: see :func:`rows_axis`.)
    """
    if ROWS_AXIS == 0:
        c = tl.arange(0, BLOCK_C // VEC)[None, :, None] * VEC \
            + tl.arange(0, VEC)[None, None, :]
    else:
        c = tl.arange(0, BLOCK_C // VEC)[:, None, None] * VEC \
            + tl.arange(0, VEC)[None, None, :]
    return g * CHANNELS + c, c < CHANNELS


@triton.jit
def _row_sum(x, ROWS_AXIS: tl.constexpr):
    """Sum of a 3-D tile over its channel axes: one value per pixel."""
    if ROWS_AXIS == 0:
        return tl.sum(tl.sum(x, axis=2), axis=1)
    else:
        return tl.sum(tl.sum(x, axis=2), axis=0)


@triton.jit
def _dcnv3_forward_kernel(
        input_ptr, offset_ptr, mask_ptr, out_ptr, num_q, height, width, out_w, out_hw,
        GROUPS: tl.constexpr, CHANNELS: tl.constexpr, POINTS: tl.constexpr,
        KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, STRIDE_H: tl.constexpr,
        STRIDE_W: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,
        DIL_H: tl.constexpr, DIL_W: tl.constexpr, REMOVE_CENTER: tl.constexpr,
        OFFSET_SCALE: tl.constexpr, ACC: tl.constexpr, WIDE_INDEX: tl.constexpr,
        PAIRED: tl.constexpr, PAIR_INT: tl.constexpr, HALF_INT: tl.constexpr,
        BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr, VEC: tl.constexpr,
        ROWS_AXIS: tl.constexpr):
    ROW: tl.constexpr = GROUPS * CHANNELS
    g, q, q_ok, n, centre_x, centre_y = _pixels(
        tl.program_id(0), num_q, out_w, out_hw, GROUPS, STRIDE_H, STRIDE_W, PAD_H, PAD_W,
        KERNEL_H, KERNEL_W, DIL_H, DIL_W, ACC, BLOCK_Q, WIDE_INDEX)
    channels, c_ok = _channel_tile(g, CHANNELS, BLOCK_C, VEC, ROWS_AXIS)
    first_point = (q * GROUPS + g) * POINTS
    if ROWS_AXIS == 0:
        acc = tl.zeros((BLOCK_Q, BLOCK_C // VEC, VEC), dtype=ACC)
    else:
        acc = tl.zeros((BLOCK_C // VEC, BLOCK_Q, VEC), dtype=ACC)
    for k in range(POINTS):
        point = first_point + k
        fx, fy, m, x0, y0, _, _, _ = _point_geometry(
            offset_ptr, mask_ptr, point, q_ok, centre_x, centre_y, k, height, width,
            KERNEL_H, KERNEL_W, DIL_H, DIL_W, REMOVE_CENTER, OFFSET_SCALE, ACC, PAIRED,
            PAIR_INT, HALF_INT)
        r00, r01, r10, r11, ok00, ok01, ok10, ok11 = _corner_rows(n, x0, y0, q_ok, height,
                                                                  width, WIDE_INDEX)
        top = (1.0 - fy) * m
        bottom = fy * m
        v00 = tl.load(input_ptr + _per_row(r00 * ROW, ROWS_AXIS) + channels,
                      mask=_per_row(ok00, ROWS_AXIS) & c_ok, other=0.0)
        v01 = tl.load(input_ptr + _per_row(r01 * ROW, ROWS_AXIS) + channels,
                      mask=_per_row(ok01, ROWS_AXIS) & c_ok, other=0.0)
        v10 = tl.load(input_ptr + _per_row(r10 * ROW, ROWS_AXIS) + channels,
                      mask=_per_row(ok10, ROWS_AXIS) & c_ok, other=0.0)
        v11 = tl.load(input_ptr + _per_row(r11 * ROW, ROWS_AXIS) + channels,
                      mask=_per_row(ok11, ROWS_AXIS) & c_ok, other=0.0)
        acc += v00.to(ACC) * _per_row(top * (1.0 - fx), ROWS_AXIS)
        acc += v01.to(ACC) * _per_row(top * fx, ROWS_AXIS)
        acc += v10.to(ACC) * _per_row(bottom * (1.0 - fx), ROWS_AXIS)
        acc += v11.to(ACC) * _per_row(bottom * fx, ROWS_AXIS)
    tl.store(out_ptr + _per_row(q * ROW, ROWS_AXIS) + channels,
             acc.to(out_ptr.dtype.element_ty), mask=_per_row(q_ok, ROWS_AXIS) & c_ok)


@triton.jit
def _row_dot(input_ptr, rows, ok, channels, c_ok, gout, ROW: tl.constexpr,
             ACC: tl.constexpr, ROWS_AXIS: tl.constexpr):
    """``<input row, grad_out row>`` per pixel (zero for corners outside the image)."""
    values = tl.load(input_ptr + _per_row(rows * ROW, ROWS_AXIS) + channels,
                     mask=_per_row(ok, ROWS_AXIS) & c_ok, other=0.0).to(ACC)
    return _row_sum(values * gout, ROWS_AXIS)


@triton.jit
def _scatter(grad_input_ptr, rows, ok, channels, c_ok, gout, weight, ROW: tl.constexpr,
             ROWS_AXIS: tl.constexpr):
    """Add ``weight * grad_out row`` to the input-gradient rows (float32 atomics)."""
    tl.atomic_add(grad_input_ptr + _per_row(rows * ROW, ROWS_AXIS) + channels,
                  gout * _per_row(weight, ROWS_AXIS), mask=_per_row(ok, ROWS_AXIS) & c_ok,
                  sem='relaxed')


@triton.jit
def _dcnv3_backward_kernel(
        input_ptr, offset_ptr, mask_ptr, grad_out_ptr, grad_input_ptr, grad_offset_ptr,
        grad_mask_ptr, num_q, height, width, out_w, out_hw,
        GROUPS: tl.constexpr, CHANNELS: tl.constexpr, POINTS: tl.constexpr,
        KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, STRIDE_H: tl.constexpr,
        STRIDE_W: tl.constexpr, PAD_H: tl.constexpr, PAD_W: tl.constexpr,
        DIL_H: tl.constexpr, DIL_W: tl.constexpr, REMOVE_CENTER: tl.constexpr,
        OFFSET_SCALE: tl.constexpr, ACC: tl.constexpr, WIDE_INDEX: tl.constexpr,
        PAIRED: tl.constexpr, PAIR_INT: tl.constexpr, HALF_INT: tl.constexpr,
        NEED_INPUT_GRAD: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr,
        VEC: tl.constexpr, ROWS_AXIS: tl.constexpr):
    ROW: tl.constexpr = GROUPS * CHANNELS
    g, q, q_ok, n, centre_x, centre_y = _pixels(
        tl.program_id(0), num_q, out_w, out_hw, GROUPS, STRIDE_H, STRIDE_W, PAD_H, PAD_W,
        KERNEL_H, KERNEL_W, DIL_H, DIL_W, ACC, BLOCK_Q, WIDE_INDEX)
    channels, c_ok = _channel_tile(g, CHANNELS, BLOCK_C, VEC, ROWS_AXIS)
    gout = tl.load(grad_out_ptr + _per_row(q * ROW, ROWS_AXIS) + channels,
                   mask=_per_row(q_ok, ROWS_AXIS) & c_ok, other=0.0).to(ACC)
    first_point = (q * GROUPS + g) * POINTS
    for k in range(POINTS):
        point = first_point + k
        fx, fy, m, x0, y0, inside_x, inside_y, is_number = _point_geometry(
            offset_ptr, mask_ptr, point, q_ok, centre_x, centre_y, k, height, width,
            KERNEL_H, KERNEL_W, DIL_H, DIL_W, REMOVE_CENTER, OFFSET_SCALE, ACC, PAIRED,
            PAIR_INT, HALF_INT)
        r00, r01, r10, r11, ok00, ok01, ok10, ok11 = _corner_rows(n, x0, y0, q_ok, height,
                                                                  width, WIDE_INDEX)
        # The sample at a NaN location is NaN (its corners were not read): so are the
        # point's mask and offset gradients.
        poison = tl.where(is_number, 0.0, float('nan'))
        d00 = _row_dot(input_ptr, r00, ok00, channels, c_ok, gout, ROW, ACC, ROWS_AXIS) + poison
        d01 = _row_dot(input_ptr, r01, ok01, channels, c_ok, gout, ROW, ACC, ROWS_AXIS) + poison
        d10 = _row_dot(input_ptr, r10, ok10, channels, c_ok, gout, ROW, ACC, ROWS_AXIS) + poison
        d11 = _row_dot(input_ptr, r11, ok11, channels, c_ok, gout, ROW, ACC, ROWS_AXIS) + poison
        gx = 1.0 - fx
        gy = 1.0 - fy
        grad_m = gy * (gx * d00 + fx * d01) + fy * (gx * d10 + fx * d11)
        grad_fx = m * (gy * (d01 - d00) + fy * (d11 - d10))
        grad_fy = m * (gx * (d10 - d00) + fx * (d11 - d01))
        grad_fx = tl.where(inside_x, grad_fx, 0.0) * OFFSET_SCALE
        grad_fy = tl.where(inside_y, grad_fy, 0.0) * OFFSET_SCALE
        tl.store(grad_mask_ptr + point, grad_m.to(grad_mask_ptr.dtype.element_ty), mask=q_ok)
        grad_fx = grad_fx.to(grad_offset_ptr.dtype.element_ty)
        grad_fy = grad_fy.to(grad_offset_ptr.dtype.element_ty)
        if PAIRED:
            tl.store(grad_offset_ptr.to(tl.pointer_type(PAIR_INT), bitcast=True) + point,
                     _pack_pair(grad_fx, grad_fy, PAIR_INT, HALF_INT), mask=q_ok)
        else:
            tl.store(grad_offset_ptr + point * 2, grad_fx, mask=q_ok)
            tl.store(grad_offset_ptr + point * 2 + 1, grad_fy, mask=q_ok)
        if NEED_INPUT_GRAD:
            top = gy * m
            bottom = fy * m
            _scatter(grad_input_ptr, r00, ok00, channels, c_ok, gout, top * gx, ROW,
                     ROWS_AXIS)
            _scatter(grad_input_ptr, r01, ok01, channels, c_ok, gout, top * fx, ROW,
                     ROWS_AXIS)
            _scatter(grad_input_ptr, r10, ok10, channels, c_ok, gout, bottom * gx, ROW,
                     ROWS_AXIS)
            _scatter(grad_input_ptr, r11, ok11, channels, c_ok, gout, bottom * fx, ROW,
                     ROWS_AXIS)


class LaunchConfig(NamedTuple):
    """Tile and launch parameters of one kernel call."""
    block_q: int
    block_c: int
    vec: int  # channels per vector access (16 bytes; 4 for 16-bit backward: fp32 atomics)
    num_warps: int
    num_stages: int

    def kernel_kwargs(self) -> dict:
        """The launch keywords: tile constants, warps and stages."""
        return dict(BLOCK_Q=self.block_q, BLOCK_C=self.block_c, VEC=self.vec,
                    ROWS_AXIS=rows_axis(), num_warps=self.num_warps,
                    num_stages=self.num_stages)


# Per GPU generation (compute capability), shape class -> ((forward BLOCK_Q, warps),
# (backward BLOCK_Q, warps)). A class is the padded channels per group (BLOCK_C) and the
# input element size in bytes. BLOCK_Q = 32 x warps gives every thread whole pixel rows
# (one geometry per (pixel, group)); BLOCK_Q = 16 x warps splits a row over two threads,
# halving the registers per thread for the widest rows. Chosen from the kernel report
# (no spills, at most 128 registers, occupancy); Ampere (sm_80/86/89) has no vector float32
# atomics, so its backward scatters element by element and needs more registers. Times on a
# GPU are measured by tools/analysis/gpu_check.py, which also times the neighbours.
LAUNCH_TABLES: Dict[int, Dict[Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]]]] = {
    90: {
        (8, 2): ((128, 4), (128, 4)),
        (8, 4): ((128, 4), (128, 4)),
        (16, 2): ((128, 4), (128, 4)),
        (16, 4): ((128, 4), (128, 4)),
        (32, 2): ((128, 4), (128, 4)),
        (32, 4): ((128, 4), (128, 4)),
        (64, 2): ((64, 4), (64, 4)),
        (64, 4): ((64, 4), (32, 4)),
    },
    80: {
        (8, 2): ((128, 4), (128, 4)),
        (8, 4): ((128, 4), (128, 4)),
        (16, 2): ((128, 4), (128, 4)),
        (16, 4): ((128, 4), (128, 4)),
        (32, 2): ((128, 4), (64, 4)),
        (32, 4): ((128, 4), (64, 4)),
        (64, 2): ((64, 4), (32, 4)),
        (64, 4): ((64, 4), (32, 4)),
    },
}
LAUNCH_TABLE = LAUNCH_TABLES[90]  # the H100/H200 table


def launch_config(group_channels: int, element_size: int, backward: bool,
                  input_grad: bool = True, arch: int = 90) -> LaunchConfig:
    """The tile and launch parameters for a group width, input element size and GPU.

    Args:
        group_channels: Channels per group.
        element_size: Bytes per input element.
        backward: For the backward kernel.
        input_grad: The backward computes the input gradient too.
        arch: Compute capability as ``10 * major + minor`` (90 for Hopper); the table of the
            newest generation not newer than it is used.

    Widths of up to 64 channels come from :data:`LAUNCH_TABLES`; wider groups get 32 pixels
    per program and warp.
    """
    table = LAUNCH_TABLES[max([a for a in LAUNCH_TABLES if a <= arch] or [min(LAUNCH_TABLES)])]
    block_c = max(2, triton.next_power_of_2(group_channels))
    entry = table.get((max(block_c, 8), min(element_size, 4)))
    if entry is not None:
        block_q, warps = entry[1] if backward else entry[0]
    else:
        block_q, warps = 32, 1
    # 16-byte accesses; 16-bit inputs in a backward with input gradient read 4 channels at a
    # time, the width of the float32 vector atomics, so that loads and atomics share one
    # register layout
    vec = 4 if backward and input_grad and element_size == 2 else max(1, 16 // element_size)
    return LaunchConfig(block_q, block_c, min(vec, block_c), warps, 1)


@functools.lru_cache(maxsize=None)
def rows_axis() -> int:
    """The axis of the pixel rows in the kernels' 3-D channel tiles for this Triton.

    Triton's coalescing pass gives the threads of a warp to the tile axes in an order set by
    their contiguity; the pixel axis and the sub-vector axis are both non-contiguous, and
    the tie goes to the lower axis in Triton 3.6 but to the higher one in 3.8 (seen in the
    compiled layouts, ``tools/analysis/kernel_report.py``: with the wrong order a row is
    spread over 4-8 threads and registers double). The pixel axis is put where the
    installed Triton hands out threads first.
    """
    version = tuple(int(p) for p in triton.__version__.split('.')[:2] if p.isdigit())
    return 0 if version < _ROWS_LAST_FROM else 1


@functools.lru_cache(maxsize=None)
def device_arch(device: torch.device) -> int:
    """``10 * major + minor`` of a CUDA device (90 for CPU tensors in the interpreter)."""
    if device.type != 'cuda':
        return 90
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


_PAIR_TYPES = {2: (tl.uint32, tl.uint16), 4: (tl.uint64, tl.uint32)}


def kernel_constexprs(geo: DCNv3Geometry, dtype: torch.dtype, wide_index: bool,
                      offset_element_size: int, paired: bool) -> dict:
    """The compile-time constants of both kernels for one call (shared with the report).

    Args:
        geo: The call's geometry.
        dtype: The input dtype (float64 inputs accumulate in float64).
        wide_index: 64-bit index arithmetic (see :func:`needs_wide_index`).
        offset_element_size: Bytes per offset element.
        paired: Read (and write the gradient of) each point's ``(dx, dy)`` as one word;
            needs 2- or 4-byte offsets aligned to the pair (see :func:`can_pair`).
    """
    pair_int, half_int = _PAIR_TYPES.get(offset_element_size, (tl.uint64, tl.uint32))
    return dict(PAIRED=paired, PAIR_INT=pair_int, HALF_INT=half_int, GROUPS=geo.group,
                CHANNELS=geo.group_channels, POINTS=geo.num_points,
                KERNEL_H=geo.kernel_h, KERNEL_W=geo.kernel_w, STRIDE_H=geo.stride_h,
                STRIDE_W=geo.stride_w, PAD_H=geo.pad_h, PAD_W=geo.pad_w,
                DIL_H=geo.dilation_h, DIL_W=geo.dilation_w, REMOVE_CENTER=geo.remove_center,
                OFFSET_SCALE=geo.offset_scale,
                ACC=tl.float64 if dtype == torch.float64 else tl.float32,
                WIDE_INDEX=wide_index)


def can_pair(*offsets: torch.Tensor) -> bool:
    """Whether ``(dx, dy)`` pairs of these offset tensors can be read as single words."""
    return all(t.element_size() in _PAIR_TYPES and t.data_ptr() % (2 * t.element_size()) == 0
               for t in offsets)


def needs_wide_index(*tensors: torch.Tensor) -> bool:
    """64-bit index arithmetic when an element index could pass 2**31 - 1."""
    return any(t.numel() >= _INT32_LIMIT for t in tensors)


def dcnv3_forward_triton(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                         geo: DCNv3Geometry) -> torch.Tensor:
    """DCNv3 forward on CUDA tensors (CPU tensors with ``TRITON_INTERPRET=1``).

    Arguments as validated by :func:`geometry.check_tensors`; returns ``(N, H_out, W_out,
    C)`` in the input dtype.
    """
    n, height, width, channels = input.shape
    _, out_h, out_w, _ = offset.shape
    input, offset, mask = input.contiguous(), offset.contiguous(), mask.contiguous()
    out = input.new_empty(n, out_h, out_w, channels)
    num_q = n * out_h * out_w
    if num_q == 0:
        return out
    cfg = launch_config(geo.group_channels, input.element_size(), backward=False,
                        arch=device_arch(input.device))
    grid = (triton.cdiv(num_q, cfg.block_q) * geo.group, )
    _dcnv3_forward_kernel[grid](
        input, offset, mask, out, num_q, height, width, out_w, out_h * out_w,
        **cfg.kernel_kwargs(),
        **kernel_constexprs(geo, input.dtype, needs_wide_index(input, offset, out),
                            offset.element_size(), can_pair(offset)))
    return out


def dcnv3_backward_triton(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                          grad_out: torch.Tensor, geo: DCNv3Geometry,
                          need_input_grad: bool = True) -> tuple:
    """Gradients ``(grad_input, grad_offset, grad_mask)`` of :func:`dcnv3_forward_triton`,
    each in its tensor's dtype; ``grad_input`` is zeros when ``need_input_grad`` is False.
    """
    n, height, width, channels = input.shape
    _, out_h, out_w, _ = offset.shape
    input, offset, mask = input.contiguous(), offset.contiguous(), mask.contiguous()
    grad_out = grad_out.contiguous()
    acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    # Atomics accumulate in float32 (float64 for float64 checks), cast at the end; the
    # offset and mask gradients are written once each, directly in their own dtypes.
    grad_input = torch.zeros(input.shape, dtype=acc_dtype, device=input.device) \
        if need_input_grad else input.new_empty(0, dtype=acc_dtype)
    grad_offset = torch.empty_like(offset)
    grad_mask = torch.empty_like(mask)
    num_q = n * out_h * out_w
    if num_q > 0:
        cfg = launch_config(geo.group_channels, input.element_size(), backward=True,
                            input_grad=need_input_grad, arch=device_arch(input.device))
        grid = (triton.cdiv(num_q, cfg.block_q) * geo.group, )
        _dcnv3_backward_kernel[grid](
            input, offset, mask, grad_out, grad_input, grad_offset, grad_mask, num_q, height,
            width, out_w, out_h * out_w, NEED_INPUT_GRAD=need_input_grad,
            **cfg.kernel_kwargs(),
            **kernel_constexprs(geo, input.dtype, needs_wide_index(input, offset, grad_out),
                                offset.element_size(), can_pair(offset, grad_offset)))
    if not need_input_grad:
        grad_input = torch.zeros_like(input)
    return grad_input.to(input.dtype), grad_offset, grad_mask
