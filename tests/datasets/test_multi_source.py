import io
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from m3i_mm.datasets import (ImageTextDataset, MultiSourceDataset, TooManyBadSamplesError,
                             UnlabelledImageDataset)
from m3i_mm.datasets import multi_source
from m3i_mm.demo.photo_datasets import photo_caption_pairs, write_caption_manifest
from .conftest import MANIFEST_BAD, NUM_PAIRS


def source_cfgs(corpus):
    return [
        dict(type='ImageTextDataset', name='manifest', data_root=corpus.root,
             ann_file='captions.jsonl'),
        dict(type='m3i_mm.ImageTextDataset', name='shards', data_root=corpus.shard_root,
             shards='data-{000000..000003}.tar'),
        dict(type='LabelledImageDataset', name='labelled',
             dataset=dict(type='CustomDataset', data_root=corpus.classes_root)),
        dict(type='UnlabelledImageDataset', data_root=corpus.classes_root),
    ]


@pytest.fixture
def logged(monkeypatch):
    messages = []
    monkeypatch.setattr(multi_source, 'print_log', lambda msg, **kw: messages.append(msg))
    return messages


def test_sources_from_configs_and_plain_metainfo(corpus):
    ds = MultiSourceDataset(source_cfgs(corpus), max_bad_fraction=0.5)
    assert ds.names == ['manifest', 'shards', 'labelled', '3:UnlabelledImageDataset']
    assert ds.source_sizes == [40, 39, 16, 16] and len(ds) == 111
    assert ds.source_block_sizes == [None, [10, 9, 10, 10], None, None]
    assert [ds.locate(i) for i in (0, 39, 40, 79, 110)] == [(0, 0), (0, 39), (1, 0), (2, 0),
                                                           (3, 15)]
    with pytest.raises(IndexError, match='out of range'):
        ds.locate(111)
    buf = io.BytesIO()  # checkpoints store the metainfo: it must load with weights_only
    torch.save(ds.metainfo, buf)
    buf.seek(0)
    meta = torch.load(buf, weights_only=True)
    assert meta['sources'][2]['classes'] == sorted(corpus.classes)
    sample = ds[80]
    assert sample['source'] == 2 and sample['source_name'] == 'labelled'
    assert set(sample) == {'img', 'img_path', 'gt_label', 'caption', 'source', 'source_name',
                           'sample_key', 'ori_shape', 'img_shape'}


def test_bad_samples_are_replaced_from_the_same_source(corpus, logged):
    ds = MultiSourceDataset(source_cfgs(corpus)[:2], max_bad_fraction=0.5)
    replacements = {}
    for row in MANIFEST_BAD:
        sample = ds[row]
        assert sample['source'] == 0 and sample['caption']
        assert sample['sample_key'] != f'images/{row:05d}.jpg#{row}'
        replacements[row] = sample['sample_key']
    assert ds.bad_sample_counts()['manifest']['bad'] >= len(MANIFEST_BAD)
    for row, kind in MANIFEST_BAD.items():
        path = osp.join(corpus.root, 'images', f'{row:05d}.jpg')
        assert any(path in m and "source 'manifest'" in m for m in logged), (kind, logged)
    again = MultiSourceDataset(source_cfgs(corpus)[:2], max_bad_fraction=0.5)
    assert {row: again[row]['sample_key'] for row in MANIFEST_BAD} == replacements
    good = [ds[i]['sample_key'] for i in range(NUM_PAIRS) if i not in MANIFEST_BAD]
    assert good == [f'images/{i:05d}.jpg#{i}' for i in range(NUM_PAIRS) if i not in MANIFEST_BAD]


def test_pipelines_shared_and_per_source(corpus):
    init_default_scope('mmpretrain')
    shared = [dict(type='Resize', scale=(8, 8)), dict(type='PackInputs', meta_keys=('source',))]
    cfgs = source_cfgs(corpus)
    cfgs[2]['pipeline'] = [dict(type='Resize', scale=(4, 4))]
    ds = MultiSourceDataset(cfgs, pipeline=shared, max_bad_fraction=0.5)
    packed = ds[0]
    assert packed['inputs'].shape == (3, 8, 8) and packed['data_samples'].source == 0
    assert ds[87]['img'].shape == (4, 4, 3) and ds[87]['gt_label'] == 2  # 'coffee'


def test_flood_of_bad_samples_is_a_clear_error(tmp_path, logged):
    pairs = photo_caption_pairs(30)
    write_caption_manifest(str(tmp_path), pairs, 'm.jsonl',
                           bad={i: 'random_bytes' for i in range(0, 30, 2)})
    ds = MultiSourceDataset([dict(type='ImageTextDataset', name='noisy', data_root=str(tmp_path),
                                  ann_file='m.jsonl')],
                            max_bad_fraction=0.2, min_reads_for_fraction=10)
    with pytest.raises(TooManyBadSamplesError,
                       match=r"source 'noisy': 3 of \d+ samples read in this process were bad, "
                             r'more than max_bad_fraction=0.2'):
        for i in range(30):
            ds[i]
    assert len(logged) == 2  # the first two were logged one by one, then the error


def test_source_with_only_bad_samples_stops_retrying(tmp_path):
    write_caption_manifest(str(tmp_path), photo_caption_pairs(5), 'm.jsonl',
                           bad={i: 'missing' for i in range(5)})
    ds = MultiSourceDataset([ImageTextDataset(str(tmp_path), 'm.jsonl')],
                            max_bad_fraction=1.0, max_replacements=3)
    with pytest.raises(TooManyBadSamplesError, match='sample 2 and 3 replacements'):
        ds[2]
    assert ds.bad_sample_counts()['0:ImageTextDataset'] == dict(
        read=4, bad=4, replaced=0, bad_by_kind={'missing file': 4})


def test_bad_sample_log_thins_out(tmp_path, logged):
    write_caption_manifest(str(tmp_path), photo_caption_pairs(4), 'm.jsonl',
                           bad={0: 'missing'})
    ds = MultiSourceDataset([ImageTextDataset(str(tmp_path), 'm.jsonl')],
                            max_bad_fraction=1.0, log_first_bad=2)
    for _ in range(25):
        ds[0]
    bad = ds.bad_sample_counts()['0:ImageTextDataset']['bad']
    assert bad >= 25
    counts = [int(m.split('(')[1].split(' bad')[0]) for m in logged]
    assert counts == [c for c in (1, 2, 20, 200) if c <= bad]
    assert 'from now on logged only at 20, 200' in logged[1]


def test_configuration_errors(corpus):
    with pytest.raises(ValueError, match='at least one source'):
        MultiSourceDataset([])
    with pytest.raises(ValueError, match='names must be unique'):
        MultiSourceDataset([dict(type='UnlabelledImageDataset', name='x',
                                 data_root=corpus.classes_root)] * 2)
    with pytest.raises(TypeError, match='not an m3i_mm ImageSource'):
        MultiSourceDataset([[1, 2, 3]])
    with pytest.raises(KeyError, match='NoSuchDataset'):
        MultiSourceDataset([dict(type='NoSuchDataset')])
    assert len(MultiSourceDataset([UnlabelledImageDataset(corpus.classes_root)])) == 16


# ------------------------------------------------------------------ issue 13
@pytest.mark.parametrize('kwargs, message', [
    (dict(max_replacements=-1), 'max_replacements must be an integer >= 0, got -1'),
    (dict(max_bad_fraction=1.5), r'max_bad_fraction must be a fraction in \[0, 1\], got 1.5'),
    (dict(max_bad_fraction=-0.1), r'max_bad_fraction must be a fraction in \[0, 1\]'),
    (dict(max_bad_fraction=float('nan')), r'max_bad_fraction must be a fraction'),
    (dict(min_reads_for_fraction=2.5), 'min_reads_for_fraction must be an integer >= 0'),
    (dict(log_first_bad=-1), 'log_first_bad must be an integer >= 0'),
])
def test_bad_arguments_are_named_at_construction(corpus, kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiSourceDataset([UnlabelledImageDataset(corpus.classes_root)], **kwargs)


def test_counts_by_kind_and_replacements(corpus, logged):
    ds = MultiSourceDataset(source_cfgs(corpus)[:2], max_bad_fraction=0.5)
    for i in range(NUM_PAIRS):
        ds[i]
    counts = ds.bad_sample_counts()['manifest']
    assert counts['replaced'] == len(MANIFEST_BAD)  # each bad row answered by a replacement
    assert counts['bad'] >= len(MANIFEST_BAD) and counts['read'] == NUM_PAIRS + counts['bad']
    assert counts['bad_by_kind'].keys() >= {'truncated image', 'undecodable image',
                                            'missing file', 'empty caption'}
    assert sum(counts['bad_by_kind'].values()) == counts['bad']


def test_counts_include_the_dataloader_workers(corpus):
    """Workers count in shared memory: the training process sees their reads."""
    from torch.utils.data import DataLoader
    ds = MultiSourceDataset(source_cfgs(corpus)[:1], max_bad_fraction=0.5)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=list)
    assert sum(len(batch) for batch in loader) == NUM_PAIRS
    counts = ds.bad_sample_counts()['manifest']
    assert counts['replaced'] == len(MANIFEST_BAD)
    assert counts['read'] == NUM_PAIRS + counts['bad']
    assert ds._reads == [0], 'the main process read nothing itself'


def test_transforms_are_seeded_by_the_draw_key(corpus):
    """A SampleIndex's key fixes the random transforms, whatever ran before, and the
    caller's random state is left as it was."""
    from m3i_mm.datasets.multi_source_sampler import SampleIndex
    init_default_scope('mmpretrain')
    pipeline = [dict(type='RandomResizedCrop', scale=8),
                dict(type='RandomFlip', prob=0.5, direction='horizontal')]
    ds = MultiSourceDataset([UnlabelledImageDataset(corpus.classes_root)], pipeline=pipeline)
    first = ds[SampleIndex(3, rng_key=12345)]['img']
    np.random.rand(7)  # whatever was drawn before
    torch.rand(3)
    assert np.array_equal(ds[SampleIndex(3, rng_key=12345)]['img'], first)
    others = [ds[SampleIndex(3, rng_key=key)]['img'] for key in range(1, 9)]
    assert not all(np.array_equal(first, img) for img in others), 'the key must matter'
    # the caller's streams continue as if the sample had not been transformed
    np.random.seed(0)
    torch.manual_seed(0)
    ds[SampleIndex(3, rng_key=1)]
    assert np.random.rand() == np.random.RandomState(0).rand()
    assert torch.equal(torch.rand(2), torch.rand(2, generator=torch.Generator().manual_seed(0)))


def test_lazy_init_builds_the_config_without_reading_the_data(corpus, tmp_path, monkeypatch):
    """M3I configs could not be built without reading their data (issue 20)."""
    reads = []
    real = multi_source.DATASETS.build
    monkeypatch.setattr(multi_source.DATASETS, 'build',
                        lambda cfg, *a, **k: reads.append(cfg['type']) or real(cfg, *a, **k))
    missing = [dict(type='ImageTextDataset', name='absent', data_root=str(tmp_path),
                    shards='{00000..00099}.tar')]
    lazy = MultiSourceDataset(missing, lazy_init=True)
    assert lazy.names == ['absent'] and reads == []
    with pytest.raises(FileNotFoundError, match='100 of the 100 shards'):
        len(lazy)  # the data are read when first needed
    lazy = MultiSourceDataset(source_cfgs(corpus), max_bad_fraction=0.5, lazy_init=True)
    assert lazy.names[3] == '3:UnlabelledImageDataset' and reads == ['ImageTextDataset']
    assert lazy.source_sizes == [40, 39, 16, 16] and len(reads) == 5
    eager = MultiSourceDataset(source_cfgs(corpus), max_bad_fraction=0.5)
    assert lazy.names == eager.names and lazy[50]['sample_key'] == eager[50]['sample_key']
    with pytest.raises(KeyError, match='NoSuchDataset'):
        MultiSourceDataset([dict(type='NoSuchDataset')], lazy_init=True).full_init()
