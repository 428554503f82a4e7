import math

import pytest
import torch

from m3i_mm.models.layers import (get_1d_sincos_pos_embed, get_2d_sincos_pos_embed,
                                  get_2d_sincos_relative_pos_embed, relative_patch_positions)

F64 = torch.float64


def sincos(value: float, dim: int):
    """[sin(v w_k)] + [cos(v w_k)], w_k = 10000 ** (-k / dim), k < dim (plain Python)."""
    omegas = [1.0 / 10000**(k / dim) for k in range(dim)]
    return [math.sin(value * o) for o in omegas] + [math.cos(value * o) for o in omegas]


def naive_grid_embed(gh: int, gw: int, embed_dim: int) -> torch.Tensor:
    quarter = embed_dim // 4
    rows = [sincos(r, quarter) + sincos(c, quarter) for r in range(gh) for c in range(gw)]
    return torch.tensor(rows, dtype=F64)


def naive_siameseim_relative(boxes_a, boxes_b, flips_a, flips_b, grid: int, embed_dim: int,
                             image_width: float) -> torch.Tensor:
    """SiameseIM's formula, per patch: views are flipped *before* cropping, crops (i, j, h, w)."""
    quarter = embed_dim // 4
    out = []
    for box_a, box_b, fa, fb in zip(boxes_a, boxes_b, flips_a, flips_b):
        params = []
        for (x1, y1, x2, y2), flip in ((box_a, fa), (box_b, fb)):
            j = image_width - x2 if flip else x1
            params.append((y1, j, y2 - y1, x2 - x1))
        (i1, j1, h1, w1), (i2, j2, h2, w2) = params
        delta_i, delta_j = (i2 - i1) / h1, (j2 - j1) / w1
        delta_h, delta_w = h2 / h1, w2 / w1
        relative_flip = bool(fa) != bool(fb)
        flip_delta_j = (image_width - j1 - j2) / w1
        sample = []
        for r in range(grid):
            for c in range(grid):
                h = delta_h * (r + 0.5) + delta_i * grid - 0.5
                if relative_flip:
                    w = -delta_w * (c + 0.5) + flip_delta_j * grid - 0.5
                else:
                    w = delta_w * (c + 0.5) + delta_j * grid - 0.5
                sample.append(
                    sincos(h, quarter) + sincos(w, quarter) +
                    sincos(10 * math.log(delta_h), quarter) +
                    sincos(10 * math.log(delta_w), quarter))
        out.append(sample)
    return torch.tensor(out, dtype=F64)


def _zero_scale_part(embed_dim: int) -> torch.Tensor:
    quarter = embed_dim // 4
    return torch.cat([torch.zeros(quarter), torch.ones(quarter)] * 2).to(F64)


@pytest.mark.parametrize('grid, dim', [(4, 16), ((3, 5), 8), (14, 64)])
def test_grid_embedding_matches_naive(grid, dim):
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    embed = get_2d_sincos_pos_embed(grid, dim, dtype=F64)
    torch.testing.assert_close(embed, naive_grid_embed(gh, gw, dim))
    assert get_2d_sincos_pos_embed(grid, dim).dtype == torch.float32


def test_1d_embedding_layout():
    pos = torch.tensor([[0.0, 1.5], [-2.0, 3.0]], dtype=F64)
    embed = get_1d_sincos_pos_embed(pos, 6)
    assert embed.shape == (2, 2, 6)
    torch.testing.assert_close(embed[1, 0], torch.tensor(sincos(-2.0, 3), dtype=F64))


@pytest.mark.parametrize('grid', [4, (3, 5)])
def test_identical_views_give_grid_embedding_plus_zero_scale(grid):
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 50.0, 30.0]])
    for flips in ([False, False], [True, True]):
        embed = get_2d_sincos_relative_pos_embed(boxes, boxes, flips, flips, grid_size=grid,
                                                 embed_dim=16, dtype=F64)
        assert embed.shape == (2, gh * gw, 32)
        want = torch.cat([get_2d_sincos_pos_embed(grid, 16, dtype=F64),
                          _zero_scale_part(16).expand(gh * gw, 16)], dim=-1)
        for sample in embed:
            torch.testing.assert_close(sample, want)


def test_relative_flip_mirrors_columns():
    boxes = torch.tensor([[0.0, 0.0, 160.0, 160.0]])
    plain = get_2d_sincos_pos_embed(4, 16, dtype=F64).view(4, 4, 16)
    for flips in (([False], [True]), ([True], [False])):
        embed = get_2d_sincos_relative_pos_embed(boxes, boxes, *flips, grid_size=4,
                                                 embed_dim=16, dtype=F64)
        torch.testing.assert_close(embed[0, :, :16].view(4, 4, 16), plain.flip(1))


def test_zoom_and_shift():
    big = torch.tensor([[0.0, 0.0, 200.0, 200.0]])
    centre = torch.tensor([[50.0, 50.0, 150.0, 150.0]])  # 2x zoom into the middle
    pos_h, pos_w, dh, dw = relative_patch_positions(big, centre, grid_size=4, dtype=F64)
    assert dh.item() == 0.5 and dw.item() == 0.5
    rows = torch.arange(4, dtype=F64)
    torch.testing.assert_close(pos_h.view(4, 4), (0.5 * rows + 0.75)[:, None].expand(4, 4))
    torch.testing.assert_close(pos_w.view(4, 4), (0.5 * rows + 0.75)[None, :].expand(4, 4))
    embed = get_2d_sincos_relative_pos_embed(big, centre, grid_size=4, embed_dim=16, dtype=F64)
    scale = torch.tensor(sincos(10 * math.log(0.5), 4) * 2, dtype=F64)
    torch.testing.assert_close(embed[0, 5, 16:], scale)
    # shifting the target right by one input patch (50 px) shifts every column by +1
    shifted = big + torch.tensor([[50.0, 0.0, 50.0, 0.0]])
    _, pos_w_shift, _, _ = relative_patch_positions(big, shifted, grid_size=4, dtype=F64)
    torch.testing.assert_close(pos_w_shift.view(4, 4),
                               torch.arange(1, 5, dtype=F64)[None, :].expand(4, 4))


def test_matches_naive_siameseim_formula_on_random_crops():
    gen = torch.Generator().manual_seed(0)
    num, width, height = 12, 640.0, 480.0
    boxes = []
    for _ in range(2):
        x1 = torch.rand(num, generator=gen, dtype=F64) * width * 0.6
        y1 = torch.rand(num, generator=gen, dtype=F64) * height * 0.6
        w = 20 + torch.rand(num, generator=gen, dtype=F64) * (width - x1 - 20)
        h = 20 + torch.rand(num, generator=gen, dtype=F64) * (height - y1 - 20)
        boxes.append(torch.stack([x1, y1, x1 + w, y1 + h], dim=1))
    flips_a = torch.rand(num, generator=gen) < 0.5
    flips_b = torch.rand(num, generator=gen) < 0.5
    assert (flips_a != flips_b).any() and (flips_a == flips_b).any()
    embed = get_2d_sincos_relative_pos_embed(boxes[0], boxes[1], flips_a, flips_b, grid_size=5,
                                             embed_dim=16, dtype=F64)
    ref = naive_siameseim_relative(boxes[0].tolist(), boxes[1].tolist(), flips_a.tolist(),
                                   flips_b.tolist(), 5, 16, width)
    torch.testing.assert_close(embed, ref)
    single = get_2d_sincos_relative_pos_embed(boxes[0], boxes[1], flips_a, flips_b, grid_size=5,
                                              embed_dim=16)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), ref, rtol=1e-4, atol=1e-5)


def test_bad_inputs():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match='multiple of 4'):
        get_2d_sincos_pos_embed(4, 6)
    with pytest.raises(ValueError, match='multiple of 4'):
        get_2d_sincos_relative_pos_embed(boxes, boxes, embed_dim=10)
    with pytest.raises(ValueError, match=r'\(N, 4\)'):
        relative_patch_positions(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match='x2 > x1'):
        relative_patch_positions(boxes, torch.tensor([[5.0, 0.0, 5.0, 10.0]]))
    with pytest.raises(ValueError, match=r'input_flips must have shape \(1,\)'):
        relative_patch_positions(boxes, boxes, [True, False])
    with pytest.raises(ValueError, match='grid_size'):
        get_2d_sincos_pos_embed((4, 0), 8)
