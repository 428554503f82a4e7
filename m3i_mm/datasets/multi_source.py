"""One map-style dataset over several sources, with bad-sample skipping and per-source pipelines."""
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.dataset import Compose
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from torch.utils.data import Dataset

from m3i_mm.registry import DATASETS
from m3i_mm.utils.randomness import isolated_random_state
from .base import BAD_SAMPLE_KINDS, BadSampleError, ImageSource
from .permutation import derive_key

__all__ = ['MultiSourceDataset', 'TooManyBadSamplesError', 'source_offsets']

#: Columns of the sample counters: reads, bad ones, requests answered by a replacement,
#: then one column per bad-sample kind.
COUNTER_COLUMNS = ('read', 'bad', 'replaced') + BAD_SAMPLE_KINDS
#: Steps of the data stream whose counts are kept apart until the training process takes
#: them (more than dataloader workers can fetch ahead).
COUNTER_STEPS = 1024


class TooManyBadSamplesError(RuntimeError):
    """More bad samples in a source than its configured threshold allows."""


def source_offsets(sizes: Sequence[int]) -> np.ndarray:
    """Global index of each source's first sample: ``sum(sizes[:k])``."""
    return np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))[:-1]]).astype(
        np.int64)


@DATASETS.register_module()
class MultiSourceDataset(Dataset):
    """Concatenated sources addressed by one global index, for :class:`MultiSourceSampler`.

    Global index ``sum(sizes[:k]) + i`` is sample ``i`` of source ``k``. Each sample is
    decoded by its source (schema in :mod:`m3i_mm.datasets.base`), gets ``source`` and
    ``source_name``, and then runs through the source's pipeline (its own ``pipeline``
    key, else the shared ``pipeline``; mmpretrain/mmcv transforms, without
    ``LoadImageFromFile``).

    A bad sample (missing, truncated or undecodable image, empty caption) is skipped:
    it is counted, logged with its path and reason (each of the first ``log_first_bad`` of
    a source, then the one at 10x, 100x, ... that count), and replaced by another sample of the
    **same** source, chosen by a hash of (source, index, attempt), so the replacement is
    deterministic and the source ratios are unchanged. :class:`TooManyBadSamplesError` is
    raised when a source's bad count in one process exceeds ``max_bad_fraction *
    max(reads, min_reads_for_fraction)``, or when ``max_replacements`` replacements in a
    row are bad.

    The counts (reads, bad ones by kind, replacements) of this process and of its
    dataloader workers are kept in shared memory, per step of the data stream for indices
    drawn by :class:`~m3i_mm.datasets.MultiSourceSampler`, so that the counts of the
    batches training has consumed can be told from those of batches fetched ahead
    (:meth:`take_counts`); ``m3i_mm.BadSampleReportHook`` logs them per source and keeps
    them in checkpoints. :meth:`bad_sample_counts` gives everything read so far.

    Random transforms: an index drawn by :class:`~m3i_mm.datasets.MultiSourceSampler`
    carries the key of its place in the data stream (``rng_key``), and the sample's
    pipeline then runs with python, numpy and torch generators seeded from that key
    (:func:`m3i_mm.utils.randomness.isolated_random_state`): its views are a function of
    the stream position, whatever the number of workers, ranks or resumes. Plain integer
    indices use the generators as they are.

    Args:
        sources: Source configs (``dict(type='ImageTextDataset', name='cc12m', ...)``;
            the ``m3i_mm`` scope is implied, optional keys ``name`` and ``pipeline``) or
            built sources.
        pipeline: Transforms applied to samples of sources without their own pipeline.
        max_bad_fraction: Tolerated fraction of bad samples per source.
        min_reads_for_fraction: Reads over which the fraction is judged at the start (so
            that the first bad sample of a run is not "100% bad").
        max_replacements: Attempts to find a good replacement for one bad sample.
        log_first_bad: Bad samples per source logged one by one before logging thins out.
        lazy_init: Build the sources (read manifests, count shards) only when the data are
            first needed (:meth:`full_init`, called by ``len``, indexing and the sampler),
            as mmengine's ``BaseDataset`` does: a config's dataset can then be built, and
            its arguments, names and pipelines checked, without reading the data.
    """

    def __init__(self,
                 sources: Sequence[Union[dict, ImageSource]],
                 pipeline: Sequence = (),
                 max_bad_fraction: float = 0.05,
                 min_reads_for_fraction: int = 100,
                 max_replacements: int = 16,
                 log_first_bad: int = 5,
                 lazy_init: bool = False) -> None:
        if not sources:
            raise ValueError('MultiSourceDataset needs at least one source')
        if not (isinstance(max_bad_fraction, (int, float)) and 0 <= max_bad_fraction <= 1):
            raise ValueError(f'MultiSourceDataset: max_bad_fraction must be a fraction in '
                             f'[0, 1], got {max_bad_fraction!r}')
        for name, value in (('max_replacements', max_replacements),
                            ('min_reads_for_fraction', min_reads_for_fraction),
                            ('log_first_bad', log_first_bad)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f'MultiSourceDataset: {name} must be an integer >= 0, got '
                                 f'{value!r}')
        self._source_specs: List[Union[dict, ImageSource]] = []
        self.names: List[str] = []
        self.pipelines: List[Compose] = []
        shared = Compose(list(pipeline))
        for k, source in enumerate(sources):
            name, own_pipeline = None, None
            if isinstance(source, dict):
                source = dict(source)
                name = source.pop('name', None)
                own_pipeline = source.pop('pipeline', None)
                kind = source.get('type')
                kind = kind.rsplit('.', 1)[-1] if isinstance(kind, str) else \
                    getattr(kind, '__name__', str(kind))
            elif isinstance(source, ImageSource):
                kind = type(source).__name__
            else:
                raise TypeError(f'source {k} is a {type(source).__name__}, not an m3i_mm '
                                'ImageSource (ImageTextDataset, LabelledImageDataset, '
                                'UnlabelledImageDataset) or its config dict')
            self._source_specs.append(source)
            self.names.append(name or f'{k}:{kind}')
            self.pipelines.append(shared if own_pipeline is None else Compose(own_pipeline))
        if len(set(self.names)) != len(self.names):
            raise ValueError(f'source names must be unique, got {self.names}')
        self.max_bad_fraction = max_bad_fraction
        self.min_reads_for_fraction = min_reads_for_fraction
        self.max_replacements = max_replacements
        self.log_first_bad = log_first_bad
        # Per-process counts, for the bad-fraction limit and the log.
        self._reads = [0] * len(self.names)
        self._bad = [0] * len(self.names)
        # Shared counts, one row per step of the stream modulo COUNTER_STEPS (one process
        # produces a whole batch, so no two processes increment the same row at once),
        # plus a last row for indices without a step.
        self._step_counts = torch.zeros(COUNTER_STEPS + 1, len(self.names),
                                        len(COUNTER_COLUMNS), dtype=torch.int64)
        self._step_counts.share_memory_()
        self._taken = torch.zeros(len(self.names), len(COUNTER_COLUMNS), dtype=torch.int64)
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    def full_init(self) -> None:
        """Build the sources (reading their manifests / shard indexes); once."""
        if self._fully_initialized:
            return
        built: List[ImageSource] = []
        for k, (name, source) in enumerate(zip(self.names, self._source_specs)):
            if isinstance(source, dict):
                with DefaultScope.overwrite_default_scope('m3i_mm'):
                    source = DATASETS.build(source)
                if not isinstance(source, ImageSource):
                    raise TypeError(f'source {k} ({name}) is a {type(source).__name__}, not '
                                    'an m3i_mm ImageSource (ImageTextDataset, '
                                    'LabelledImageDataset, UnlabelledImageDataset)')
            if len(source) == 0:
                raise ValueError(f'source {k} ({name}) is empty')
            built.append(source)
        self._sources = built
        self._source_sizes = [len(s) for s in built]
        self._source_block_sizes = [s.block_sizes for s in built]
        self._offsets = source_offsets(self._source_sizes)
        self._fully_initialized = True

    @property
    def sources(self) -> List[ImageSource]:
        self.full_init()
        return self._sources

    @property
    def source_sizes(self) -> List[int]:
        """Samples per source (builds the sources if ``lazy_init`` deferred it)."""
        self.full_init()
        return self._source_sizes

    @property
    def source_block_sizes(self) -> List[Optional[List[int]]]:
        """Samples per storage block (tar shard) of each source; None where unblocked."""
        self.full_init()
        return self._source_block_sizes

    def __len__(self) -> int:
        return int(sum(self.source_sizes))

    @property
    def metainfo(self) -> dict:
        return dict(sources=[dict(name=name, size=size, **source.metainfo)
                             for name, size, source in zip(self.names, self.source_sizes,
                                                           self.sources)])

    def locate(self, index: int) -> Tuple[int, int]:
        """(source, local index) of a global index."""
        if not 0 <= index < len(self):  # len() builds the sources if still lazy
            raise IndexError(f'MultiSourceDataset: index {index} out of range [0, {len(self)})')
        source = int(np.searchsorted(self._offsets, index, side='right')) - 1
        return source, index - int(self._offsets[source])

    def __getitem__(self, index: int) -> dict:
        k, i = self.locate(index)
        size = self.source_sizes[k]
        step = getattr(index, 'step', None)
        counters = self._step_counts[COUNTER_STEPS if step is None else step % COUNTER_STEPS,
                                     k]
        for attempt in range(self.max_replacements + 1):
            local = i if attempt == 0 else derive_key(k, i, attempt) % size
            self._reads[k] += 1
            counters[0] += 1
            try:
                sample = self.sources[k].load(local)
            except BadSampleError as err:
                self._on_bad(k, err, counters)
                continue
            if attempt > 0:
                counters[2] += 1
            sample.update(source=k, source_name=self.names[k])
            rng_key = getattr(index, 'rng_key', None)
            if rng_key is None:
                return self.pipelines[k](sample)
            with isolated_random_state(rng_key):
                return self.pipelines[k](sample)
        raise TooManyBadSamplesError(
            f'source {self.names[k]!r}: sample {i} and {self.max_replacements} replacements '
            'in a row were all bad; the source looks broken (see the logged paths)')

    def _on_bad(self, k: int, err: BadSampleError, counters: torch.Tensor) -> None:
        counters[1] += 1
        counters[COUNTER_COLUMNS.index(err.kind)] += 1
        self._bad[k] += 1
        bad, reads = self._bad[k], self._reads[k]
        limit = self.max_bad_fraction * max(reads, self.min_reads_for_fraction)
        if bad > limit:
            raise TooManyBadSamplesError(
                f'source {self.names[k]!r}: {bad} of {reads} samples read in this process '
                f'were bad, more than max_bad_fraction={self.max_bad_fraction} allows '
                f'(judged over at least {self.min_reads_for_fraction} reads); last: '
                f'{err.path}: {err.reason}')
        first = max(1, self.log_first_bad)
        if bad <= first or (bad % first == 0 and _is_power_of_ten(bad // first)):
            note = f'; from now on logged only at {10 * first}, {100 * first}, ... bad ' \
                'samples' if bad == first else ''
            print_log(f'Skipped bad sample of source {self.names[k]!r}: {err.path}: '
                      f'{err.reason} ({bad} bad of {reads} read in this process{note})',
                      logger='current', level=logging.WARNING)

    #: Names of the columns of :meth:`take_counts` and :meth:`counter_totals`.
    counter_columns = COUNTER_COLUMNS

    def take_counts(self, steps: Optional[Sequence[int]] = None) -> torch.Tensor:
        """The counts of the given steps of the data stream (and of indices without a
        step; None: of everything), as a ``(sources, columns)`` tensor; they are then
        cleared, so that each count is taken once. Call it in the training process, for
        consumed steps.

        With :class:`MultiSourceSampler` each step has its own row, written by the one worker
        that loads it, so the counts are exact. Indices without a step (another sampler)
        share one row that every worker increments without a lock: those counts are
        approximate (two workers' simultaneous increments can count once)."""
        if steps is None:
            rows = list(range(COUNTER_STEPS + 1))
        else:
            rows = sorted({step % COUNTER_STEPS for step in steps} | {COUNTER_STEPS})
        taken = self._step_counts[rows].sum(dim=0)
        self._step_counts[rows] = 0
        self._taken += taken
        return taken

    def counter_totals(self) -> torch.Tensor:
        """``(sources, columns)`` counts of everything this process and its dataloader
        workers read so far (batches fetched ahead included)."""
        return self._taken + self._step_counts.sum(dim=0)

    def bad_sample_counts(self) -> Dict[str, Dict[str, Union[int, Dict[str, int]]]]:
        """Per source, summed over this process and its dataloader workers: samples
        ``read``, ``bad`` ones, requests answered by a replacement (``replaced``) and the
        bad ones by kind (``bad_by_kind``, only kinds seen)."""
        totals = self.counter_totals().tolist()
        return {name: dict(read=row[0], bad=row[1], replaced=row[2],
                           bad_by_kind={kind: n for kind, n in zip(COUNTER_COLUMNS[3:], row[3:])
                                        if n})
                for name, row in zip(self.names, totals)}


def _is_power_of_ten(value: int) -> bool:
    while value >= 10 and value % 10 == 0:
        value //= 10
    return value == 1
