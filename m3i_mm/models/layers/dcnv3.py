"""The DCNv3 module of InternImage: projections, offset/mask branch and the DCNv3 core.

Channels-last in and out ``(N, H, W, C)``. Parameter names follow the official module
(``input_proj``, ``output_proj``, ``offset``, ``mask``, ``dw_conv``,
``center_feature_scale_proj_weight/bias``); inside ``dw_conv`` the official Sequential
indices ``0`` and ``1.1`` are ``conv`` and ``norm`` here (the converter maps them).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from m3i_mm.ops.dcnv3 import cpu_ext, make_geometry
from m3i_mm.ops.dcnv3.flops import register_flop_counters
from m3i_mm.ops.dcnv3.function import dcnv3_checked, resolve_backend
from m3i_mm.ops.dcnv3.pytorch import softmax_over_points

# mmengine's get_model_complexity_info (every OpenMMLab get_flops tool) counts the DCNv3 core
register_flop_counters()

_ACTIVATIONS = {'GELU': nn.GELU, 'ReLU': nn.ReLU, 'SiLU': nn.SiLU}


def build_activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f'unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}')
    return _ACTIVATIONS[name]()


def eager_inference() -> bool:
    """True in plain eager inference (no autograd; not tracing, compiling or exporting):
    layers may then overwrite their own intermediate tensors and keep inference-only caches.
    Traced and compiled graphs get the pure functional form."""
    return not (torch.is_grad_enabled() or torch.compiler.is_compiling()
                or torch.jit.is_tracing() or torch.jit.is_scripting()
                or torch.onnx.is_in_onnx_export())


def activate(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``; in eager inference in place on ``x``, which must be a fresh intermediate
    of the caller (this saves an allocation as large as ``x``: 0.4 ms per call for the
    3 MB stage-1 MLP activations of InternImage-T on 2 cores, mostly page faults)."""
    if not eager_inference():
        return act(x)
    if isinstance(act, nn.GELU):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    if isinstance(act, nn.ReLU):
        return torch.relu_(x)
    if isinstance(act, nn.SiLU):
        return F.silu(x, inplace=True)
    return act(x)


class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` for channels-last inputs (NCHW views of ``(N, H, W, C)`` maps).

    oneDNN wants a channels-last weight for them. The parameter stays contiguous (FSDP2
    requires it); in eager inference on the CPU the weight is copied to channels-last for
    the call. No copy is cached across calls: weights change in place without a version
    bump (EMA updates and mmengine's EMAHook swap work on ``.data``), and a stale copy
    would silently compute with old weights.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if x.device.type == 'cpu' and eager_inference() and x.is_contiguous(
                memory_format=torch.channels_last):
            weight = weight.detach().contiguous(memory_format=torch.channels_last)
        return self._conv_forward(x, weight, self.bias)


class DepthwiseConvNormAct(nn.Module):
    """Depth-wise conv, LayerNorm, activation on channels-last maps (no layout copies).

    The NCHW view of a channels-last tensor is in ``torch.channels_last`` memory format,
    which convolution kernels take as is.
    """

    def __init__(self, channels: int, kernel_size: int = 3, act_layer: str = 'GELU',
                 eps: float = 1e-6) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f'dw_kernel_size must be odd to keep the size, got {kernel_size}')
        self.conv = ChannelsLastConv2d(channels, channels, kernel_size,
                                       padding=(kernel_size - 1) // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=eps)
        self.act = build_activation(act_layer)

    def forward(self, x: torch.Tensor, cpu_kernel: bool = True) -> torch.Tensor:
        """Args: x ``(N, H, W, C)``; cpu_kernel: may use the CPU extension (DCNv3 passes
        whether its own backend resolved to ``'cpu'``)."""
        if cpu_kernel and self._fused(x):
            return cpu_ext.dwconv_norm_gelu(x, self.conv.weight, self.conv.bias,
                                            self.norm.weight, self.norm.bias, self.norm.eps)
        y = self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return activate(self.act, self.norm(y))

    def _fused(self, x: torch.Tensor) -> bool:
        """Whether the CPU extension's fused kernel computes this call: eager CPU inference
        in float32/float64 without autocast, exact GELU (3x faster than the three aten ops
        at stage 3 of InternImage-T, 2 cores)."""
        return (x.device.type == 'cpu' and x.dtype in (torch.float32, torch.float64)
                and isinstance(self.act, nn.GELU) and self.act.approximate == 'none'
                and eager_inference() and not torch.is_autocast_enabled('cpu')
                and cpu_ext.extension_available())


class DCNv3(nn.Module):
    """Deformable convolution v3 (InternImage, CVPR 2023) as a token mixer.

    Args:
        channels: Input and output channels.
        kernel_size: Sampling kernel size (square).
        dw_kernel_size: Kernel of the depth-wise conv predicting offsets and masks;
            defaults to ``kernel_size``.
        stride: Must be 1: offsets are predicted at the input resolution.
        pad: Padding of the sampling grid; with ``dilation`` it must keep the size.
        dilation: Dilation of the sampling grid.
        group: Number of groups (each with its own offsets and masks).
        offset_scale: Scales the sampling grid and the offsets.
        act_layer: Activation after the depth-wise conv ('GELU', 'ReLU', 'SiLU').
        norm_layer: Only 'LN' (as in every InternImage variant).
        center_feature_scale: Blend the output with the projected input by a per-group
            sigmoid gate predicted from the depth-wise features (InternImage-H/G).
        remove_center: Drop the kernel centre from the sampling points.
        backend: DCNv3 core backend ('auto', 'pytorch', 'triton', 'cuda', 'cpu').
    """

    def __init__(self,
                 channels: int = 64,
                 kernel_size: int = 3,
                 dw_kernel_size: Optional[int] = None,
                 stride: int = 1,
                 pad: int = 1,
                 dilation: int = 1,
                 group: int = 4,
                 offset_scale: float = 1.0,
                 act_layer: str = 'GELU',
                 norm_layer: str = 'LN',
                 center_feature_scale: bool = False,
                 remove_center: bool = False,
                 backend: str = 'auto') -> None:
        super().__init__()
        if channels % group != 0:
            raise ValueError(f'DCNv3: channels ({channels}) must be divisible by group ({group})')
        if norm_layer != 'LN':
            raise ValueError(f'DCNv3: only norm_layer="LN" is supported, got {norm_layer!r}')
        if stride != 1 or 2 * pad != dilation * (kernel_size - 1):
            raise ValueError(
                'DCNv3 module keeps the spatial size (offsets are predicted per input pixel): '
                f'needs stride=1 and pad=dilation*(kernel_size-1)/2, got stride={stride}, '
                f'pad={pad}, dilation={dilation}, kernel_size={kernel_size}')
        self.channels = channels
        self.kernel_size = kernel_size
        self.dw_kernel_size = dw_kernel_size or kernel_size
        self.stride = stride
        self.pad = pad
        self.dilation = dilation
        self.group = group
        self.group_channels = channels // group
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale
        self.remove_center = bool(remove_center)
        self.backend = backend
        self.geometry = make_geometry(channels, kernel_size, stride, pad, dilation, group,
                                      self.group_channels, offset_scale, self.remove_center)
        points = self.geometry.num_points

        self.dw_conv = DepthwiseConvNormAct(channels, self.dw_kernel_size, act_layer)
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start at zero, masks uniform, projections Xavier, the CFS gate at 0.5."""
        for linear in (self.offset, self.mask):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        for linear in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        if self.center_feature_scale:
            nn.init.zeros_(self.center_feature_scale_proj_weight)
            nn.init.zeros_(self.center_feature_scale_proj_bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Args: input ``(N, H, W, C)``. Returns ``(N, H, W, C)``."""
        if input.dim() != 4 or input.shape[-1] != self.channels:
            raise ValueError(f'DCNv3 expects (N, H, W, {self.channels}) channels-last input, '
                             f'got {tuple(input.shape)}')
        backend = resolve_backend(self.backend, input.device)  # once, for both branches
        x = self.input_proj(input)
        # the fused native offset branch only where the op itself runs natively on the CPU
        context = self.dw_conv(input, cpu_kernel=backend == 'cpu')
        # offsets and mask logits have the shapes the op wants by construction; the masks
        # are the softmax of the logits over each group's points (inside the op)
        out = dcnv3_checked(x, self.offset(context), self.mask(context), self.geometry,
                            backend, softmax_mask=True)
        if self.center_feature_scale:
            gate = torch.sigmoid(F.linear(context, self.center_feature_scale_proj_weight,
                                          self.center_feature_scale_proj_bias))
            gate = gate.repeat_interleave(self.group_channels, dim=-1)
            out = torch.lerp(out, x.to(out.dtype), gate.to(out.dtype))
        return self.output_proj(out)

    def offsets_and_masks(self, input: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """What this layer's offset branch predicts for ``input``, as the core op takes it.

        The sampling locations of the layer are then
        :func:`m3i_mm.ops.dcnv3.pytorch.sampling_locations` of the offsets with
        :attr:`geometry` (visualisation, analysis); :meth:`forward` is unchanged.

        Args:
            input: ``(N, H, W, C)``, the layer's input.

        Returns:
            ``offset`` ``(N, H, W, G*P*2)`` (layout ``[g][k][(dx, dy)]``) and ``mask``
            ``(N, H, W, G*P)``: the softmax over each group's points (what multiplies the
            samples; ``forward`` passes the logits to the op, which normalises them alike).
        """
        backend = resolve_backend(self.backend, input.device)
        context = self.dw_conv(input, cpu_kernel=backend == 'cpu')
        return self.offset(context), softmax_over_points(self.mask(context), self.geometry)

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, kernel_size={self.kernel_size}, '
                f'group={self.group}, offset_scale={self.offset_scale}, '
                f'center_feature_scale={self.center_feature_scale}, '
                f'remove_center={self.remove_center}, backend={self.backend!r}')
