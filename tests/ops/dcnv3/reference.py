"""An independent, naive DCNv3 reference: one output value at a time, in float64.

Written from the operator's definition (internimage.md section 2.1), sharing no code with
m3i_mm.ops: per output pixel, group and channel, the mask-weighted sum over the sampling
points of a zero-padded bilinear sample at
``centre + (grid_k + offset_gk) * offset_scale``, points ordered x-major.
"""
import math

import numpy as np


def bilinear_zero_padded(plane: np.ndarray, y: float, x: float) -> float:
    height, width = plane.shape
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                total += wy * wx * plane[yy, xx]
    return total


def dcnv3_naive(inp, offset, mask, kernel=(3, 3), stride=(1, 1), pad=(1, 1),
                dilation=(1, 1), group=1, group_channels=None, offset_scale=1.0,
                remove_center=False) -> np.ndarray:
    inp, offset, mask = (np.asarray(a, dtype=np.float64) for a in (inp, offset, mask))
    kh, kw = kernel
    sh, sw = stride
    ph, pw = pad
    dh, dw = dilation
    n, height, width, channels = inp.shape
    gc = group_channels or channels // group
    out_h = (height + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (width + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    points = []
    for i in range(kw):  # x-major: the width index is the outer loop
        for j in range(kh):
            if remove_center and i == kw // 2 and j == kh // 2:
                continue
            points.append((i * dw - (dw * (kw - 1)) // 2, j * dh - (dh * (kh - 1)) // 2))
    num_points = len(points)
    out = np.zeros((n, out_h, out_w, group * gc))
    for b in range(n):
        for ho in range(out_h):
            for wo in range(out_w):
                cy = (dh * (kh - 1)) // 2 - ph + ho * sh
                cx = (dw * (kw - 1)) // 2 - pw + wo * sw
                for g in range(group):
                    for k, (gx, gy) in enumerate(points):
                        base = (g * num_points + k) * 2
                        x = cx + (gx + offset[b, ho, wo, base]) * offset_scale
                        y = cy + (gy + offset[b, ho, wo, base + 1]) * offset_scale
                        m = mask[b, ho, wo, g * num_points + k]
                        for c in range(gc):
                            ch = g * gc + c
                            out[b, ho, wo, ch] += m * bilinear_zero_padded(inp[b, :, :, ch], y, x)
    return out
