"""One map-style dataset over several sources, with bad-sample skipping and per-source pipelines."""
import logging
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from mmengine.dataset import Compose
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
from torch.utils.data import Dataset

from m3i_mm.registry import DATASETS
from .base import BadSampleError, ImageSource
from .permutation import derive_key

__all__ = ['MultiSourceDataset', 'TooManyBadSamplesError', 'source_offsets']


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
    raised when a source's bad count exceeds ``max_bad_fraction * max(reads,
    min_reads_for_fraction)``, or when ``max_replacements`` replacements in a row are bad.
    Counts are per process (each dataloader worker counts what it reads).

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
    """

    def __init__(self,
                 sources: Sequence[Union[dict, ImageSource]],
                 pipeline: Sequence = (),
                 max_bad_fraction: float = 0.05,
                 min_reads_for_fraction: int = 100,
                 max_replacements: int = 16,
                 log_first_bad: int = 5) -> None:
        if not sources:
            raise ValueError('MultiSourceDataset needs at least one source')
        self.sources: List[ImageSource] = []
        self.names: List[str] = []
        self.pipelines: List[Compose] = []
        shared = Compose(list(pipeline))
        for k, source in enumerate(sources):
            name, own_pipeline = None, None
            if isinstance(source, dict):
                cfg = dict(source)
                name = cfg.pop('name', None)
                own_pipeline = cfg.pop('pipeline', None)
                with DefaultScope.overwrite_default_scope('m3i_mm'):
                    source = DATASETS.build(cfg)
            if not isinstance(source, ImageSource):
                raise TypeError(f'source {k} is a {type(source).__name__}, not an m3i_mm '
                                'ImageSource (ImageTextDataset, LabelledImageDataset, '
                                'UnlabelledImageDataset)')
            if len(source) == 0:
                raise ValueError(f'source {k} ({name or type(source).__name__}) is empty')
            self.sources.append(source)
            self.names.append(name or f'{k}:{type(source).__name__}')
            self.pipelines.append(shared if own_pipeline is None else Compose(own_pipeline))
        if len(set(self.names)) != len(self.names):
            raise ValueError(f'source names must be unique, got {self.names}')
        self.source_sizes = [len(s) for s in self.sources]
        self.source_block_sizes = [s.block_sizes for s in self.sources]
        self._offsets = source_offsets(self.source_sizes)
        self.max_bad_fraction = max_bad_fraction
        self.min_reads_for_fraction = min_reads_for_fraction
        self.max_replacements = max_replacements
        self.log_first_bad = log_first_bad
        self._reads = [0] * len(self.sources)
        self._bad = [0] * len(self.sources)

    def __len__(self) -> int:
        return int(sum(self.source_sizes))

    @property
    def metainfo(self) -> dict:
        return dict(sources=[dict(name=name, size=size, **source.metainfo)
                             for name, size, source in zip(self.names, self.source_sizes,
                                                           self.sources)])

    def locate(self, index: int) -> Tuple[int, int]:
        """(source, local index) of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f'MultiSourceDataset: index {index} out of range [0, {len(self)})')
        source = int(np.searchsorted(self._offsets, index, side='right')) - 1
        return source, index - int(self._offsets[source])

    def __getitem__(self, index: int) -> dict:
        k, i = self.locate(index)
        size = self.source_sizes[k]
        for attempt in range(self.max_replacements + 1):
            local = i if attempt == 0 else derive_key(k, i, attempt) % size
            self._reads[k] += 1
            try:
                sample = self.sources[k].load(local)
            except BadSampleError as err:
                self._on_bad(k, err)
                continue
            sample.update(source=k, source_name=self.names[k])
            return self.pipelines[k](sample)
        raise TooManyBadSamplesError(
            f'source {self.names[k]!r}: sample {i} and {self.max_replacements} replacements '
            'in a row were all bad; the source looks broken (see the logged paths)')

    def _on_bad(self, k: int, err: BadSampleError) -> None:
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

    def bad_sample_counts(self) -> Dict[str, Dict[str, int]]:
        """Per source: samples read and bad ones found, in this process."""
        return {name: dict(read=r, bad=b)
                for name, r, b in zip(self.names, self._reads, self._bad)}


def _is_power_of_ten(value: int) -> bool:
    while value >= 10 and value % 10 == 0:
        value //= 10
    return value == 1
