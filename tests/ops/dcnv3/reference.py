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


def dcnv3_naive_torch(inp, offset, mask, kernel=(3, 3), stride=(1, 1), pad=(1, 1),
                      dilation=(1, 1), group=1, group_channels=None, offset_scale=1.0,
                      remove_center=False):
    """The same definition with torch ops in float64, differentiable by autograd.

    Vectorised over pixels, one sampling point and one bilinear corner at a time; corners
    outside the image contribute zero. Gradients come from autograd (the derivative of
    ``floor`` is zero, so the offset gradient is that of the bilinear weights), which makes
    this the backward reference too.
    """
    import torch
    inp, offset, mask = (t.double() for t in (inp, offset, mask))
    kh, kw = kernel
    sh, sw = stride
    ph, pw = pad
    dh, dw = dilation
    n, height, width, channels = inp.shape
    gc = group_channels or channels // group
    out_h = (height + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (width + 2 * pw - (dw * (kw - 1)) - 1) // sw + 1
    points = [(i * dw - (dw * (kw - 1)) // 2, j * dh - (dh * (kh - 1)) // 2)
              for i in range(kw) for j in range(kh)
              if not (remove_center and i == kw // 2 and j == kh // 2)]
    num_points = len(points)
    cy = (torch.arange(out_h, dtype=torch.float64) * sh + (dh * (kh - 1)) // 2 - ph)
    cx = (torch.arange(out_w, dtype=torch.float64) * sw + (dw * (kw - 1)) // 2 - pw)
    planes = inp.view(n, height * width, group, gc)
    batch = torch.arange(n).view(n, 1, 1)
    outs = []
    for g in range(group):
        acc = inp.new_zeros(n, out_h, out_w, gc)
        for k, (gx, gy) in enumerate(points):
            base = (g * num_points + k) * 2
            x = cx.view(1, 1, out_w) + (gx + offset[..., base]) * offset_scale
            y = cy.view(1, out_h, 1) + (gy + offset[..., base + 1]) * offset_scale
            m = mask[..., g * num_points + k]
            x0, y0 = torch.floor(x).detach(), torch.floor(y).detach()
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
                    rows = (yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1)).long()
                    values = planes[batch, rows, g]  # (n, out_h, out_w, gc)
                    weight = torch.where(inside, wy * wx * m, torch.zeros_like(m))
                    acc = acc + values * weight.unsqueeze(-1)
        outs.append(acc)
    return torch.cat(outs, dim=-1)
