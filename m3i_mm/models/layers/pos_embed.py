"""2-D sin-cos position embeddings and SiameseIM's relative (cross-view) embedding.

Layout of the plain grid embedding of width ``D`` (as in MAE / SiameseIM ``util/pos_embed.py``,
read for the formula, not copied)::

    [sin(h w_k), cos(h w_k), sin(w w_k), cos(w w_k)],   w_k = 10000 ** (-k / (D / 4)),
                                                         k = 0 .. D/4 - 1

for the patch in row ``h`` and column ``w`` (integer indices), token order row-major.

The relative embedding of a *target* view's patches in the *input* view's frame
(M3I design note section 3.4; SiameseIM ``get_2d_sincos_pos_embed_relative``) has width
``2 * D``: the first ``D`` channels are the layout above evaluated at the real-valued
position of each target patch centre in input-patch units, the last ``D`` channels are
``[sin(s_h w_k), cos(s_h w_k), sin(s_w w_k), cos(s_w w_k)]`` with ``s = 10 * log(d)`` the
scale embedding. A Linear(2D -> D) in the decoder maps it to the decoder width (SiameseIM's
``decoder_pos_mlp``). For two identical views it is ``[plain grid embedding, zero-scale part]``
with the zero-scale part ``[0, 1, 0, 1]`` blocks of ``D / 4``.

Geometry. A view is a crop box ``(x1, y1, x2, y2)`` of the original image, in original-image
pixels, resized to a grid of ``gh x gw`` patches and then optionally flipped horizontally.
For target patch ``(r, c)``::

    dh = hb / ha,  dw = wb / wa                       relative scales (b: target, a: input)
    di = (y1b - y1a) / ha                              relative offsets, in units of the
    dj = (x1b - x1a) / wa   (no flip)                  input crop size
    dj = (x2a - x2b) / wa   (both views flipped)
    h  = dh * (r + 0.5) + di * gh - 0.5
    w  = dw * (c + 0.5) + dj * gw - 0.5                 no relative flip
    w  = fj * gw - dw * (c + 0.5) - 0.5                 relative flip (exactly one view
    fj = (x2a - x1b) / wa  if the input is flipped     flipped): the target's columns run
    fj = (x2b - x1a) / wa  if the target is flipped    the other way in the input frame

This is SiameseIM's formula (its ``delta_i, delta_j, delta_h, delta_w, flip_delta_j`` and
``grid_size``) re-expressed for boxes in unflipped image coordinates: SiameseIM flips the
image *before* cropping and records ``(i, j, h, w)`` in the flipped image of width ``W``; its
box corresponds to ``(W - j - w, i, W - j, i + h)`` here when flipped, ``(j, i, j + w, i + h)``
otherwise. ``gh``/``gw`` are numbers of patches per side (SiameseIM's ``grid_size``), so
``di * gh`` is the offset in input-patch units.
"""
from typing import Sequence, Tuple, Union

import torch

__all__ = [
    'get_1d_sincos_pos_embed', 'get_2d_sincos_pos_embed', 'relative_patch_positions',
    'get_2d_sincos_relative_pos_embed'
]

GridSize = Union[int, Sequence[int]]


def _grid_hw(grid_size: GridSize) -> Tuple[int, int]:
    if isinstance(grid_size, int):
        grid_size = (grid_size, grid_size)
    if len(grid_size) != 2 or not all(isinstance(g, int) and g > 0 for g in grid_size):
        raise ValueError(f'grid_size must be a positive int or (h, w) pair, got {grid_size!r}')
    return int(grid_size[0]), int(grid_size[1])


def _check_embed_dim(embed_dim: int) -> None:
    if not isinstance(embed_dim, int) or embed_dim <= 0 or embed_dim % 4:
        raise ValueError(f'embed_dim must be a positive multiple of 4, got {embed_dim!r}')


def get_1d_sincos_pos_embed(pos: torch.Tensor, embed_dim: int) -> torch.Tensor:
    """Sin-cos embedding of real-valued positions.

    Args:
        pos: Positions of any shape ``S`` (floating point; its dtype is kept).
        embed_dim: Output width, even.

    Returns:
        ``S + (embed_dim,)``: ``[sin(pos * w_k), cos(pos * w_k)]`` with
        ``w_k = 10000 ** (-k / (embed_dim / 2))``.
    """
    if not isinstance(embed_dim, int) or embed_dim <= 0 or embed_dim % 2:
        raise ValueError(f'embed_dim must be a positive even int, got {embed_dim!r}')
    if not pos.is_floating_point():
        raise TypeError(f'pos must be floating point, got {pos.dtype}')
    half = embed_dim // 2
    omega = 1.0 / 10000**(torch.arange(half, dtype=pos.dtype, device=pos.device) / half)
    angles = pos.unsqueeze(-1) * omega
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def get_2d_sincos_pos_embed(grid_size: GridSize,
                            embed_dim: int,
                            dtype: torch.dtype = torch.float32,
                            device: Union[None, str, torch.device] = None) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding of a patch grid (MAE layout, see the module docstring).

    Args:
        grid_size: ``g`` or ``(gh, gw)`` patches.
        embed_dim: Width, a multiple of 4.
        dtype: Floating dtype of the result.
        device: Device of the result.

    Returns:
        ``(gh * gw, embed_dim)``, row-major token order.
    """
    _check_embed_dim(embed_dim)
    gh, gw = _grid_hw(grid_size)
    rows = torch.arange(gh, dtype=dtype, device=device)
    cols = torch.arange(gw, dtype=dtype, device=device)
    grid_h, grid_w = torch.meshgrid(rows, cols, indexing='ij')
    return torch.cat([
        get_1d_sincos_pos_embed(grid_h.reshape(-1), embed_dim // 2),
        get_1d_sincos_pos_embed(grid_w.reshape(-1), embed_dim // 2)
    ], dim=-1)


def _as_boxes(name: str, boxes, dtype: torch.dtype) -> torch.Tensor:
    boxes = torch.as_tensor(boxes, dtype=dtype)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f'{name} must have shape (N, 4) as (x1, y1, x2, y2), got '
                         f'{tuple(boxes.shape)}')
    if not bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()):
        raise ValueError(f'{name} must have x2 > x1 and y2 > y1 for every box')
    return boxes


def _as_flips(name: str, flips, num: int, device: torch.device) -> torch.Tensor:
    if flips is None:
        return torch.zeros(num, dtype=torch.bool, device=device)
    flips = torch.as_tensor(flips, device=device)
    if flips.shape != (num, ):
        raise ValueError(f'{name} must have shape ({num},), got {tuple(flips.shape)}')
    return flips.bool()


def relative_patch_positions(input_boxes,
                             target_boxes,
                             input_flips=None,
                             target_flips=None,
                             grid_size: GridSize = 14,
                             dtype: torch.dtype = torch.float32
                             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of the target view's patch centres in the input view's patch grid.

    Args:
        input_boxes: (N, 4) crop boxes ``(x1, y1, x2, y2)`` of the input views in
            original-image pixels (tensor, array or nested lists).
        target_boxes: (N, 4) crop boxes of the target views.
        input_flips: Optional (N,) bools: input view flipped horizontally after cropping.
        target_flips: Optional (N,) bools for the target views.
        grid_size: Patches per side of both views, ``g`` or ``(gh, gw)``.
        dtype: Floating dtype of the computation and results.

    Returns:
        ``(pos_h, pos_w, scale_h, scale_w)``: (N, gh * gw) row and column positions in
        input-patch units (integer values at input patch centres; row-major over the target
        patches) and the (N,) relative scales ``dh``, ``dw``.
    """
    if not dtype.is_floating_point:
        raise TypeError(f'dtype must be floating point, got {dtype}')
    boxes_a = _as_boxes('input_boxes', input_boxes, dtype)
    boxes_b = _as_boxes('target_boxes', target_boxes, dtype).to(boxes_a.device)
    if boxes_a.shape != boxes_b.shape:
        raise ValueError(f'input_boxes {tuple(boxes_a.shape)} and target_boxes '
                         f'{tuple(boxes_b.shape)} must have the same shape')
    num = boxes_a.shape[0]
    flip_a = _as_flips('input_flips', input_flips, num, boxes_a.device)
    flip_b = _as_flips('target_flips', target_flips, num, boxes_a.device)
    gh, gw = _grid_hw(grid_size)

    x1a, y1a, x2a, y2a = boxes_a.unbind(-1)
    x1b, y1b, x2b, y2b = boxes_b.unbind(-1)
    height_a, width_a = y2a - y1a, x2a - x1a
    height_b, width_b = y2b - y1b, x2b - x1b
    # Target patch centres as fractions of the target view, mapped to original pixels.
    frac_r = (torch.arange(gh, dtype=dtype, device=boxes_a.device) + 0.5) / gh
    frac_c = (torch.arange(gw, dtype=dtype, device=boxes_a.device) + 0.5) / gw
    y = y1b[:, None] + frac_r * height_b[:, None]
    x = torch.where(flip_b[:, None], x2b[:, None] - frac_c * width_b[:, None],
                    x1b[:, None] + frac_c * width_b[:, None])
    # Original pixels -> input view (flipped or not) -> input-patch units at patch centres.
    pos_h = (y - y1a[:, None]) / height_a[:, None] * gh - 0.5
    col_frac = torch.where(flip_a[:, None], x2a[:, None] - x, x - x1a[:, None]) / width_a[:, None]
    pos_w = col_frac * gw - 0.5
    pos_h = pos_h[:, :, None].expand(num, gh, gw).reshape(num, gh * gw)
    pos_w = pos_w[:, None, :].expand(num, gh, gw).reshape(num, gh * gw)
    return pos_h, pos_w, height_b / height_a, width_b / width_a


def get_2d_sincos_relative_pos_embed(input_boxes,
                                     target_boxes,
                                     input_flips=None,
                                     target_flips=None,
                                     grid_size: GridSize = 14,
                                     embed_dim: int = 768,
                                     dtype: torch.dtype = torch.float32,
                                     device: Union[None, str, torch.device] = None
                                     ) -> torch.Tensor:
    """SiameseIM relative position + scale embedding of the target view's patches.

    Args:
        input_boxes, target_boxes, input_flips, target_flips, grid_size: See
            :func:`relative_patch_positions`.
        embed_dim: ``D``, a multiple of 4; the result is ``2 * D`` wide.
        dtype: Floating dtype (float32 or float64).
        device: Device of the result (computed where the boxes are, then moved).

    Returns:
        ``(N, gh * gw, 2 * embed_dim)``: ``[position part (D), scale part (D)]`` as in the
        module docstring. Not differentiable with respect to the boxes by design (the
        geometry comes from the data pipeline).
    """
    _check_embed_dim(embed_dim)
    pos_h, pos_w, scale_h, scale_w = relative_patch_positions(
        input_boxes, target_boxes, input_flips, target_flips, grid_size, dtype)
    num, length = pos_h.shape
    half = embed_dim // 2
    scale_part = torch.cat([
        get_1d_sincos_pos_embed(10.0 * torch.log(scale_h), half),
        get_1d_sincos_pos_embed(10.0 * torch.log(scale_w), half)
    ], dim=-1)
    embed = torch.cat([
        get_1d_sincos_pos_embed(pos_h, half),
        get_1d_sincos_pos_embed(pos_w, half),
        scale_part[:, None, :].expand(num, length, embed_dim)
    ], dim=-1)
    return embed if device is None else embed.to(device)
