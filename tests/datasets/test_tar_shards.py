import importlib.util
import json
import os
import os.path as osp
import tarfile

import pytest

from m3i_mm.datasets import BadSampleError, ImageTextDataset
from m3i_mm.datasets import tar_shards
from m3i_mm.datasets.tar_shards import ShardSet, expand_braces, shard_index_path
from m3i_mm.demo.photo_datasets import write_caption_shards
from tests.conftest import REPO, run_tool


def test_expand_braces():
    assert expand_braces('a-{000..002}.tar') == ['a-000.tar', 'a-001.tar', 'a-002.tar']
    assert expand_braces('{x,y}/{8..10}') == ['x/8', 'x/9', 'x/10', 'y/8', 'y/9', 'y/10']
    assert expand_braces('{a,b{1..2}}c') == ['ac', 'b1c', 'b2c']
    assert expand_braces('plain.tar') == ['plain.tar']
    with pytest.raises(ValueError, match='unbalanced'):
        expand_braces('a-{000..002.tar')
    with pytest.raises(ValueError, match='unbalanced'):
        expand_braces('a-}.tar')


@pytest.fixture
def shard_dir(corpus, tmp_path):
    """Four fresh shards (no sidecar index yet) in their own folder."""
    root = tmp_path / 'shards'
    write_caption_shards(str(root), corpus.pairs[:20], 4)
    return root


@pytest.fixture
def logged(monkeypatch):
    messages = []
    monkeypatch.setattr(tar_shards, 'print_log', lambda msg, **kw: messages.append(msg))
    return messages


def count_scans(monkeypatch):
    scans = []
    real = tar_shards.scan_tar
    monkeypatch.setattr(tar_shards, 'scan_tar',
                        lambda f, size, name: scans.append(name) or real(f, size, name))
    return scans


def test_sidecar_indexes_are_written_once_and_reused(shard_dir, monkeypatch):
    scans = count_scans(monkeypatch)
    pattern = 'data-{000000..000003}.tar'
    first = ImageTextDataset(data_root=str(shard_dir), shards=pattern)
    assert len(scans) == 4 and first.block_sizes == [5, 5, 5, 5]
    assert sorted(p for p in os.listdir(shard_dir) if p.endswith('.idx')) == [
        f'data-{i:06d}.tar.idx' for i in range(4)]
    second = ImageTextDataset(data_root=str(shard_dir), shards=pattern, shard_cache_size=2)
    samples = [second[i]['sample_key'] for i in range(20)]
    assert len(scans) == 4, 'counts and offset tables must come from the sidecar indexes'
    assert samples == [f'data-{i // 5:06d}.tar/{i:05d}' for i in range(20)]
    assert len(second.shard_set._tables) == 2  # LRU bound


def test_stale_index_is_ignored(shard_dir, monkeypatch):
    shard = str(shard_dir / 'data-000000.tar')
    ImageTextDataset(shards=[shard])
    with open(shard, 'ab') as f:  # the shard changes after it was indexed
        f.write(b'\0' * 512)
    scans = count_scans(monkeypatch)
    assert len(ImageTextDataset(shards=[shard])) == 5 and scans == [shard]


def test_read_only_shards_use_the_index_cache_dir(shard_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'access', lambda path, mode: False)  # as if read-only
    shards = [str(shard_dir / f'data-{i:06d}.tar') for i in range(4)]
    cache = str(tmp_path / 'cache')
    ImageTextDataset(shards=shards, index_cache_dir=cache)
    assert not any(p.endswith('.idx') for p in os.listdir(shard_dir))
    assert all(osp.isfile(shard_index_path(s, cache)) for s in shards)
    scans = count_scans(monkeypatch)
    ds = ImageTextDataset(shards=shards, index_cache_dir=cache)
    assert ds[7]['sample_key'] == f'{shards[1]}/00007' and scans == []


def test_truncated_shard_keeps_its_complete_samples(corpus, shard_dir):
    shard = str(shard_dir / 'data-000000.tar')
    with tarfile.open(shard) as tar:
        last_image = tar.getmember('00004.jpg')
    with open(shard, 'r+b') as f:  # cut the file inside the data of the last image
        f.truncate(last_image.offset_data + last_image.size // 2)
    ds = ImageTextDataset(shards=[shard])
    assert [ds[i]['caption'] for i in range(4)] == [c for _, c in corpus.pairs[:4]]
    # the cut sample is not dropped silently: it is a bad sample, counted when read
    assert len(ds) == 5
    with pytest.raises(BadSampleError, match='cut off by the end of the shard') as err:
        ds[4]
    assert err.value.kind == 'cut-off shard member'


def test_shard_cut_inside_a_tar_header_is_logged_and_counted(corpus, tmp_path, logged):
    """Cut inside a header, a shard lost its last samples with no warning."""
    write_caption_shards(str(tmp_path), corpus.pairs[:10], 1)
    shard = str(tmp_path / 'data-000000.tar')
    with tarfile.open(shard) as tar:
        header = tar.getmember('00006.jpg').offset  # the header of sample 6's image
    with open(shard, 'r+b') as f:
        f.truncate(header + 300)  # the name and size fields are there, the rest is not
    ds = ImageTextDataset(shards=[shard])
    assert any(f'{shard}: the tar data stop at byte {header} of {header + 300}' in m
               and "'00006.jpg', named in the cut header, is kept as cut off" in m
               for m in logged), logged
    assert len(ds) == 7  # samples 0-5, and sample 6 as a bad one
    with pytest.raises(BadSampleError, match='cut off'):
        ds[6]


def test_shard_repacked_at_the_same_size_is_not_read_with_its_old_index(corpus, tmp_path,
                                                                        logged):
    """A stale index was trusted when a shard was repacked at the same byte size: a
    caption came back cut to 'a bro', reordered samples got wrong keys."""
    pairs = corpus.pairs[:6]
    write_caption_shards(str(tmp_path), pairs, 1)
    shard = str(tmp_path / 'data-000000.tar')
    size = os.path.getsize(shard)
    ImageTextDataset(shards=[shard])  # writes the index
    write_caption_shards(str(tmp_path), pairs[::-1], 1)  # same members, other order
    assert os.path.getsize(shard) == size
    ds = ImageTextDataset(shards=[shard])
    assert_keys_match_captions(ds, pairs[::-1])
    assert any('same size but other content' in m for m in logged), logged


def assert_keys_match_captions(ds, pairs):
    """Every sample delivers the caption its key has in the shard (key i: ``pairs[i]``)."""
    keys = []
    for i in range(len(ds)):
        sample = ds[i]
        pair = int(sample['sample_key'][-5:])
        assert sample['caption'] == pairs[pair][1], (i, sample['sample_key'], sample['caption'])
        keys.append(pair)
    assert sorted(keys) == list(range(len(pairs)))


def test_fingerprint_is_checked_when_a_shard_is_read_even_if_mtime_matches(corpus, tmp_path):
    write_caption_shards(str(tmp_path), corpus.pairs[:6], 1)
    shard = str(tmp_path / 'data-000000.tar')
    ds = ImageTextDataset(shards=[shard])
    stat = os.stat(shard)
    write_caption_shards(str(tmp_path), corpus.pairs[:6][::-1], 1)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even the mtime is the old one
    assert_keys_match_captions(ds, corpus.pairs[:6][::-1])


def test_corrupt_and_old_indexes_are_rebuilt(shard_dir, logged, monkeypatch):
    shard = str(shard_dir / 'data-000000.tar')
    ImageTextDataset(shards=[shard])
    index = shard + '.idx'
    lines = open(index).read().splitlines()
    with open(index, 'w') as f:  # a line without its tabs
        f.write('\n'.join([lines[0], lines[1].replace('\t', ' ')] + lines[2:]) + '\n')
    ds = ImageTextDataset(shards=[shard])
    assert ds[0]['sample_key'] == f'{shard}/00000'
    assert any(f'ignoring the tar index {index}: {index}:2: malformed index line' in m
               for m in logged), logged
    assert '\t' in open(index).read().splitlines()[1], 'the index is rewritten'
    header = json.loads(lines[0])
    with open(index, 'w') as f:  # an index of the version before fingerprints
        f.write(json.dumps(dict(header, version=1)) + '\n' + '\n'.join(lines[1:]) + '\n')
    scans = count_scans(monkeypatch)
    assert len(ImageTextDataset(shards=[shard])) == 5 and scans == [shard]
    assert any('tar index version 1' in m for m in logged)


def test_make_tar_index_skip_existing_notices_stale_indexes(corpus, tmp_path, capsys):
    write_caption_shards(str(tmp_path), corpus.pairs[:6], 2)
    pattern = str(tmp_path / 'data-{000000..000001}.tar')
    tool = load_tool('tools/dataset_converters/make_tar_index.py')
    assert tool.main([pattern]) == 0
    shard = str(tmp_path / 'data-000000.tar')
    stat = os.stat(shard)
    write_caption_shards(str(tmp_path), corpus.pairs[:6][::-1], 2)  # both repacked
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    capsys.readouterr()
    assert tool.main([pattern, '--skip-existing']) == 0
    out = capsys.readouterr().out
    assert 'indexed 2 shard(s) with 6 samples (0 already indexed)' in out
    assert '2 existing index(es) are stale or broken' in out
    assert tool.main([pattern, '--skip-existing']) == 0
    assert '(2 already indexed)' in capsys.readouterr().out


def test_not_a_tar_is_a_clear_error(tmp_path):
    bad = tmp_path / 'x.tar'
    bad.write_bytes(b'not a tar file at all' * 40)
    with pytest.raises(ValueError, match='not a readable uncompressed tar'):
        ShardSet([str(bad)])


def test_make_tar_index_tool(shard_dir, tmp_path, capsys):
    out = tmp_path / 'idx'
    pattern = str(shard_dir / 'data-{000000..000003}.tar')
    res = run_tool(['tools/dataset_converters/make_tar_index.py', pattern, '--out-dir', str(out)],
                   cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert 'indexed 4 shard(s) with 20 samples' in res.stdout
    assert sorted(os.listdir(out)) == sorted(
        osp.basename(shard_index_path(str(shard_dir / f'data-{i:06d}.tar'), str(out)))
        for i in range(4))
    tool = load_tool('tools/dataset_converters/make_tar_index.py')
    assert tool.main([pattern, '--out-dir', str(out), '--skip-existing']) == 0
    assert 'indexed 0 shard(s) with 0 samples (4 already indexed)' in capsys.readouterr().out
    assert tool.main([str(tmp_path / 'no.tar')]) == 1
    assert 'do not exist' in capsys.readouterr().err


def load_tool(path: str):
    spec = importlib.util.spec_from_file_location('tool_under_test', osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
