import numpy as np
import pytest

from m3i_mm.datasets.permutation import BlockShuffle, derive_key, feistel_permute


@pytest.mark.parametrize('n', [1, 2, 7, 1000, 4097])
def test_feistel_is_a_bijection(n):
    for key in (0, 1, derive_key(123, 4, 5)):
        image = feistel_permute(np.arange(n), n, key)
        assert image.dtype == np.int64
        assert np.array_equal(np.sort(image), np.arange(n))


def test_feistel_keys_give_different_shuffles_and_shuffle_well():
    n = 4097
    a = feistel_permute(np.arange(n), n, derive_key(0, 0, 0))
    b = feistel_permute(np.arange(n), n, derive_key(0, 0, 1))
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, np.arange(n))
    # A shuffle, not a near-identity or a shift: few fixed points, no linear trend.
    assert np.sum(a == np.arange(n)) < 20
    assert abs(np.corrcoef(a, np.arange(n))[0, 1]) < 0.1
    # Same key, same answer, element by element or in bulk.
    assert all(feistel_permute(np.array([i]), n, derive_key(0, 0, 0))[0] == a[i]
               for i in (0, 17, n - 1))


def test_feistel_large_domain_without_materialising():
    n = 400_000_000
    positions = np.array([0, 1, n // 2, n - 2, n - 1])
    image = feistel_permute(positions, n, 7)
    assert image.min() >= 0 and image.max() < n and len(set(image.tolist())) == 5


def test_feistel_rejects_bad_input():
    with pytest.raises(ValueError, match='n >= 1'):
        feistel_permute(np.arange(1), 0, 1)
    with pytest.raises(ValueError, match=r'\[0, 5\)'):
        feistel_permute(np.array([5]), 5, 1)


def test_block_shuffle_is_a_bijection_with_empty_blocks():
    sizes = [5, 0, 7, 3, 0, 10, 1, 0]
    for group_size in (1, 2, 3, 8):
        shuffle = BlockShuffle(sizes, group_size, key=derive_key(9, group_size))
        image = shuffle(np.arange(sum(sizes)))
        assert np.array_equal(np.sort(image), np.arange(sum(sizes)))


def test_block_shuffle_reads_group_size_blocks_at_a_time():
    sizes = [10] * 12
    shuffle = BlockShuffle(sizes, group_size=3, key=5)
    image = shuffle(np.arange(120))
    blocks = image // 10  # block of each visited sample
    for start in range(0, 120, 30):  # each group of 3 blocks is one run of 30 positions
        assert len(set(blocks[start:start + 30].tolist())) == 3
    # ... and the blocks are not visited in storage order.
    assert [int(b) for b in blocks[::30]] != [0, 3, 6, 9]


def test_block_shuffle_rejects_bad_input():
    with pytest.raises(ValueError, match='positive sum'):
        BlockShuffle([0, 0], 2, 1)
    with pytest.raises(ValueError, match='group_size'):
        BlockShuffle([3], 0, 1)
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        BlockShuffle([3], 1, 1)(np.array([3]))
