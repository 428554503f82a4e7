import io
import pickle
import itertools
import math
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from m3i_mm.datasets import MultiSourceDataset, MultiSourceSampler
from m3i_mm.datasets import multi_source_sampler
from m3i_mm.datasets.multi_source import source_offsets


def fake_dataset(sizes, block_sizes=None):
    """What the sampler reads from a MultiSourceDataset: sizes (and shard sizes)."""
    return SimpleNamespace(source_sizes=list(sizes),
                           source_block_sizes=block_sizes or [None] * len(sizes))


def batches(sampler, num_batches):
    it = iter(sampler)
    return [[next(it) for _ in range(sampler.batch_size)] for _ in range(num_batches)]


def source_of(indices, sizes):
    return np.searchsorted(source_offsets(sizes), np.asarray(indices), side='right') - 1


@pytest.mark.parametrize('mode', ['mixed', 'homogeneous'])
def test_ratios_hold_within_statistical_tolerance(mode):
    sizes, ratios, batch, steps = [5000, 3000, 100], [0.5, 0.3, 0.2], 8, 2000
    sampler = MultiSourceSampler(fake_dataset(sizes), batch, ratios=ratios, mode=mode, seed=3,
                                 infinite=True)
    stream = np.array(list(itertools.chain(*batches(sampler, steps))))
    sources = source_of(stream, sizes)
    counts = np.bincount(sources, minlength=3)
    # mixed: each batch is an independent multinomial draw, so the count of source k over
    # all samples is Binomial(steps * batch, r_k). homogeneous: whole batches are drawn,
    # so the number of batches of source k is Binomial(steps, r_k). We allow 5 standard
    # deviations (a false alarm has probability < 1e-6; the draw is seeded anyway).
    units = steps * batch if mode == 'mixed' else steps
    per_unit = 1 if mode == 'mixed' else batch
    for k, r in enumerate(ratios):
        sd = math.sqrt(units * r * (1 - r))
        assert abs(counts[k] / per_unit - units * r) <= 5 * sd, (k, counts)
    if mode == 'homogeneous':
        per_batch = sources.reshape(steps, batch)
        assert (per_batch == per_batch[:, :1]).all()
    # The small source (100 samples, ~3200 draws) has cycled through many passes: each
    # pass is a permutation, so every sample is used equally often (+-1 pass).
    small = np.bincount(stream[sources == 2] - 8000, minlength=100)
    assert small.max() - small.min() <= 1


def test_homogeneous_batches_pick_the_same_source_on_all_ranks():
    sizes = [300, 200, 100]
    ranks = [batches(MultiSourceSampler(fake_dataset(sizes), 4, mode='homogeneous', seed=1,
                                        rank=r, world_size=3, infinite=True), 50)
             for r in range(3)]
    for step in range(50):
        assert len({int(source_of(ranks[r][step], sizes)[0]) for r in range(3)}) == 1


@pytest.mark.parametrize('mode', ['mixed', 'homogeneous'])
def test_two_ranks_never_share_a_sample_within_a_pass(mode):
    sizes, batch, steps = [1000, 700, 300], 8, 40
    streams = []
    for rank in (0, 1):
        sampler = MultiSourceSampler(fake_dataset(sizes, [None, [70] * 10, None]), batch,
                                     mode=mode, seed=7, rank=rank, world_size=2,
                                     infinite=True, shard_group_size=3)
        streams.append(list(itertools.chain(*batches(sampler, steps))))
    consumed = np.bincount(source_of(streams[0], sizes), minlength=3) * 2
    assert (consumed <= sizes).all(), 'the test must stay within the first pass'
    for stream in streams:
        assert len(set(stream)) == len(stream)
    assert not set(streams[0]) & set(streams[1])


def test_ranks_split_a_pass_exactly():
    n = 47  # odd: rank 1 reaches the second pass first
    per_rank = [list(itertools.chain(*batches(
        MultiSourceSampler(fake_dataset([n]), 4, seed=0, rank=r, world_size=2,
                           infinite=True), 6))) for r in (0, 1)]
    first_pass = per_rank[0] + per_rank[1][:23]
    assert sorted(first_pass) == list(range(n))


def test_deterministic_for_a_seed():
    def stream(seed):
        return batches(MultiSourceSampler(fake_dataset([50, 60]), 5, seed=seed, infinite=True),
                       30)
    assert stream(11) == stream(11)
    assert stream(11) != stream(12)


def test_finite_iterators_continue_and_stop_at_epoch_ends():
    sampler = MultiSourceSampler(fake_dataset([30, 10]), 4, seed=0)
    assert sampler.steps_per_epoch == 10 and len(sampler) == 40
    epochs = [list(sampler) for _ in range(3)]
    infinite = MultiSourceSampler(fake_dataset([30, 10]), 4, seed=0, infinite=True)
    assert list(itertools.chain(*epochs)) == list(itertools.chain(*batches(infinite, 30)))


def roundtrip(state):
    """A state as it comes back from a checkpoint loaded with weights_only=True."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_roundtrip_resumes_the_exact_remaining_order():
    sizes = [40, 25, 9]
    reference = batches(MultiSourceSampler(fake_dataset(sizes), 4, seed=5, infinite=True), 60)
    sampler = MultiSourceSampler(fake_dataset(sizes), 4, seed=5, infinite=True)
    it = iter(sampler)
    for _ in range(23 * 4 + 2):  # fetched ahead of what was consumed, mid-batch
        next(it)
    sampler.mark_consumed(21)
    state = roundtrip(sampler.state_dict())
    assert state['step'] == 21 and all(isinstance(p, int) for p in state['source_positions'])
    resumed = MultiSourceSampler(fake_dataset(sizes), 4, seed=999, infinite=True)
    resumed.load_state_dict(state)
    assert resumed.seed == 5  # the stream's seed comes with the state
    assert batches(resumed, 39) == reference[21:]
    # Resuming twice (state taken from a resumed sampler) is exact as well.
    resumed.mark_consumed(10)
    again = MultiSourceSampler(fake_dataset(sizes), 4, seed=5, infinite=True)
    again.load_state_dict(roundtrip(resumed.state_dict()))
    assert batches(again, 29) == reference[31:]


def test_consumption_not_prefetching_defines_the_state(corpus):
    ds = MultiSourceDataset([dict(type='ImageTextDataset', data_root=osp.dirname(
                                  corpus.clean_manifest), ann_file='captions.jsonl'),
                             dict(type='UnlabelledImageDataset', data_root=corpus.classes_root)])
    sampler = MultiSourceSampler(ds, 4, seed=0, infinite=True)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2, prefetch_factor=2,
                        collate_fn=list)
    it = iter(loader)
    seen = []
    for _ in range(5):
        seen.append([s['sample_key'] for s in next(it)])
        sampler.mark_consumed()
    assert sampler._next_step > 5  # the workers have fetched ahead
    state = roundtrip(sampler.state_dict())
    for _ in range(4):
        seen.append([s['sample_key'] for s in next(it)])
    del it
    resumed = MultiSourceSampler(ds, 4, seed=0, infinite=True)
    resumed.load_state_dict(state)
    it = iter(DataLoader(ds, batch_size=4, sampler=resumed, num_workers=2,
                         collate_fn=list))
    assert [[s['sample_key'] for s in next(it)] for _ in range(4)] == seen[5:]
    del it


def test_changed_configuration_warns_and_keeps_positions(monkeypatch):
    warnings = []
    monkeypatch.setattr(multi_source_sampler, 'print_log',
                        lambda msg, **kw: warnings.append(msg))
    two_ranks = [MultiSourceSampler(fake_dataset([200, 100]), 4, seed=1, rank=r, world_size=2,
                                    infinite=True) for r in (0, 1)]
    used = set()
    for sampler in two_ranks:
        used |= set(itertools.chain(*batches(sampler, 10)))
        sampler.mark_consumed(10)
    one_rank = MultiSourceSampler(fake_dataset([200, 100]), 8, seed=1, infinite=True)
    one_rank.load_state_dict(roundtrip(two_ranks[0].state_dict()))
    assert 'world_size: 2 -> 1' in warnings[0] and 'batch_size: 4 -> 8' in warnings[0]
    after = list(itertools.chain(*batches(one_rank, 10)))
    consumed = np.bincount(source_of(sorted(used | set(after)), [200, 100]), minlength=2)
    assert (consumed <= [200, 100]).all(), 'the test must stay within the first pass'
    assert not used & set(after), 'no sample of the current pass may repeat'
    with pytest.raises(ValueError, match='the state has 2 sources, the dataset 3'):
        MultiSourceSampler(fake_dataset([1, 2, 3]), 4).load_state_dict(
            two_ranks[0].state_dict())


def test_configuration_errors():
    with pytest.raises(TypeError, match='source_sizes'):
        MultiSourceSampler(list(range(10)), 4)
    with pytest.raises(ValueError, match='mode must be one of'):
        MultiSourceSampler(fake_dataset([10]), 4, mode='random')
    with pytest.raises(ValueError, match='got 1 ratios for 2 sources'):
        MultiSourceSampler(fake_dataset([10, 10]), 4, ratios=[1])
    with pytest.raises(ValueError, match='>= 0 with a positive sum'):
        MultiSourceSampler(fake_dataset([10, 10]), 4, ratios=[1, -1])
    with pytest.raises(ValueError, match='rank 2 outside world size 2'):
        MultiSourceSampler(fake_dataset([10]), 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match='unsupported MultiSourceSampler state version'):
        MultiSourceSampler(fake_dataset([10]), 4).load_state_dict({'version': 0})


def test_ratios_hold_on_real_photos_with_corrupt_files(corpus):
    """Decoded samples (bad ones replaced) keep the sampler's source of every slot."""
    ds = MultiSourceDataset([
        dict(type='ImageTextDataset', data_root=corpus.root, ann_file='captions.csv'),
        dict(type='ImageTextDataset', data_root=corpus.shard_root,
             shards='data-{000000..000003}.tar'),
        dict(type='LabelledImageDataset',
             dataset=dict(type='CustomDataset', data_root=corpus.classes_root))],
        max_bad_fraction=0.5)
    ratios, batch, steps = [0.5, 0.3, 0.2], 8, 150
    sampler = MultiSourceSampler(ds, batch, ratios=ratios, seed=4, infinite=True)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=list)
    delivered = []
    for batch_samples, _ in zip(loader, range(steps)):
        delivered += [s['source'] for s in batch_samples]
    assigned = source_of(list(itertools.chain(*batches(
        MultiSourceSampler(ds, batch, ratios=ratios, seed=4, infinite=True), steps))),
        ds.source_sizes)
    assert delivered == assigned.tolist()
    bad = sum(c['bad'] for c in ds.bad_sample_counts().values())
    assert bad > 20, 'the corrupt rows and members must have been hit'
    counts = np.bincount(delivered, minlength=3)
    for k, r in enumerate(ratios):  # Binomial(steps * batch, r): 5 standard deviations
        assert abs(counts[k] - steps * batch * r) <= 5 * math.sqrt(steps * batch * r * (1 - r))


# ------------------------------------------------------------------ issue 13
@pytest.mark.parametrize('kwargs, message', [
    (dict(ratios=[1.0, float('nan')]), r'ratios must be finite numbers >= 0 .*nan'),
    (dict(ratios=[1.0, float('inf')]), r'ratios must be finite numbers >= 0 .*inf'),
    (dict(ratios=[1.0, -1.0]), r'ratios must be finite numbers >= 0'),
    (dict(steps_per_epoch=0), 'steps_per_epoch must be an integer >= 1, got 0'),
    (dict(steps_per_epoch=-3), 'steps_per_epoch must be an integer >= 1, got -3'),
    (dict(shard_group_size=0), 'shard_group_size must be an integer >= 1, got 0'),
])
def test_bad_arguments_are_named_at_construction(kwargs, message):
    """NaN/inf ratios failed at the first batch with numpy's message; steps_per_epoch <= 0
    gave a bare ZeroDivisionError or silent empty epochs."""
    with pytest.raises(ValueError, match=message):
        MultiSourceSampler(fake_dataset([10, 10]), 2, seed=0, **kwargs)
    with pytest.raises(ValueError, match='batch_size must be an integer >= 1'):
        MultiSourceSampler(fake_dataset([10, 10]), 0, seed=0)


def test_draw_keys_are_a_function_of_the_stream_position():
    """The key of a draw depends on (seed, source, position) only: the same sample slot has
    the same key whatever the world size, and keys are carried to dataloader workers."""
    from m3i_mm.datasets.multi_source_sampler import SampleIndex
    from m3i_mm.utils.randomness import derive_key, extend_keys
    positions = np.array([0, 1, 5, 2**40, -1])
    assert extend_keys(derive_key(9, 3), positions).tolist() == [
        derive_key(9, 3, int(p)) for p in positions]
    sizes = [50, 30]
    single = list(itertools.chain(*batches(MultiSourceSampler(
        fake_dataset(sizes), 4, seed=2, infinite=True), 6)))
    two = [list(itertools.chain(*batches(MultiSourceSampler(
        fake_dataset(sizes), 2, seed=2, infinite=True, rank=r, world_size=2), 6)))
        for r in range(2)]
    assert all(isinstance(i, SampleIndex) for i in single)
    key_of = {}
    for index in itertools.chain(*two):
        key_of.setdefault(int(index), set()).add(index.rng_key)
    assert len(set(i.rng_key for i in single)) == len(single)  # every draw its own key
    # both runs draw the first passes of the same shuffles: equal samples, equal keys
    shared = [i for i in single if int(i) in key_of]
    assert len(shared) > 10
    assert all(i.rng_key in key_of[int(i)] for i in shared)
    restored = pickle.loads(pickle.dumps(single[3]))
    assert restored == single[3] and restored.rng_key == single[3].rng_key


# ------------------------------------------------------------------ issue 21
@pytest.mark.parametrize('ratios, message', [
    ('111', r"ratios must be a list of numbers, one per source, or a dict .*'111'"),
    (['1', '2', '3'], r"ratios must be numbers, got '1'"),
    ([1, True, 1], 'ratios must be numbers, got True'),
])
def test_ratios_that_are_not_numbers_are_refused(ratios, message):
    """ratios='111' was read as [1.0, 1.0, 1.0] for three sources (issue 21.15)."""
    with pytest.raises(ValueError, match=message):
        MultiSourceSampler(fake_dataset([10, 10, 10]), 2, seed=0, ratios=ratios)


def test_ratios_by_source_name():
    """A dict of ratios failed with "could not convert string to float" (issue 21.14)."""
    named = SimpleNamespace(source_sizes=[10, 10, 10], source_block_sizes=[None] * 3,
                            names=['laion', 'cc12m', 'in1k'])
    by_name = MultiSourceSampler(named, 4, seed=0, ratios=dict(in1k=1, laion=6, cc12m=3))
    assert by_name.ratios == [6.0, 3.0, 1.0]
    by_list = MultiSourceSampler(named, 4, seed=0, ratios=[6, 3, 1])
    assert batches(by_name, 5) == batches(by_list, 5)
    with pytest.raises(ValueError, match=r"do not match the sources \['laion', 'cc12m', 'in1k'\]"
                                         r"; unknown: \['yfcc'\]; missing: \['in1k'\]"):
        MultiSourceSampler(named, 4, seed=0, ratios=dict(laion=6, cc12m=3, yfcc=1))
    with pytest.raises(ValueError, match='ratios given by source name need a dataset with '
                                         'source names'):
        MultiSourceSampler(fake_dataset([10]), 4, seed=0, ratios=dict(a=1))


@pytest.mark.parametrize('change, message', [
    (dict(step=-1), 'step=-1'),
    (dict(source_positions=[5, -3]), r'source_positions=\[5, -3\]'),
    (dict(source_positions=[5, 2.5]), r'source_positions=\[5, 2.5\]'),
    (dict(step='7'), "step='7'"),
    (dict(seed=None), 'seed=None'),
])
def test_negative_or_malformed_sampler_state_is_refused(change, message):
    """A state with a negative step or positions was loaded and drew from negative stream
    positions (issue 21.15)."""
    sampler = MultiSourceSampler(fake_dataset([10, 10]), 2, seed=0)
    state = dict(sampler.state_dict(), **change)
    with pytest.raises(ValueError, match=f'MultiSourceSampler state: {message}.*damaged'):
        MultiSourceSampler(fake_dataset([10, 10]), 2, seed=0).load_state_dict(state)


@pytest.mark.parametrize('blocks', [[[4, 4]], [[[4, 4], [1, 1]]], [[4, -4, 10]], [[]],
                                    [[4.5, 5.5]]])
def test_block_sizes_that_do_not_describe_the_source_are_refused(blocks):
    """Block sizes that do not add up to the source were accepted; the sampler then failed
    at some batch or drew outside the source (issue 21.15)."""
    with pytest.raises(ValueError, match='source 0: block sizes .* do not describe its 10 '
                                         'samples'):
        MultiSourceSampler(fake_dataset([10], blocks), 2, seed=0)
    assert MultiSourceSampler(fake_dataset([8], [[4, 4]]), 2, seed=0).source_block_sizes == [
        [4, 4]]
