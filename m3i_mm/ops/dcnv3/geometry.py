"""Argument checking and sampling geometry shared by every DCNv3 backend."""
import math
import numbers
from dataclasses import dataclass
from typing import Tuple, Union

import torch

IntPair = Union[int, Tuple[int, int]]


def _pair(value: IntPair, name: str) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f'dcnv3: {name} must be an int or a pair of ints, got {value!r}')


@dataclass(frozen=True)
class DCNv3Geometry:
    """Static parameters of one DCNv3 call (everything but the tensors)."""
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    group: int
    group_channels: int
    offset_scale: float
    remove_center: bool

    @property
    def num_points(self) -> int:
        return self.kernel_h * self.kernel_w - int(self.remove_center)

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        out_h = (height + 2 * self.pad_h - (self.dilation_h * (self.kernel_h - 1) + 1)) \
            // self.stride_h + 1
        out_w = (width + 2 * self.pad_w - (self.dilation_w * (self.kernel_w - 1) + 1)) \
            // self.stride_w + 1
        return out_h, out_w

    def as_args(self) -> tuple:
        """Positional arguments in the order of the custom op's schema."""
        return (self.kernel_h, self.kernel_w, self.stride_h, self.stride_w, self.pad_h,
                self.pad_w, self.dilation_h, self.dilation_w, self.group, self.group_channels,
                float(self.offset_scale), bool(self.remove_center))

    def kernel_grid(self, device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor,
                                                                           torch.Tensor]:
        """The fixed sampling grid (dx, dy) per point, x-major (k = i * kernel_h + j).

        Returns:
            Two tensors of shape ``(num_points,)``: the x and y displacement of each point
            from the kernel centre, in input pixels (before ``offset_scale``).
        """
        xs = torch.arange(self.kernel_w, device=device, dtype=dtype) * self.dilation_w \
            - (self.dilation_w * (self.kernel_w - 1)) // 2
        ys = torch.arange(self.kernel_h, device=device, dtype=dtype) * self.dilation_h \
            - (self.dilation_h * (self.kernel_h - 1)) // 2
        grid_x = xs[:, None].expand(self.kernel_w, self.kernel_h).reshape(-1)
        grid_y = ys[None, :].expand(self.kernel_w, self.kernel_h).reshape(-1)
        if self.remove_center:
            keep = torch.ones(grid_x.numel(), dtype=torch.bool, device=device)
            keep[(self.kernel_w // 2) * self.kernel_h + self.kernel_h // 2] = False
            grid_x, grid_y = grid_x[keep], grid_y[keep]
        return grid_x, grid_y

    def centres(self, out_h: int, out_w: int, device: torch.device,
                dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """Kernel centres of the output pixels in unpadded input coordinates.

        Returns:
            ``(centre_y (out_h,), centre_x (out_w,))``.
        """
        cy = torch.arange(out_h, device=device, dtype=dtype) * self.stride_h \
            + ((self.dilation_h * (self.kernel_h - 1)) // 2 - self.pad_h)
        cx = torch.arange(out_w, device=device, dtype=dtype) * self.stride_w \
            + ((self.dilation_w * (self.kernel_w - 1)) // 2 - self.pad_w)
        return cy, cx


def make_geometry(channels: int, kernel_size: IntPair, stride: IntPair, padding: IntPair,
                  dilation: IntPair, group: int, group_channels: int, offset_scale: float,
                  remove_center: bool) -> DCNv3Geometry:
    """Validate the static arguments and bundle them.

    Raises:
        ValueError: when ``channels != group * group_channels``, sizes are not positive,
            ``offset_scale`` is not a finite number > 0, or ``remove_center`` is asked for
            with a kernel that has no single centre or nothing but its centre (1x1).
    """
    kh, kw = _pair(kernel_size, 'kernel_size')
    sh, sw = _pair(stride, 'stride')
    ph, pw = _pair(padding, 'padding')
    dh, dw = _pair(dilation, 'dilation')
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f'dcnv3: kernel_size {(kh, kw)}, stride {(sh, sw)} and dilation '
                         f'{(dh, dw)} must be >= 1 and padding {(ph, pw)} >= 0')
    if group < 1 or group_channels < 1:
        raise ValueError(f'dcnv3: group ({group}) and group_channels ({group_channels}) '
                         'must be >= 1')
    if channels != group * group_channels:
        raise ValueError(f'dcnv3: input has {channels} channels but group x group_channels '
                         f'= {group} x {group_channels} = {group * group_channels}')
    if isinstance(offset_scale, bool) or not isinstance(offset_scale, numbers.Real):
        raise TypeError(f'dcnv3: offset_scale must be a number, got '
                        f'{type(offset_scale).__name__} {offset_scale!r}')
    if not math.isfinite(float(offset_scale)) or offset_scale <= 0:
        raise ValueError(f'dcnv3: offset_scale must be a finite number > 0 (it scales the '
                         f'sampling grid and the offsets), got {offset_scale!r}')
    if remove_center and (kh != kw or kh % 2 == 0):
        raise ValueError(f'dcnv3: remove_center needs an odd square kernel, got {(kh, kw)}')
    if remove_center and kh == 1:
        raise ValueError('dcnv3: remove_center with a 1x1 kernel leaves no sampling point (the '
                         'centre is the only one); use kernel_size >= 3 or remove_center=False')
    return DCNv3Geometry(kh, kw, sh, sw, ph, pw, dh, dw, group, group_channels,
                         float(offset_scale), bool(remove_center))


def check_tensors(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                  geo: DCNv3Geometry) -> Tuple[int, int]:
    """Check shapes, dtypes and devices; return the output size ``(out_h, out_w)``.

    Raises:
        ValueError / TypeError: naming the offending tensor and what was expected.
    """
    for name, t in (('input', input), ('offset', offset), ('mask', mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f'dcnv3: {name} must be a torch.Tensor, got {type(t).__name__}')
        if not t.is_floating_point():
            raise TypeError(f'dcnv3: {name} must be a floating-point tensor, got {t.dtype}')
        if t.dim() != 4:
            raise ValueError(f'dcnv3: {name} must be 4-D channels-last (N, H, W, C), got shape '
                             f'{tuple(t.shape)}')
        if t.device != input.device:
            raise ValueError(f'dcnv3: {name} is on {t.device} but input is on {input.device}')
    n, h, w, _ = input.shape
    out_h, out_w = geo.output_size(h, w)
    if out_h < 1 or out_w < 1:
        raise ValueError(f'dcnv3: input of size {h}x{w} is too small for kernel '
                         f'{(geo.kernel_h, geo.kernel_w)}, padding {(geo.pad_h, geo.pad_w)}, '
                         f'dilation {(geo.dilation_h, geo.dilation_w)}')
    points = geo.num_points
    expected = {
        'offset': (n, out_h, out_w, geo.group * points * 2),
        'mask': (n, out_h, out_w, geo.group * points),
    }
    for name, t in (('offset', offset), ('mask', mask)):
        if tuple(t.shape) != expected[name]:
            raise ValueError(
                f'dcnv3: {name} must have shape (N, H_out, W_out, '
                f'{"group*points*2" if name == "offset" else "group*points"}) = '
                f'{expected[name]} (group={geo.group}, points={points}), got {tuple(t.shape)}')
    return out_h, out_w
