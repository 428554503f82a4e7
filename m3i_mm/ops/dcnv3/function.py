"""The public DCNv3 function: argument checks, autocast, backend choice, custom op.

Backends:

* ``pytorch``: plain PyTorch ops (:mod:`.pytorch`); every device and float dtype, autograd,
  ``torch.compile`` and ONNX export trace straight through it.
* ``triton``: Triton kernels (:mod:`.triton_kernels`), CUDA tensors (or CPU tensors with
  ``TRITON_INTERPRET=1``).
* ``cuda``: the CUDA C++ extension (:mod:`.cuda_ext`), prebuilt at install time or compiled
  on first use.
* ``cpu``: the CPU C++ extension (:mod:`.cpu_ext`), compiled on first use (or by
  ``make install``) and cached; CPU tensors. Its op carries its own autograd and fake
  kernels (``torch.ops.m3i_mm_dcnv3_cpu.forward``) and can fuse the mask softmax.

``triton`` and ``cuda`` run behind the ``torch.library`` custom ops
``m3i_mm::dcnv3_forward`` and ``m3i_mm::dcnv3_backward`` (with fake implementations), so
``torch.compile`` and ``torch.export`` see one opaque op instead of breaking the graph;
``pytorch`` does too while ``torch.jit.trace`` records outside ONNX export, so that a traced
graph has one DCNv3 node whichever backend runs (FLOP counting, ``m3i_mm.ops.dcnv3.flops``).

``backend='auto'`` picks ``triton`` for CUDA tensors when Triton is importable, else ``cuda``
when the extension is available, else ``pytorch``; for CPU tensors ``cpu`` when its
extension builds and loads (not while exporting to ONNX), else ``pytorch``. The
environment variable ``M3I_MM_DCNV3_BACKEND`` overrides ``'auto'``.
"""
import functools
import os
from typing import Optional, Tuple

import torch

from m3i_mm.utils.errors import UsageError
from .geometry import DCNv3Geometry, IntPair, check_tensors, make_geometry
from .pytorch import dcnv3_pytorch, softmax_over_points

BACKENDS = ('pytorch', 'triton', 'cuda', 'cpu')
ENV_BACKEND = 'M3I_MM_DCNV3_BACKEND'


class DCNv3BackendError(UsageError, ValueError):
    """A DCNv3 backend that does not exist or cannot run here (a setting of the user's:
    ``dcn_backend`` or ``M3I_MM_DCNV3_BACKEND``); the tools print it as one line."""


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether the Triton kernels can be imported (Triton installed)."""
    try:
        from . import triton_kernels  # noqa: F401
    except ImportError:
        return False
    return True


def triton_interpreting() -> bool:
    return os.environ.get('TRITON_INTERPRET', '0') == '1'


def _kernels(backend: str):
    if backend == 'pytorch':
        from .pytorch import dcnv3_backward_pytorch, dcnv3_forward_pytorch

        def backward(input, offset, mask, grad_out, geo, need_input_grad):
            grad_input, grad_offset, grad_mask = dcnv3_backward_pytorch(
                input, offset, mask, grad_out, geo, need_input_grad)
            # the op returns three tensors: zeros for an input gradient not asked for
            return (torch.zeros_like(input) if grad_input is None else grad_input,
                    grad_offset, grad_mask)

        return dcnv3_forward_pytorch, backward
    if backend == 'triton':
        from . import triton_kernels
        return triton_kernels.dcnv3_forward_triton, triton_kernels.dcnv3_backward_triton
    if backend == 'cuda':
        from . import cuda_ext
        return cuda_ext.dcnv3_forward_cuda, cuda_ext.dcnv3_backward_cuda
    raise ValueError(f'dcnv3: no custom-op kernels for backend {backend!r}')


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``'auto'`` (or the environment override) into a concrete backend for ``device``.

    Raises:
        DCNv3BackendError: (a ValueError) for unknown names, or a backend that cannot run
            on ``device``.
    """
    if backend == 'auto':
        backend = os.environ.get(ENV_BACKEND, 'auto') or 'auto'
        if backend not in ('auto', ) + BACKENDS:
            raise DCNv3BackendError(f'{ENV_BACKEND}={backend!r} is not a DCNv3 backend; set it '
                                    f'to one of {", ".join(("auto", ) + BACKENDS)} or unset it')
    if backend == 'auto':
        if device.type == 'cuda':
            if triton_available():
                return 'triton'
            from . import cuda_ext
            if cuda_ext.extension_available():
                return 'cuda'
        if device.type == 'cpu' and not torch.onnx.is_in_onnx_export():
            from . import cpu_ext
            if cpu_ext.extension_available():
                return 'cpu'
        return 'pytorch'
    if backend not in BACKENDS:
        raise DCNv3BackendError(f'dcnv3: unknown backend {backend!r}; choose one of '
                                f"{('auto', ) + BACKENDS} (or set {ENV_BACKEND})")
    if backend == 'triton':
        if not triton_available():
            raise DCNv3BackendError('dcnv3: backend "triton" needs the triton package')
        if device.type != 'cuda' and not triton_interpreting():
            raise DCNv3BackendError(
                f'dcnv3: backend "triton" runs on CUDA tensors, got {device} '
                '(TRITON_INTERPRET=1 runs it on CPU, slowly, for checks)')
    if backend == 'cuda' and device.type != 'cuda':
        raise DCNv3BackendError(f'dcnv3: backend "cuda" runs on CUDA tensors, got {device}')
    if backend == 'cpu':
        if device.type != 'cpu':
            raise DCNv3BackendError(f'dcnv3: backend "cpu" runs on CPU tensors, got {device}')
        from . import cpu_ext
        reason = cpu_ext.unavailable_reason()
        if reason:
            raise DCNv3BackendError(f'dcnv3: backend "cpu" is unavailable: {reason}; use '
                                    'backend="pytorch" or "auto"')
    return backend


def _geometry(input: torch.Tensor, kernel_h: int, kernel_w: int, stride_h: int,
              stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
              group: int, group_channels: int, offset_scale: float,
              remove_center: bool) -> DCNv3Geometry:
    return DCNv3Geometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                         dilation_w, group, group_channels, offset_scale, remove_center)


@torch.library.custom_op('m3i_mm::dcnv3_forward', mutates_args=())
def dcnv3_forward_op(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                     kernel_h: int, kernel_w: int, stride_h: int, stride_w: int, pad_h: int,
                     pad_w: int, dilation_h: int, dilation_w: int, group: int,
                     group_channels: int, offset_scale: float, remove_center: bool,
                     backend: str) -> torch.Tensor:
    geo = _geometry(input, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                    dilation_w, group, group_channels, offset_scale, remove_center)
    forward, _ = _kernels(backend)
    return forward(input, offset, mask, geo)


@dcnv3_forward_op.register_fake
def _dcnv3_forward_fake(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                        pad_w, dilation_h, dilation_w, group, group_channels, offset_scale,
                        remove_center, backend):
    return input.new_empty(input.shape[0], offset.shape[1], offset.shape[2], input.shape[3])


@torch.library.custom_op('m3i_mm::dcnv3_backward', mutates_args=())
def dcnv3_backward_op(grad_out: torch.Tensor, input: torch.Tensor, offset: torch.Tensor,
                      mask: torch.Tensor, kernel_h: int, kernel_w: int, stride_h: int,
                      stride_w: int, pad_h: int, pad_w: int, dilation_h: int,
                      dilation_w: int, group: int, group_channels: int, offset_scale: float,
                      remove_center: bool, backend: str,
                      need_input_grad: bool) -> Tuple[torch.Tensor, torch.Tensor,
                                                      torch.Tensor]:
    geo = _geometry(input, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                    dilation_w, group, group_channels, offset_scale, remove_center)
    _, backward = _kernels(backend)
    return backward(input, offset, mask, grad_out, geo, need_input_grad)


@dcnv3_backward_op.register_fake
def _dcnv3_backward_fake(grad_out, input, offset, mask, *args):
    return torch.empty_like(input), torch.empty_like(offset), torch.empty_like(mask)


def _setup_context(ctx, inputs, output):
    input, offset, mask = inputs[:3]
    ctx.save_for_backward(input, offset, mask)
    ctx.static_args = inputs[3:]


def _backward(ctx, grad_out):
    input, offset, mask = ctx.saved_tensors
    grad_input, grad_offset, grad_mask = torch.ops.m3i_mm.dcnv3_backward(
        grad_out, input, offset, mask, *ctx.static_args, ctx.needs_input_grad[0])
    return (grad_input if ctx.needs_input_grad[0] else None, grad_offset, grad_mask,
            *([None] * len(ctx.static_args)))


torch.library.register_autograd('m3i_mm::dcnv3_forward', _backward,
                                setup_context=_setup_context)


def dcnv3(input: torch.Tensor,
          offset: torch.Tensor,
          mask: torch.Tensor,
          kernel_size: IntPair = 3,
          stride: IntPair = 1,
          padding: IntPair = 1,
          dilation: IntPair = 1,
          group: Optional[int] = None,
          group_channels: Optional[int] = None,
          offset_scale: float = 1.0,
          remove_center: bool = False,
          backend: str = 'auto',
          softmax_mask: bool = False) -> torch.Tensor:
    """Deformable convolution v3 core (sampling and aggregation, no projections).

    Semantics are those of the official ``DCNv3Function``: for output pixel ``p`` of group
    ``g``, ``out = sum_k mask[g,k] * bilinear(x_g, centre(p) + (grid_k + offset[g,k]) *
    offset_scale)`` with zero padding, points ordered x-major.

    Args:
        input: ``(N, H, W, group * group_channels)``, channels-last.
        offset: ``(N, H_out, W_out, group * P * 2)``, laid out ``[g][k][(dx, dy)]``, where
            ``P = kernel_h * kernel_w - remove_center``.
        mask: ``(N, H_out, W_out, group * P)``, laid out ``[g][k]`` (softmax-normalised in
            InternImage, but any values work).
        kernel_size, stride, padding, dilation: ints or ``(h, w)`` pairs.
        group: Number of groups. Defaults to ``channels // group_channels``.
        group_channels: Channels per group. Defaults to ``channels // group``.
        offset_scale: Scales both the fixed grid and the offsets.
        remove_center: Drop the kernel centre (odd square kernels only).
        backend: ``'auto'``, ``'pytorch'``, ``'triton'``, ``'cuda'`` or ``'cpu'``.
        softmax_mask: ``mask`` holds logits: the softmax over the points of each group
            (InternImage's normalisation) is applied first, fused into the kernels by the
            ``cpu`` backend (gradients then refer to the logits).

    Returns:
        ``(N, H_out, W_out, group * group_channels)`` in the input's dtype (the autocast
        dtype under autocast).
    """
    if not isinstance(input, torch.Tensor) or input.dim() != 4:
        shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f'dcnv3: input must be 4-D channels-last (N, H, W, C), got {shape}')
    channels = input.shape[-1]
    if group is None and group_channels is None:
        raise ValueError('dcnv3: give group or group_channels')
    if group is None:
        group = channels // group_channels if group_channels else 0
    if group_channels is None:
        group_channels = channels // group if group else 0
    geo = make_geometry(channels, kernel_size, stride, padding, dilation, group,
                        group_channels, offset_scale, remove_center)
    check_tensors(input, offset, mask, geo)
    return dcnv3_checked(input, offset, mask, geo, backend, softmax_mask)


def dcnv3_checked(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                  geo: DCNv3Geometry, backend: str = 'auto',
                  softmax_mask: bool = False) -> torch.Tensor:
    """:func:`dcnv3` without the argument checks, for callers whose geometry comes from
    :func:`make_geometry` and whose tensors have the shapes :func:`check_tensors` wants by
    construction (the DCNv3 module: 30 calls per InternImage-T image, ~25 us each saved)."""
    device_type = input.device.type
    if torch.is_autocast_enabled(device_type):
        input = input.to(torch.get_autocast_dtype(device_type))
        with torch.autocast(device_type, enabled=False):
            return _dispatch(input, offset, mask, geo, backend, softmax_mask)
    return _dispatch(input, offset, mask, geo, backend, softmax_mask)


def _dispatch(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
              geo: DCNv3Geometry, backend: str, softmax_mask: bool = False) -> torch.Tensor:
    backend = resolve_backend(backend, input.device)
    if backend == 'cpu':
        from . import cpu_ext
        return cpu_ext.dcnv3_cpu(input, offset, mask, geo, softmax_mask)
    if softmax_mask:
        mask = softmax_over_points(mask, geo)
    if backend == 'pytorch' and not _one_traced_node():
        return dcnv3_pytorch(input, offset, mask, geo)
    return torch.ops.m3i_mm.dcnv3_forward(input, offset, mask, *geo.as_args(), backend)


def _one_traced_node() -> bool:
    """While ``torch.jit.trace`` records (TorchScript, and the FLOP counters that trace:
    mmengine's ``FlopAnalyzer``), the ``pytorch`` backend runs behind the custom op too, so
    every backend is one ``m3i_mm::dcnv3_forward`` node (``m3i_mm.ops.dcnv3.flops`` counts
    it) instead of ~40 index and element-wise ops. ONNX export (which traces as well) keeps
    the plain ops: ONNX has no such operator."""
    return torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
