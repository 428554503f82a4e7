"""m3i_mm.KeyedSampler / KeyedDataset: keys are functions of the place in the stream, and a
keyed sample's transforms draw from generators seeded by its key alone. (Whole resumed runs
are compared in tests/engine/test_exact_resume.py.)"""
import random

import numpy as np
import torch
from mmengine.dataset import DefaultSampler, InfiniteSampler
from torch.utils.data import Dataset

from m3i_mm.engine.keyed_stream import KeyedDataset, KeyedSampler


class RandomDraws(Dataset):
    """Each item is what python, numpy and torch draw for it (a stand-in for random
    transforms); ``info`` stands in for a dataset's annotations."""

    metainfo = dict(classes=('a', 'b'))

    def __len__(self):
        return 6

    def __getitem__(self, index):
        assert type(index) is int
        return index, random.random(), float(np.random.rand()), float(torch.rand(()))

    def get_data_info(self, index):
        return dict(width=10 + index, height=10)


def keys(sampler, count=None):
    drawn = []
    for i, index in enumerate(sampler):
        if count is not None and i == count:
            break
        drawn.append((int(index), index.rng_key))
    return drawn


def test_keys_are_a_function_of_seed_epoch_and_position():
    dataset = RandomDraws()
    first = KeyedSampler(dict(type='DefaultSampler', shuffle=True), dataset, seed=3)
    again = KeyedSampler(DefaultSampler(dataset, shuffle=True, seed=3), dataset, seed=3)
    assert isinstance(first.sampler, DefaultSampler) and len(first) == 6
    epoch0 = keys(first)
    assert keys(again) == epoch0  # a new run (or a resumed one) draws the same
    assert len({key for _, key in epoch0}) == 6
    first.set_epoch(1)
    again.set_epoch(1)
    epoch1 = keys(first)
    assert keys(again) == epoch1
    assert not {key for _, key in epoch0} & {key for _, key in epoch1}  # new augmentations
    other_seed = KeyedSampler(dict(type='DefaultSampler', shuffle=True), dataset, seed=4)
    other_seed.set_epoch(1)
    assert not {key for _, key in keys(other_seed)} & {key for _, key in epoch1}


def test_passes_without_set_epoch_get_new_keys_and_a_replay_repeats_them():
    """An IterBasedTrainLoop over a finite sampler under a batch sampler restarts it
    without set_epoch; a resumed run replays the same sequence of passes."""
    dataset = RandomDraws()

    def two_passes():
        sampler = KeyedSampler(dict(type='DefaultSampler', shuffle=False), dataset, seed=0)
        sampler.set_epoch(0)  # DistSamplerSeedHook at the start
        return keys(sampler), keys(sampler)

    first, second = two_passes()
    assert [i for i, _ in first] == [i for i, _ in second]  # same order (no new epoch)
    assert not {k for _, k in first} & {k for _, k in second}  # other augmentations
    assert two_passes() == (first, second)


def test_an_infinite_stream_replays_from_its_start():
    dataset = RandomDraws()
    stream = keys(KeyedSampler(dict(type='InfiniteSampler', shuffle=True), dataset, seed=5),
                  count=20)
    resumed = KeyedSampler(InfiniteSampler(dataset, shuffle=True, seed=5), dataset, seed=5)
    assert keys(resumed, count=20) == stream
    assert len({key for _, key in stream}) == 20  # every draw its own key, passes included


def test_a_keyed_sample_draws_from_its_key_alone():
    dataset = KeyedDataset(RandomDraws())
    index = next(iter(KeyedSampler(dict(type='DefaultSampler', shuffle=False), dataset,
                                   seed=0)))
    torch.manual_seed(123)
    np.random.seed(123)
    state = torch.get_rng_state()
    first = dataset[index]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's streams are untouched
    torch.manual_seed(999)  # whatever was drawn before
    random.seed(999)
    assert dataset[index] == first
    assert dataset[int(index)][1:] != first[1:]  # a plain index draws from the generators


def test_the_wrappers_pass_the_dataset_through():
    """Batch samplers read their sampler's dataset (mmdet's AspectRatioBatchSampler), the
    runner the dataset's metainfo."""
    from mmdet.datasets.samplers import AspectRatioBatchSampler
    dataset = KeyedDataset(RandomDraws())
    sampler = KeyedSampler(dict(type='DefaultSampler', shuffle=True), dataset, seed=1)
    batches = list(AspectRatioBatchSampler(sampler, batch_size=2))
    assert sorted(int(i) for batch in batches for i in batch) == list(range(6))
    assert all(hasattr(i, 'rng_key') for batch in batches for i in batch)
    assert dataset.metainfo == dict(classes=('a', 'b')) and len(dataset) == 6
