import math

import numpy as np
import pytest
import torch

from m3i_mm.models.layers import BlockMaskGenerator
from m3i_mm.registry import TASK_UTILS


def boundary_edges(masks: torch.Tensor) -> torch.Tensor:
    """Number of 4-neighbour pairs with one masked and one visible patch, per mask."""
    vertical = (masks[:, 1:, :] != masks[:, :-1, :]).flatten(1).sum(1)
    horizontal = (masks[:, :, 1:] != masks[:, :, :-1]).flatten(1).sum(1)
    return vertical + horizontal


@pytest.mark.parametrize('size, kwargs, expected', [
    (14, dict(num_masking_patches=118), 118),  # SiameseIM at 224 px
    (14, dict(mask_ratio=0.5), 98),  # M3I mixing mask
    ((7, 10), dict(mask_ratio=0.75), 52),  # round(52.5) = 52
    (4, dict(mask_ratio=0.5), 8),  # min block area 16 capped on a small grid
    ((1, 9), dict(mask_ratio=0.4, allow_full_side=True), 4),  # a single row
    (5, dict(mask_ratio=0.0), 0),
    (5, dict(mask_ratio=1.0), 25),
])
def test_exact_number_of_masked_patches(size, kwargs, expected):
    generator = BlockMaskGenerator(size, **kwargs)
    masks = generator(64, generator=torch.Generator().manual_seed(0))
    h, w = (size, size) if isinstance(size, int) else size
    assert masks.shape == (64, h, w) and masks.dtype == torch.bool
    assert (masks.flatten(1).sum(1) == expected).all()
    single = generator(generator=np.random.default_rng(0))
    assert single.shape == (h, w) and int(single.sum()) == expected


def test_masks_are_block_wise_not_scattered():
    masks = BlockMaskGenerator(14, num_masking_patches=118)(
        200, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    scattered = torch.stack(
        [torch.randperm(196, generator=gen) < 118 for _ in range(200)]).view(200, 14, 14)
    assert boundary_edges(masks).float().mean() < 0.5 * boundary_edges(scattered).float().mean()
    # masks differ between samples of a batch
    assert len({m.numpy().tobytes() for m in masks}) == 200


@pytest.mark.parametrize('aspect, block', [(1.0, (3, 3)), (0.25, (2, 8)), (4.0, (8, 2))])
def test_block_shape_follows_area_and_aspect(aspect, block):
    # area fixed at 9 / 16 and a fixed aspect ratio h / w: every mask is one such rectangle.
    area = block[0] * block[1]
    generator = BlockMaskGenerator(12, num_masking_patches=area, min_num_patches=area,
                                   max_num_patches=area, min_aspect=aspect, max_aspect=aspect)
    masks = generator(50, generator=torch.Generator().manual_seed(3))
    for mask in masks:
        rows = torch.nonzero(mask.any(1)).flatten()
        cols = torch.nonzero(mask.any(0)).flatten()
        height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert (height, width) == block
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()


def test_reproducible_with_torch_and_numpy_generators():
    generator = BlockMaskGenerator(14, mask_ratio=0.5)
    a = generator(8, generator=torch.Generator().manual_seed(5))
    b = generator(8, generator=torch.Generator().manual_seed(5))
    c = generator(8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = generator(8, generator=np.random.default_rng(5))
    e = generator(8, generator=np.random.default_rng(5))
    assert torch.equal(d, e)
    assert generator(0).shape == (0, 14, 14)
    assert generator(2, device='cpu').device.type == 'cpu'


def test_registry_and_bad_arguments():
    built = TASK_UTILS.build(dict(type='m3i_mm.BlockMaskGenerator', input_size=14, mask_ratio=0.5))
    assert isinstance(built, BlockMaskGenerator) and built.num_masking_patches == 98
    with pytest.raises(ValueError, match='exactly one'):
        BlockMaskGenerator(14)
    with pytest.raises(ValueError, match='exactly one'):
        BlockMaskGenerator(14, mask_ratio=0.5, num_masking_patches=10)
    with pytest.raises(ValueError, match='mask_ratio'):
        BlockMaskGenerator(14, mask_ratio=1.5)
    with pytest.raises(ValueError, match=r'num_masking_patches must be an int in \[0, 196\]'):
        BlockMaskGenerator(14, num_masking_patches=197)
    with pytest.raises(ValueError, match='input_size'):
        BlockMaskGenerator((14, 0), mask_ratio=0.5)
    with pytest.raises(ValueError, match='max_aspect'):
        BlockMaskGenerator(14, mask_ratio=0.5, min_aspect=2.0)
    with pytest.raises(TypeError, match='generator'):
        BlockMaskGenerator(14, mask_ratio=0.5)(2, generator=42)


def test_expand_patch_mask_covers_each_patch_block():
    from m3i_mm.models.layers import expand_patch_mask
    mask = torch.tensor([[[True, False], [False, True]]])
    cells = expand_patch_mask(mask, 4, 6)
    assert cells.shape == (1, 4, 6)
    expected = torch.zeros(1, 4, 6, dtype=torch.bool)
    expected[0, :2, :3] = True
    expected[0, 2:, 3:] = True
    assert torch.equal(cells, expected)
    with pytest.raises(ValueError, match='does not tile'):
        expand_patch_mask(mask, 5, 6)
    with pytest.raises(ValueError, match='does not tile'):
        expand_patch_mask(mask[0], 4, 6)


def reference_block_mask(height: int, width: int, num_masking: int, min_block: int,
                         rng: np.random.Generator, strict: bool = True) -> np.ndarray:
    """SiameseIM's / BEiT's block masking, one sample at a time, written from its rules:
    blocks of area U(min, missing) and log-uniform aspect in [0.3, 1/0.3], strictly smaller
    than the grid (``strict``), placed uniformly; a block counts if it adds 1..missing
    patches; 10 fruitless draws in a row end the block phase; the rest is filled at random."""
    mask = np.zeros((height, width), bool)
    count = 0
    while count < num_masking:
        missing = num_masking - count
        added = 0
        for _ in range(10):
            area = min_block + (missing - min_block) * rng.random()  # reversed if missing < min
            aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            fits = (h < height and w < width) if strict else (h <= height and w <= width)
            if fits:
                top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                new = ~mask[top:top + h, left:left + w]
                if 0 < new.sum() <= missing:
                    added = int(new.sum())
                    mask[top:top + h, left:left + w] = True
                    break
        if added == 0:
            break
        count += added
    free = np.flatnonzero(~mask.ravel())
    mask.ravel()[rng.permutation(free)[:num_masking - count]] = True
    return mask


def full_line_fraction(masks: np.ndarray) -> float:
    """Fraction of masks with at least one fully masked row or column."""
    return float((masks.all(2).any(1) | masks.all(1).any(1)).mean())


@pytest.mark.parametrize('side, num_masking', [(14, 118), (7, 24)])  # SiameseIM; small grid
def test_default_rule_matches_siameseim_and_the_old_rule_is_an_option(side, num_masking):
    """Statistics of 1500 masks against the per-sample reference, for both rules: the
    fraction of masks with a fully masked row or column and the mean masked-boundary
    length agree within 4 standard errors."""
    num = 1500
    rng = np.random.default_rng(0)
    fractions = {}
    for seed, allow in ((0, False), (1, True)):
        ref = np.stack([reference_block_mask(side, side, num_masking, 16, rng,
                                             strict=not allow) for _ in range(num)])
        ours = BlockMaskGenerator(side, num_masking_patches=num_masking,
                                  allow_full_side=allow)(
            num, generator=torch.Generator().manual_seed(seed)).numpy()
        p, q = full_line_fraction(ours), full_line_fraction(ref)
        assert abs(p - q) < 4 * math.sqrt(2 * q * (1 - q) / num) + 1e-9, (allow, p, q)
        ea = boundary_edges(torch.from_numpy(ours)).double()
        eb = boundary_edges(torch.from_numpy(ref)).double()
        se = math.sqrt((ea.var() + eb.var()) / num)
        assert abs(ea.mean() - eb.mean()) < 4 * se, (allow, ea.mean(), eb.mean())
        fractions[allow] = q
    if side == 7:  # here the rules differ by far more than the tolerance (0.18 vs 0.43)
        assert fractions[True] - fractions[False] > 0.15


def test_strict_rule_never_places_a_block_as_high_as_the_grid():
    """A 3x3 block on a 3-row grid: the old rule places it; the strict one never could (the
    9 patches were then drawn at random), so it is refused at construction."""
    kwargs = dict(num_masking_patches=9, min_num_patches=9, max_num_patches=9,
                  min_aspect=1.0, max_aspect=1.0)
    masks = BlockMaskGenerator((3, 12), allow_full_side=True, **kwargs)(
        50, generator=torch.Generator().manual_seed(2))
    assert all(bool(m[:, m.any(0)].all()) and int(m.any(0).sum()) == 3 for m in masks)
    with pytest.raises(ValueError, match='no block of the allowed areas and aspect ratios is '
                                         'smaller than the grid'):
        BlockMaskGenerator((3, 12), **kwargs)


@pytest.mark.parametrize('size, kwargs, message', [
    ((1, 9), dict(mask_ratio=0.4), 'smaller than the grid .*allow_full_side=True'),
    (4, dict(num_masking_patches=16, min_num_patches=16, max_num_patches=16,
             allow_full_side=True, min_aspect=2.0, max_aspect=3.0),
     'no block .* is at most the grid'),  # 16 patches only as 6x3 .. 7x2 blocks
    (14, dict(mask_ratio=0.5, min_num_patches=[[4, 4]]), r'min_num_patches must be an int, '
                                                         r'got \[\[4, 4\]\]'),
    (14, dict(mask_ratio=0.5, min_num_patches=16, max_num_patches=4),
     'max_num_patches 4 is below min_num_patches 16'),
])
def test_block_sizes_that_yield_no_block_are_refused(size, kwargs, message):
    """Block sizes that can never be placed were accepted: every mask was then uniformly
    random patches, silently (issue 21.15)."""
    with pytest.raises(ValueError, match=message):
        BlockMaskGenerator(size, **kwargs)


def test_mix_pairs_is_the_canvas_m3i_feeds_its_backbone():
    """What the M3I pre-trainer encodes for a given mask is mix_pairs of the view-1 batch:
    image i where the mask is False, image (i + 1) % N where it is True."""
    from m3i_mm.models.layers.block_mask import mix_pairs
    from tests.models.selfsup.m3i_fixtures import build_tiny, photo_batch
    model = build_tiny('m3i_internimage-t_16xb128-100k_in1k-cc12m.py', caption_head=None,
                       text_encoder=None)
    data = model.data_preprocessor(photo_batch(size=64))
    views1 = data['inputs'][:, 0]
    mask = BlockMaskGenerator(4, mask_ratio=0.5, min_num_patches=1)(
        views1.shape[0], generator=torch.Generator().manual_seed(3))
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model.predict(data['inputs'], data['batch'], mask)
    handle.remove()
    torch.testing.assert_close(seen[0], mix_pairs(views1, mask), rtol=0, atol=0)
    # by hand for one patch: canvas 0's masked patch shows image 1 there
    r, c = map(int, torch.nonzero(mask[0])[0])
    patch = (slice(None), slice(16 * r, 16 * r + 16), slice(16 * c, 16 * c + 16))
    torch.testing.assert_close(mix_pairs(views1, mask)[0][patch], views1[1][patch])
