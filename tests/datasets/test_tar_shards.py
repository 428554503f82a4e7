import importlib.util
import io
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
    with pytest.raises(FileNotFoundError, match='do not exist'):
        tool.main([str(tmp_path / 'no.tar')])


def load_tool(path: str):
    spec = importlib.util.spec_from_file_location('tool_under_test', osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ issue 20: shard lists
def test_glob_brace_and_list_patterns_expand(shard_dir):
    names = [f'data-{i:06d}.tar' for i in range(4)]
    for spec in ('*.tar', 'data-00000[0-3].tar', 'data-{000000..000003}.tar',
                 'data-000000.tar::data-000001.tar::data-00000{2,3}.tar',
                 ['*0.tar', 'data-00000[1-3].tar']):
        ds = ImageTextDataset(data_root=str(shard_dir), shards=spec)
        assert ds._shard_names == names and len(ds) == 20, spec
    absolute = ImageTextDataset(shards=str(shard_dir / '*.tar'))
    assert absolute.shard_set.shards == [str(shard_dir / n) for n in names]


def test_a_pattern_that_matches_nothing_is_one_line_naming_it(shard_dir):
    """A glob or a brace pattern with missing shards gave a bare FileNotFoundError."""
    with pytest.raises(FileNotFoundError, match=r"no files match the shard pattern 'x-\*\.tar' "
                                                r'under data_root') as err:
        ImageTextDataset(data_root=str(shard_dir), shards='x-*.tar')
    assert '\n' not in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"2 of the 6 shards of 'data-\{000000\.\.000005\}"
                                                r"\.tar' .*do not exist, e\.g\. .*data-000004"):
        ImageTextDataset(data_root=str(shard_dir), shards='data-{000000..000005}.tar')


def test_a_directory_where_a_shard_belongs_is_named(shard_dir):
    with pytest.raises(ValueError, match=r"is a directory, not a file: .*shards='.*\*\.tar'"):
        ImageTextDataset(shards=str(shard_dir))


# ------------------------------------------------------------------ issue 21: damaged shards
def cut_after_member(shard: str, member: str, extra: int) -> int:
    """Cut ``shard`` ``extra`` bytes after the end of ``member``'s data; returns the size."""
    with tarfile.open(shard) as tar:
        info = tar.getmember(member)
    size = info.offset_data + info.size + extra
    with open(shard, 'r+b') as f:
        f.truncate(size)
    return size


@pytest.mark.parametrize('extra', [0, 1, 100, 'block'])
def test_shard_cut_in_the_padding_after_a_member_is_logged_and_counted(corpus, tmp_path,
                                                                      logged, extra):
    """Cut inside (or right after) the zero padding after a member, a shard lost the rest
    of its samples with no warning and no count (issue 21.1)."""
    write_caption_shards(str(tmp_path), corpus.pairs[:10], 1)
    shard = str(tmp_path / 'data-000000.tar')
    with tarfile.open(shard) as tar:
        info = tar.getmember('00005.txt')
    padding = -info.size % 512
    size = cut_after_member(shard, '00005.txt', padding if extra == 'block' else
                            min(extra, padding - 1))
    ds = ImageTextDataset(shards=[shard])
    assert any(f'{shard}: the file ends at byte {size} without the two zero blocks' in m and
               "cut after member '00005.txt'" in m for m in logged), logged
    assert len(ds) == 7  # samples 0-5, and what was lost as one cut-off sample
    assert [ds[i]['caption'] for i in range(6)] == [c for _, c in corpus.pairs[:6]]
    with pytest.raises(BadSampleError, match='cut off by the end of the shard') as err:
        ds[6]
    assert err.value.kind == 'cut-off shard member' and '00005.txt' in err.value.path


def test_complete_shards_are_not_reported_cut(corpus, tmp_path, logged):
    write_caption_shards(str(tmp_path), corpus.pairs[:10], 1)
    shard = str(tmp_path / 'data-000000.tar')
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    end = members[-1].offset_data + members[-1].size + (-members[-1].size % 512)
    with open(shard, 'r+b') as f:  # keep exactly the two end blocks, no record padding
        f.truncate(end + 1024)
    assert len(ImageTextDataset(shards=[shard])) == 10
    assert not [m for m in logged if 'cut' in m or 'lost' in m], logged


def test_cut_pax_header_names_the_lost_member(tmp_path, logged, corpus):
    """The warning named '././@PaxHeader' instead of the lost sample (issue 20)."""
    shard = str(tmp_path / 'pax.tar')
    with tarfile.open(shard, 'w', format=tarfile.PAX_FORMAT) as tar:
        for i, name in enumerate(['plain', 'caf\u00e9']):  # non-ASCII: a pax header
            for ext, data in (('jpg', corpus.pairs[i][0]), ('txt', b'a caption')):
                info = tarfile.TarInfo(f'{name}.{ext}')
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(shard) as tar:
        pax_header = tar.getmember('caf\u00e9.jpg').offset  # where its pax header starts
    with open(shard, 'r+b') as f:
        f.seek(pax_header)
        assert f.read(512)[156:157] == tarfile.XHDTYPE
    for cut, named in ((pax_header + 1024 + 100, True), (pax_header + 512 + 5, False)):
        logged.clear()
        with open(shard, 'r+b') as f:
            f.truncate(cut)  # inside the member's own header / inside the pax record
        ds = ImageTextDataset(shards=[shard])
        assert not any('PaxHeader' in m for m in logged), logged
        assert any(f'the tar data stop at byte {pax_header} of {cut}' in m for m in logged)
        assert any("'caf\u00e9.jpg', named in the cut header, is kept as cut off" in m
                   for m in logged) == named, logged
        assert len(ds) == 2  # 'plain', and the lost member as a cut-off sample
        with pytest.raises(BadSampleError, match='cut off'):
            ds[1]


def test_shard_replaced_while_its_offsets_are_cached_is_read_anew(corpus, tmp_path, logged):
    """A shard replaced on disk during a run was read at its old offsets: captions came
    back cut, with no warning (issue 21.3)."""
    write_caption_shards(str(tmp_path), corpus.pairs[:6], 1)
    shard = str(tmp_path / 'data-000000.tar')
    ds = ImageTextDataset(shards=[shard])
    assert ds[0]['caption'] == corpus.pairs[0][1]  # the offset table is now cached
    longer = [(data, caption + ' with more words') for data, caption in corpus.pairs[:6]]
    write_caption_shards(str(tmp_path), longer, 1)
    os.remove(shard + '.idx')
    assert [ds[i]['caption'] for i in range(6)] == [c for _, c in longer]
    assert any('changed on disk' in m for m in logged), logged


def test_read_only_index_cache_warns_and_reads_without_an_index(shard_dir, tmp_path, logged,
                                                              monkeypatch):
    """A read-only index_cache_dir ended the run with PermissionError (issue 21.11)."""
    cache = tmp_path / 'cache'
    cache.mkdir()

    def refuse(path, text):
        raise PermissionError(13, 'Permission denied', path)

    monkeypatch.setattr(tar_shards, 'atomic_write_text', refuse)
    ds = ImageTextDataset(data_root=str(shard_dir), shards='data-{000000..000003}.tar',
                          index_cache_dir=str(cache))
    assert len(ds) == 20 and ds[7]['sample_key'] == 'data-000001.tar/00007'
    warnings = [m for m in logged if 'indexes are not written' in m]
    assert len(warnings) == 1 and 'Permission denied' in warnings[0], logged
    assert os.listdir(cache) == []


def test_read_only_shard_folder_without_index_cache_dir_is_said_once(shard_dir, logged,
                                                                    monkeypatch):
    monkeypatch.setattr(os, 'access', lambda path, mode: False)  # as if read-only
    ds = ImageTextDataset(data_root=str(shard_dir), shards='*.tar')
    assert len(ds) == 20
    warnings = [m for m in logged if 'indexes are not written' in m]
    assert len(warnings) == 1 and 'index_cache_dir' in warnings[0]


def test_make_tar_index_on_a_non_tar_file_is_one_error_line(tmp_path):
    """It ended in a traceback (issue 20)."""
    bad = tmp_path / 'notes.tar'
    bad.write_text('these are notes, not a tar file\n' * 40)
    res = run_tool(['tools/dataset_converters/make_tar_index.py', str(bad)], cwd=str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f'error: {bad} is not a readable uncompressed tar file'), \
        res.stderr
    assert 'Traceback' not in res.stderr
    res = run_tool(['tools/dataset_converters/make_tar_index.py', str(tmp_path / 'x-*.tar')],
                   cwd=str(tmp_path))
    assert res.returncode == 2 and res.stderr.startswith("error: no files match the shard "
                                                         "pattern"), res.stderr
