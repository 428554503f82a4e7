"""Pseudo-random permutations of ``[0, n)`` that need O(1) memory in ``n``.

A sampler for a 400M-sample source cannot hold ``torch.randperm(n)`` (3.2 GB of int64 per
rank). Instead, position ``i`` of a shuffled pass is mapped to a sample index by a keyed
bijection evaluated on demand:

* :func:`feistel_permute` - a keyed Feistel network on ``m``-bit integers (``2**m`` is the
  smallest power of two >= ``n``, so the domain is < ``2n``), restricted to ``[0, n)`` by
  cycle-walking. Each Feistel round is invertible whatever the round function is, so the
  whole map is a bijection; the round function is the splitmix64 finaliser.
* :class:`BlockShuffle` - a bijection that keeps shards (blocks) together for I/O
  locality: the blocks are put in a Feistel order, cut into groups of ``group_size``
  consecutive blocks, and the samples of each group are Feistel-shuffled among themselves.
  Its memory is O(number of blocks), never O(number of samples).

Everything is vectorised over numpy ``uint64`` arrays (their arithmetic wraps mod 2**64).
"""
from typing import List, Sequence

import numpy as np

from m3i_mm.utils.randomness import GOLDEN as _GOLDEN
from m3i_mm.utils.randomness import mix64_int, derive_key, extend_keys, mix64

__all__ = ['mix64', 'derive_key', 'extend_keys', 'feistel_permute', 'BlockShuffle']

NUM_ROUNDS = 6


def _round_keys(key: int) -> List[np.uint64]:
    return [np.uint64(mix64_int(key + (i + 1) * _GOLDEN)) for i in range(NUM_ROUNDS)]


def _feistel(x: np.ndarray, bits: int, keys: Sequence[np.uint64]) -> np.ndarray:
    """One pass of an alternating unbalanced Feistel network on ``bits``-bit integers.

    The state is split into a high part of ``hi`` bits and a low part of ``lo`` bits. A
    round maps (H, L) to (L, H xor F(L)), which is invertible for any F; the widths of the
    two parts swap every round, so odd ``bits`` need no padding.
    """
    widths = ((bits + 1) // 2, bits // 2)
    masks = [np.uint64((1 << w) - 1) for w in widths]
    shifts = [np.uint64(w) for w in widths]
    for i, key in enumerate(keys):
        hi, lo = i % 2, 1 - i % 2  # which width is the high part this round
        high, low = x >> shifts[lo], x & masks[lo]
        x = (low << shifts[hi]) | (high ^ (mix64(low ^ key) & masks[hi]))
    return x


def feistel_permute(positions: np.ndarray, n: int, key: int) -> np.ndarray:
    """Image of ``positions`` (each in ``[0, n)``) under the keyed bijection of ``[0, n)``.

    Args:
        positions: Integer array of positions in the shuffled order.
        n: Size of the domain (>= 1).
        key: 64-bit key; different keys give (pseudo-)independent permutations.

    Returns:
        int64 array of the same shape: the sample index at each position.
    """
    if n < 1:
        raise ValueError(f'a permutation needs n >= 1, got n={n}')
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size and (positions.min() < 0 or positions.max() >= n):
        raise ValueError(f'positions must lie in [0, {n}), got [{positions.min()}, '
                         f'{positions.max()}]')
    if n == 1:
        return np.zeros_like(positions)
    bits = (n - 1).bit_length()
    keys = _round_keys(key)
    out = positions.astype(np.uint64).ravel()
    pending = np.arange(out.size)
    # Cycle-walking: re-encrypt the values that left [0, n). The domain is < 2n, so the
    # expected number of extra rounds is below one.
    while pending.size:
        out[pending] = _feistel(out[pending], bits, keys)
        pending = pending[out[pending] >= np.uint64(n)]
    return out.astype(np.int64).reshape(positions.shape)


class BlockShuffle:
    """A bijection of ``[0, sum(block_sizes))`` that shuffles blocks and within groups.

    Blocks (e.g. the samples of one tar shard) are ordered by a Feistel permutation of the
    block ids; consecutive runs of ``group_size`` blocks in that order form a group; the
    samples of a group are shuffled by a Feistel permutation keyed by the group. A pass over
    positions ``0, 1, 2, ...`` therefore reads ``group_size`` shards at a time, in random
    order, while still visiting every sample exactly once. With one block this is a plain
    Feistel shuffle.

    Args:
        block_sizes: Number of samples in each block, in storage order (local index of the
            first sample of block ``b`` is ``sum(block_sizes[:b])``).
        group_size: Number of blocks shuffled together.
        key: 64-bit key of this shuffle (e.g. derived from seed, source and pass).
    """

    def __init__(self, block_sizes: Sequence[int], group_size: int, key: int) -> None:
        sizes = np.asarray(block_sizes, dtype=np.int64)
        if sizes.ndim != 1 or sizes.size == 0 or sizes.min() < 0 or sizes.sum() == 0:
            raise ValueError(f'block_sizes must be non-negative with a positive sum, got '
                             f'{len(sizes)} blocks summing to {int(sizes.sum())}')
        if group_size < 1:
            raise ValueError(f'group_size must be >= 1, got {group_size}')
        self.size = int(sizes.sum())
        self.key = key
        num_blocks = sizes.size
        self._block_first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._order = feistel_permute(np.arange(num_blocks), num_blocks, derive_key(key, 0))
        ordered_sizes = sizes[self._order]
        self._ordered_start = np.concatenate([[0], np.cumsum(ordered_sizes)[:-1]])
        group_sizes = np.add.reduceat(ordered_sizes, np.arange(0, num_blocks, group_size))
        self._group_start = np.concatenate([[0], np.cumsum(group_sizes)[:-1]])
        self._group_size = group_sizes

    @property
    def nbytes(self) -> int:
        """Bytes held by this shuffle's tables (O(number of blocks))."""
        return sum(a.nbytes for a in (self._block_first, self._order, self._ordered_start,
                                      self._group_start, self._group_size))

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """Local sample indices at ``positions`` (each in ``[0, size)``) of the pass."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.size):
            raise ValueError(f'positions must lie in [0, {self.size})')
        # 'right' - 1 skips empty groups/blocks, which share their start with the next one.
        group = np.searchsorted(self._group_start, positions, side='right') - 1
        shuffled = np.empty_like(positions)
        for g in np.unique(group):
            members = group == g
            start = self._group_start[g]
            shuffled[members] = start + feistel_permute(
                positions[members] - start, int(self._group_size[g]),
                derive_key(self.key, 1, int(g)))
        ordered = np.searchsorted(self._ordered_start, shuffled, side='right') - 1
        block = self._order[ordered]
        return self._block_first[block] + (shuffled - self._ordered_start[ordered])

