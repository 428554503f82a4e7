"""Keyed data streams for any sampler and dataset: bit-exact resume of downstream training.

mmengine seeds the data pipeline's random transforms (crops, flips, photometric
distortion) once per dataloader worker (or not at all with ``num_workers=0``, where they
share the generators of the model's dropout and drop path), so what a sample's transforms
draw depends on how much else was drawn before it: a resumed run augments differently
from the uninterrupted one. The M3I configs avoid this with
:class:`~m3i_mm.datasets.MultiSourceSampler`, whose indices carry the key of their place
in the data stream. These two wrappers give every other sampler and dataset the same
property:

- :class:`KeyedSampler` wraps a sampler (mmengine's ``DefaultSampler`` or
  ``InfiniteSampler``, mmdet's and mmpretrain's samplers, ...) and gives each index it
  yields a key (:class:`~m3i_mm.datasets.SampleIndex`), a hash of (seed, rank, epoch, pass
  of the sampler within the epoch, position in the pass): the place of the draw in the
  stream, which a resumed run reaches again (epoch-based loops restart the epoch at the
  same permutation; ``IterBasedTrainLoop`` replays the stream up to the resumed
  iteration);
- :class:`KeyedDataset` wraps the dataset and runs each keyed sample's loading and
  pipeline under python, numpy and torch generators seeded from its key
  (:func:`~m3i_mm.utils.randomness.isolated_random_state`), in whichever process or
  worker.

With ``m3i_mm.IterationSeedHook`` for the model's draws, ``tools/train.py`` applies
both to every config (:func:`m3i_mm.cli.launch.use_exact_resume`). Indices stay plain
``int`` subclasses, so batch samplers (mmdet's ``AspectRatioBatchSampler``) and dataset
wrappers see what they always saw.
"""
from typing import Iterator, Optional, Union

from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from torch.utils.data import Dataset, Sampler

from m3i_mm.datasets.multi_source_sampler import SampleIndex
from m3i_mm.registry import DATA_SAMPLERS, DATASETS
from m3i_mm.utils.randomness import derive_key, isolated_random_state

__all__ = ['KeyedDataset', 'KeyedSampler']

_TAG = 0x5EED  # keeps these keys apart from the M3I stream's and IterationSeedHook's


@DATA_SAMPLERS.register_module()
class KeyedSampler(Sampler):
    """A sampler whose indices carry the key of their place in the data stream.

    Args:
        sampler: Config of the wrapped sampler (built with this sampler's ``dataset`` and
            ``seed``, as mmengine builds samplers) or a built sampler.
        dataset: The dataset (mmengine passes it).
        seed: The run's seed (mmengine passes ``randomness.seed``; None with
            ``diff_rank_seed=True``, then one is drawn and shared by the ranks, as
            mmengine's samplers do, and a resumed run draws another).
    """

    def __init__(self, sampler: Union[dict, Sampler], dataset=None,
                 seed: Optional[int] = None) -> None:
        if isinstance(sampler, dict):
            sampler = MMENGINE_DATA_SAMPLERS.build(
                sampler, default_args=dict(dataset=dataset, seed=seed))
        self.sampler = sampler
        self.dataset = dataset  # batch samplers read their sampler's dataset
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.rank = get_dist_info()[0]
        self.epoch = 0
        self._passes = 0

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the wrapped sampler; a new epoch starts counting passes anew."""
        if epoch != self.epoch:
            self._passes = 0
        self.epoch = epoch
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[SampleIndex]:
        passes = self._passes
        self._passes += 1
        prefix = derive_key(_TAG, self.seed, self.rank, self.epoch, passes)
        for position, index in enumerate(self.sampler):
            yield SampleIndex(int(index), derive_key(prefix, position))

    def __len__(self) -> int:
        return len(self.sampler)


@DATASETS.register_module()
class KeyedDataset(Dataset):
    """A dataset whose samples are transformed under the key of their index's draw.

    Indices with a key (:class:`~m3i_mm.datasets.SampleIndex`, from :class:`KeyedSampler`)
    load and transform the sample under generators seeded from it; plain indices use the
    generators as they are. Everything else (``metainfo``, ``get_data_info``,
    ``full_init``, ...) is the wrapped dataset's.

    Args:
        dataset: Config of the wrapped dataset (built in the current default scope) or a
            built dataset.
    """

    def __init__(self, dataset: Union[dict, Dataset]) -> None:
        if isinstance(dataset, dict):
            dataset = MMENGINE_DATASETS.build(dataset)
        self.dataset = dataset

    def __getitem__(self, index: int):
        rng_key = getattr(index, 'rng_key', None)
        if rng_key is None:
            return self.dataset[index]
        with isolated_random_state(rng_key):
            return self.dataset[int(index)]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == 'dataset':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)
