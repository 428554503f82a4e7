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
    ((1, 9), dict(mask_ratio=0.4), 4),  # a single row
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
