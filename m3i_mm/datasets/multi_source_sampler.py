"""A distributed, resumable sampler drawing batches from several sources with fixed ratios.

The sampler's output is one deterministic stream of global training steps. For a step
``t`` it knows, from ``(seed, t)`` alone, how many samples of the batch come from each
source (:class:`BatchCompositions`); each source is an endless sequence of shuffled
passes, and rank ``r`` of ``W`` takes the positions ``r, r + W, r + 2W, ...`` of it, so
ranks are disjoint within a pass and every source is consumed at exactly its drawn rate.
A position ``P`` of source ``k`` is sample ``shuffle_{k, P // n_k}(P % n_k)``, where the
shuffle is a keyed bijection (:mod:`.permutation`): memory per rank is O(number of shards),
independent of the number of samples.

Each index also carries the key of its draw (:class:`SampleIndex`), a hash of (seed,
source, stream position): the dataset seeds the sample's random transforms from it, so
they too are a function of the stream and not of which worker or rank transforms it.

Resuming needs only the step and the per-source stream positions (a few ints):
:meth:`MultiSourceSampler.state_dict` / :meth:`~MultiSourceSampler.load_state_dict`.
The engine hook ``m3i_mm.SamplerStateHook`` puts them into mmengine checkpoints.
"""
import logging
import math
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import print_log
from torch.utils.data import Sampler

from m3i_mm.registry import DATA_SAMPLERS
from .multi_source import source_offsets
from .permutation import BlockShuffle, derive_key, extend_keys

__all__ = ['BatchCompositions', 'MultiSourceSampler', 'SampleIndex', 'check_block_sizes']

#: Tag of the keys of the samples' random transforms (see :class:`SampleIndex`).
_TRANSFORM_KEY_TAG = 0x7A4F


class SampleIndex(int):
    """A dataset index (a plain ``int`` everywhere) that also carries where it was drawn.

    Attributes:
        rng_key: 64-bit key of the draw; the dataset seeds the sample's random transforms
            from it.
        step: The step (batch) of the data stream it belongs to, or None; the dataset
            counts bad samples per step.
    """

    def __new__(cls, index: int, rng_key: int, step: Optional[int] = None) -> 'SampleIndex':
        obj = super().__new__(cls, index)
        obj.rng_key = int(rng_key)
        obj.step = step
        return obj

    def __reduce__(self):  # crosses to dataloader workers with its key and step
        return SampleIndex, (int(self), self.rng_key, self.step)

    def __repr__(self) -> str:
        return f'SampleIndex({int(self)}, rng_key={self.rng_key:#018x}, step={self.step})'


def check_block_sizes(source_sizes: Sequence[int],
                      block_sizes: Sequence[Optional[Sequence[int]]]) -> None:
    """Each source's block sizes (None, or a flat list of sample counts >= 0 per storage
    block) must add up to the source's size; else a ValueError naming the source."""
    if len(block_sizes) != len(source_sizes):
        raise ValueError(f'got block sizes for {len(block_sizes)} sources, but '
                         f'{len(source_sizes)} source sizes')
    for k, (size, blocks) in enumerate(zip(source_sizes, block_sizes)):
        if blocks is None:
            continue
        sizes = np.asarray(blocks)
        shown = repr(blocks) if len(repr(blocks)) < 60 else repr(blocks)[:57] + '...'
        if sizes.ndim != 1 or sizes.size == 0 or sizes.dtype.kind not in 'iu' or \
                sizes.min() < 0 or int(sizes.sum()) != size:
            raise ValueError(
                f'source {k}: block sizes {shown} do not describe its {size} samples; they '
                'must be a flat list of sample counts >= 0, one per shard, adding up to the '
                'source size')


STATE_VERSION = 1
MODES = ('mixed', 'homogeneous')


class BatchCompositions:
    """How many samples of each step's batch come from each source.

    ``mixed``: the counts of a step are a multinomial draw of ``batch_size`` samples with
    the source ratios. ``homogeneous``: one source, drawn with the ratios, fills the whole
    batch. Steps are drawn in blocks of :attr:`BLOCK` from a generator seeded by
    ``(seed, block)``, so any step's counts, and the sum over any range of steps, are
    computed without replaying the stream. The counts depend on the step only, not on
    the rank: all ranks see the same composition (and in homogeneous mode the same source).

    Args:
        ratios: Sampling ratios, one per source (normalised here).
        batch_size: Samples per batch and rank.
        mode: ``'mixed'`` or ``'homogeneous'``.
        seed: Seed of the stream.
    """

    BLOCK = 1024

    def __init__(self, ratios: Sequence[float], batch_size: int, mode: str, seed: int) -> None:
        ratios = np.asarray(ratios, dtype=np.float64)
        self.probs = ratios / ratios.sum()
        self.batch_size = batch_size
        self.homogeneous = mode == 'homogeneous'
        self.seed = seed
        self._blocks: Dict[int, np.ndarray] = {}
        self._block_totals: Dict[int, np.ndarray] = {}

    def _block(self, block: int) -> np.ndarray:
        """Counts of the steps of ``block`` as a (BLOCK, num_sources) int64 array."""
        counts = self._blocks.get(block)
        if counts is None:
            rng = np.random.default_rng(derive_key(self.seed, 0xC0DE, block))
            if self.homogeneous:
                chosen = rng.choice(len(self.probs), size=self.BLOCK, p=self.probs)
                counts = np.zeros((self.BLOCK, len(self.probs)), dtype=np.int64)
                counts[np.arange(self.BLOCK), chosen] = self.batch_size
            else:
                counts = rng.multinomial(self.batch_size, self.probs,
                                         size=self.BLOCK).astype(np.int64)
            if len(self._blocks) >= 2:  # iteration is sequential: keep the last two
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[block] = counts
        return counts

    def counts(self, step: int) -> np.ndarray:
        """Samples per source in the batch of ``step``."""
        return self._block(step // self.BLOCK)[step % self.BLOCK]

    def total(self, start: int, stop: int) -> np.ndarray:
        """Samples per source summed over the steps ``[start, stop)``."""
        total = np.zeros(len(self.probs), dtype=np.int64)
        step = start
        while step < stop:
            block, first = divmod(step, self.BLOCK)
            last = min(self.BLOCK, first + stop - step)
            if first == 0 and last == self.BLOCK:
                if block not in self._block_totals:
                    self._block_totals[block] = self._block(block).sum(axis=0)
                total += self._block_totals[block]
            else:
                total += self._block(block)[first:last].sum(axis=0)
            step += last - first
        return total


@DATA_SAMPLERS.register_module()
class MultiSourceSampler(Sampler):
    """Sample indices of a :class:`~m3i_mm.datasets.MultiSourceDataset` by source ratios.

    Each iterator continues the sampler's stream of steps from where the previous one
    stopped (or from a loaded state) up to the end of that step's epoch (``infinite=False``)
    or forever (``infinite=True``, the choice for ``IterBasedTrainLoop``). Epoch ``e`` is
    the steps ``[e * steps_per_epoch, (e + 1) * steps_per_epoch)``; sources do not restart
    at epoch boundaries, each one cycles through its own shuffled passes (a new key per
    pass). There is no ``set_epoch``: the stream is a function of the step.

    Within a mixed batch the samples are grouped by source, in source order.

    Args:
        dataset: A dataset with ``source_sizes`` and ``source_block_sizes``
            (:class:`~m3i_mm.datasets.MultiSourceDataset`); global index of local sample
            ``i`` of source ``k`` is ``sum(source_sizes[:k]) + i``.
        batch_size: Samples per batch and rank; must equal the dataloader's batch size.
        ratios: Relative sampling rate of each source: a list in source order, or a dict
            by source name (``dict(laion=0.6, in1k=0.4)``; every source named); None:
            proportional to the sources' sizes.
        mode: ``'mixed'`` (each batch a multinomial mix) or ``'homogeneous'`` (each batch
            from one source, the same on all ranks).
        seed: Seed of the stream; None: a random seed shared by all ranks.
        infinite: Never end an iterator (for iteration-based loops).
        steps_per_epoch: Batches per epoch; None: the sources' total size divided by
            ``world_size * batch_size``.
        shard_group_size: Sharded sources (tar shards) are shuffled this many shards at a
            time (see :class:`~m3i_mm.datasets.permutation.BlockShuffle`).
        rank: This process's rank; None: from ``mmengine.dist``.
        world_size: Number of ranks; None: from ``mmengine.dist``.
    """

    def __init__(self,
                 dataset,
                 batch_size: int,
                 ratios: Optional[Sequence[float]] = None,
                 mode: str = 'mixed',
                 seed: Optional[int] = None,
                 infinite: bool = False,
                 steps_per_epoch: Optional[int] = None,
                 shard_group_size: int = 8,
                 rank: Optional[int] = None,
                 world_size: Optional[int] = None) -> None:
        if not hasattr(dataset, 'source_sizes') or not hasattr(dataset, 'source_block_sizes'):
            raise TypeError(f'MultiSourceSampler needs a dataset with source_sizes and '
                            f'source_block_sizes (m3i_mm.MultiSourceDataset), got '
                            f'{type(dataset).__name__}')
        self.source_sizes = [int(n) for n in dataset.source_sizes]
        self.source_block_sizes = list(dataset.source_block_sizes)
        num_sources = len(self.source_sizes)
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) \
                or batch_size < 1:
            raise ValueError(f'MultiSourceSampler: batch_size must be an integer >= 1, got '
                             f'{batch_size!r}')
        check_block_sizes(self.source_sizes, self.source_block_sizes)
        ratios = self._ratio_list(ratios, getattr(dataset, 'names', None))
        if len(ratios) != num_sources:
            raise ValueError(f'got {len(ratios)} ratios for {num_sources} sources')
        if not all(math.isfinite(r) and r >= 0 for r in ratios) or sum(ratios) <= 0:
            raise ValueError(f'MultiSourceSampler: ratios must be finite numbers >= 0 with a '
                             f'positive sum, got {ratios}')
        for k, (ratio, size) in enumerate(zip(ratios, self.source_sizes)):
            if ratio > 0 and size == 0:
                raise ValueError(f'source {k} has ratio {ratio} but no samples')
        default_rank, default_world = get_dist_info()
        self.rank = default_rank if rank is None else int(rank)
        self.world_size = default_world if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f'rank {self.rank} outside world size {self.world_size}')
        self.batch_size = int(batch_size)
        self.ratios = ratios
        self.mode = mode
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.infinite = infinite
        if steps_per_epoch is None:
            used = sum(n for n, r in zip(self.source_sizes, ratios) if r > 0)
            steps_per_epoch = max(1, used // (self.world_size * self.batch_size))
        for name, value in (('steps_per_epoch', steps_per_epoch),
                            ('shard_group_size', shard_group_size)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f'MultiSourceSampler: {name} must be an integer >= 1, got '
                                 f'{value!r}')
        self.steps_per_epoch = int(steps_per_epoch)
        self.shard_group_size = int(shard_group_size)
        self._offsets = source_offsets(self.source_sizes)
        self._shuffles: Dict[Tuple[int, int], BlockShuffle] = {}
        self._use_seed(self.seed)
        # The stream is anchored at a step with known per-source positions (global, over
        # all ranks); positions at later steps add the compositions in between.
        self._anchor_step = 0
        self._anchor_positions = np.zeros(num_sources, dtype=np.int64)
        self._next_step = 0
        self.consumed_steps = 0

    def _ratio_list(self, ratios, names: Optional[Sequence[str]]) -> List[float]:
        """``ratios`` (None, a list, or a dict by source name) as a list of floats."""
        if ratios is None:
            return [float(n) for n in self.source_sizes]
        if isinstance(ratios, dict):
            if names is None:
                raise ValueError('MultiSourceSampler: ratios given by source name need a '
                                 'dataset with source names (m3i_mm.MultiSourceDataset); '
                                 f'got {ratios!r}')
            unknown = [n for n in ratios if n not in names]
            missing = [n for n in names if n not in ratios]
            if unknown or missing:
                raise ValueError(
                    f'MultiSourceSampler: ratios {ratios!r} do not match the sources '
                    f'{list(names)}' + (f'; unknown: {unknown}' if unknown else '') +
                    (f'; missing: {missing} (give every source a ratio, 0 to leave one '
                     'out)' if missing else ''))
            ratios = [ratios[n] for n in names]
        elif isinstance(ratios, (str, bytes)) or not isinstance(ratios, (list, tuple,
                                                                        np.ndarray)):
            raise ValueError(f'MultiSourceSampler: ratios must be a list of numbers, one per '
                             f'source, or a dict of source name -> number; got {ratios!r}')
        numbers = (int, float, np.integer, np.floating)
        bad = [r for r in ratios if not isinstance(r, numbers) or isinstance(r, bool)]
        if bad:
            raise ValueError(f'MultiSourceSampler: ratios must be numbers, got {bad[0]!r} in '
                             f'{ratios!r}')
        return [float(r) for r in ratios]

    def _use_seed(self, seed: int) -> None:
        """Everything that derives from the seed: compositions, shuffles, transform keys."""
        self.seed = seed
        self._compositions = BatchCompositions(self.ratios, self.batch_size, self.mode, seed)
        self._shuffles.clear()
        self._transform_keys = [derive_key(seed, _TRANSFORM_KEY_TAG, k)
                                for k in range(len(self.source_sizes))]

    # ------------------------------------------------------------------ iteration
    def __len__(self) -> int:
        """Samples per rank in one epoch."""
        return self.steps_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[int]:
        step = self._next_step
        cursor = self._compositions.total(self._anchor_step, step)
        stop = math.inf if self.infinite else (step // self.steps_per_epoch + 1) * \
            self.steps_per_epoch
        while step < stop:
            counts = self._compositions.counts(step)
            indices = self._batch_indices(cursor, counts, step)
            cursor = cursor + counts
            step += 1
            self._next_step = step
            yield from indices

    def _batch_indices(self, cursor: np.ndarray, counts: np.ndarray, step: int
                       ) -> List[int]:
        """Indices of the batch of ``step``, whose per-rank source cursors (since the
        anchor) are given."""
        out: List[int] = []
        for k in np.flatnonzero(counts):
            per_rank = cursor[k] + np.arange(counts[k], dtype=np.int64)
            positions = self._anchor_positions[k] + per_rank * self.world_size + self.rank
            size = self.source_sizes[k]
            passes, offsets = np.divmod(positions, size)
            local = np.empty_like(offsets)
            for p in np.unique(passes):
                in_pass = passes == p
                local[in_pass] = self._shuffle(int(k), int(p))(offsets[in_pass])
            keys = extend_keys(self._transform_keys[k], positions).tolist()
            out.extend(SampleIndex(index, key, step)
                       for index, key in zip((local + self._offsets[k]).tolist(), keys))
        return out

    def _shuffle(self, source: int, pass_id: int) -> BlockShuffle:
        key = (source, pass_id)
        shuffle = self._shuffles.get(key)
        if shuffle is None:
            shuffle = BlockShuffle(
                self.source_block_sizes[source] or [self.source_sizes[source]],
                self.shard_group_size, derive_key(self.seed, source, pass_id))
            # Two passes per source can be live at a pass boundary; drop older ones.
            stale = [kp for kp in self._shuffles if kp[0] == source and kp[1] < pass_id - 1]
            for kp in stale:
                del self._shuffles[kp]
            self._shuffles[key] = shuffle
        return shuffle

    # ------------------------------------------------------------------ state
    def mark_consumed(self, num_batches: int = 1) -> None:
        """Record that ``num_batches`` more batches reached the training step.

        With ``num_workers > 0`` the dataloader fetches batches ahead; only what was
        handed to training counts for :meth:`state_dict`. ``SamplerStateHook`` calls this
        once per iteration.
        """
        self.consumed_steps += int(num_batches)

    def seek(self, step: int) -> None:
        """Make the next iterator start at ``step``, with everything before consumed."""
        if step < self._anchor_step:
            raise ValueError(f'cannot seek to step {step} before the loaded state (step '
                             f'{self._anchor_step})')
        self._next_step = self.consumed_steps = int(step)

    def _config(self) -> dict:
        return dict(world_size=self.world_size, batch_size=self.batch_size,
                    ratios=list(self.ratios), mode=self.mode,
                    source_sizes=list(self.source_sizes),
                    shard_group_size=self.shard_group_size,
                    steps_per_epoch=self.steps_per_epoch)

    def state_dict(self) -> dict:
        """The stream position after the consumed batches, as plain ints/strings/lists."""
        positions = self._anchor_positions + self.world_size * self._compositions.total(
            self._anchor_step, self.consumed_steps)
        return dict(version=STATE_VERSION, step=self.consumed_steps,
                    source_positions=[int(p) for p in positions], seed=self.seed,
                    **self._config())

    def load_state_dict(self, state: dict) -> None:
        """Continue the stream right after the batches consumed when ``state`` was taken.

        The next iterator starts at ``state['step']``. The state's seed is adopted. If the
        world size, batch size, ratios, mode, shard grouping or source sizes differ from
        the saved ones, the stream continues from the saved per-source positions (no
        sample of a pass in progress is repeated or skipped as long as the sources are
        unchanged) but is not the order an uninterrupted run would have seen; a warning
        names the differences.
        """
        version = state.get('version') if isinstance(state, dict) else None
        if version != STATE_VERSION:
            raise ValueError(f'unsupported MultiSourceSampler state version {version!r} '
                             f'(expected {STATE_VERSION})')
        positions = state.get('source_positions')

        def whole(value, least=0):
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
                and value >= least

        problems = [f'{field}={state.get(field)!r}' for field, ok in (
            ('step', whole(state.get('step'))),
            ('seed', whole(state.get('seed'), least=-2**63)),
            ('source_positions', isinstance(positions, (list, tuple)) and
             all(whole(p) for p in positions))) if not ok]
        if problems:
            raise ValueError(f'MultiSourceSampler state: {", ".join(problems)} (step and '
                             'source positions must be integers >= 0, seed an integer): the '
                             'checkpoint is damaged or not from this sampler')
        if len(positions) != len(self.source_sizes):
            raise ValueError(f'the state has {len(positions)} sources, the dataset '
                             f'{len(self.source_sizes)}: cannot resume the data stream')
        if state['seed'] != self.seed:
            print_log(f'MultiSourceSampler: using the seed {state["seed"]} of the resumed '
                      f'state instead of {self.seed}', logger='current')
            self._use_seed(int(state['seed']))
        changed = {k: (state[k], v) for k, v in self._config().items() if state[k] != v}
        if changed:
            print_log('MultiSourceSampler: the data configuration changed since the '
                      'checkpoint (' + ', '.join(f'{k}: {old} -> {new}'
                                                 for k, (old, new) in changed.items()) +
                      '); continuing from the saved stream positions, but not in the '
                      'order an uninterrupted run would have seen', logger='current',
                      level=logging.WARNING)
        self._anchor_step = int(state['step'])
        self._anchor_positions = np.asarray(positions, dtype=np.int64)
        self._next_step = self.consumed_steps = self._anchor_step
