import json
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from m3i_mm.datasets import BadSampleError, ImageTextDataset
from m3i_mm.datasets.image_text import read_manifest
from .conftest import MANIFEST_BAD, NUM_PAIRS, NUM_SHARDS, SHARD_BAD

REASONS = {'truncated': 'truncated JPEG', 'random_bytes': 'undecodable',
           'missing': 'missing file', 'empty_caption': 'empty caption',
           'no_caption': 'no caption member'}


def decoded_photo(pairs, i):
    """The i-th photo crop decoded independently (PIL, RGB) and flipped to BGR."""
    import io
    return np.asarray(Image.open(io.BytesIO(pairs[i][0])).convert('RGB'))[..., ::-1]


@pytest.mark.parametrize('fmt', ['jsonl', 'csv', 'tsv'])
def test_manifest_samples_and_bad_rows(corpus, fmt):
    ds = ImageTextDataset(data_root=corpus.root, ann_file=osp.basename(corpus.manifests[fmt]))
    assert len(ds) == NUM_PAIRS and ds.block_sizes is None
    for i in range(NUM_PAIRS):
        if i in MANIFEST_BAD:
            with pytest.raises(BadSampleError, match=REASONS[MANIFEST_BAD[i]]) as err:
                ds[i]
            assert err.value.path == osp.join(corpus.root, 'images', f'{i:05d}.jpg')
            continue
        sample = ds[i]
        assert sample['caption'] == corpus.pairs[i][1]
        assert sample['gt_label'] == -1 and sample['sample_key'] == f'images/{i:05d}.jpg#{i}'
        assert sample['img'].dtype == np.uint8 and sample['img'].shape == (32, 32, 3)
        assert sample['ori_shape'] == sample['img_shape'] == (32, 32)
        # BGR, like mmcv's LoadImageFromFile: compare with an independent PIL decode.
        diff = np.abs(sample['img'].astype(int) - decoded_photo(corpus.pairs, i)).mean()
        assert diff < 2.0


def test_manifest_custom_keys_and_errors(tmp_path):
    (tmp_path / 'm.jsonl').write_text(json.dumps({'file': 'a.jpg', 'text': 'hi'}) + '\n\n')
    manifest = read_manifest(str(tmp_path / 'm.jsonl'), path_key='file', caption_key='text')
    assert (manifest.paths, manifest.captions) == (['a.jpg'], ['hi'])
    with pytest.raises(ValueError, match=r"m.jsonl:1: row has no 'path'"):
        read_manifest(str(tmp_path / 'm.jsonl'))
    (tmp_path / 'm.csv').write_text('file,caption\na.jpg,x\n')
    with pytest.raises(ValueError, match="no column 'path'"):
        read_manifest(str(tmp_path / 'm.csv'))
    (tmp_path / 'm.txt').write_text('a.jpg\tx\n')
    with pytest.raises(ValueError, match='file_format'):
        read_manifest(str(tmp_path / 'm.txt'))
    (tmp_path / 'bad.jsonl').write_text('{"path": "a.jpg"\n')
    with pytest.raises(ValueError, match='bad.jsonl:1: not a JSON object'):
        read_manifest(str(tmp_path / 'bad.jsonl'))
    with pytest.raises(ValueError, match='exactly one of ann_file'):
        ImageTextDataset(ann_file='m.jsonl', shards='a.tar')


def test_shards_samples_and_bad_members(corpus):
    ds = ImageTextDataset(data_root=corpus.shard_root, shards='data-{000000..000003}.tar')
    # Pair 11 has no image member, so it is not a sample; shard 1 holds pairs 10..19.
    assert ds.block_sizes == [10, 9, 10, 10] and len(ds) == NUM_PAIRS - 1
    pair_of = [i for i in range(NUM_PAIRS) if SHARD_BAD.get(i) != 'missing']
    keys = set()
    for index, i in enumerate(pair_of):
        shard = f'data-{i // (NUM_PAIRS // NUM_SHARDS):06d}.tar'
        if i in SHARD_BAD:
            with pytest.raises(BadSampleError, match=REASONS[SHARD_BAD[i]]) as err:
                ds[index]
            assert err.value.path == osp.join(corpus.shard_root, shard) + f':{i:05d}.jpg'
            continue
        sample = ds[index]
        assert sample['caption'] == corpus.pairs[i][1]
        assert sample['sample_key'] == f'{shard}/{i:05d}'
        assert np.abs(sample['img'].astype(int) - decoded_photo(corpus.pairs, i)).mean() < 2
        keys.add(sample['sample_key'])
    assert len(keys) == NUM_PAIRS - len(SHARD_BAD)


def test_shards_with_json_captions_from_a_list(corpus):
    ds = ImageTextDataset(shards=corpus.json_shards)
    assert len(ds) == NUM_PAIRS
    assert [ds[i]['caption'] for i in (0, 39)] == [corpus.pairs[0][1], corpus.pairs[39][1]]


# ------------------------------------------------------------------ issue 13: manifests
def write_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_tsv_reads_quotes_literally(tmp_path):
    """An unbalanced quote in a TSV caption swallowed the following rows into one caption."""
    tsv = write_bytes(tmp_path / 'm.tsv', b'path\tcaption\na.jpg\t"a bro\nb.jpg\tb\n'
                                          b'c.jpg\tthe "quoted" word\n')
    manifest = read_manifest(tsv)
    assert manifest.paths == ['a.jpg', 'b.jpg', 'c.jpg']
    assert manifest.captions == ['"a bro', 'b', 'the "quoted" word']


def test_csv_row_spanning_lines_is_an_error_naming_file_and_line(tmp_path):
    csv_path = write_bytes(tmp_path / 'm.csv', b'path,caption\na.jpg,ok\nb.jpg,"a bro\n'
                                               b'c.jpg,c\nd.jpg,"d"\n')
    with pytest.raises(ValueError, match=r'm\.csv:3: .*quoted field does not close on its line'):
        read_manifest(csv_path)
    # RFC 4180 quoting within a line still works: commas and doubled quotes inside quotes
    good = write_bytes(tmp_path / 'g.csv', b'path,caption\r\na.jpg,"x, ""y"" z"\r\n')
    assert read_manifest(good).captions == ['x, "y" z']


def test_rows_with_the_wrong_number_of_fields_are_errors(tmp_path):
    tsv = write_bytes(tmp_path / 'm.tsv', b'path\tcaption\na.jpg\tone\ttab too many\n')
    with pytest.raises(ValueError, match=r'm\.tsv:2: 3 fields, but the header has 2 .*tab'):
        read_manifest(tsv)
    csv_path = write_bytes(tmp_path / 'm.csv', b'path,caption\na.jpg,a, comma\n')
    with pytest.raises(ValueError, match=r'm\.csv:2: 3 fields, but the header has 2'):
        read_manifest(csv_path)


@pytest.mark.parametrize('fmt', ['jsonl', 'csv', 'tsv'])
def test_a_non_utf8_row_is_one_bad_sample_named_by_file_and_line(corpus, tmp_path, fmt):
    """One non-UTF-8 byte killed the whole source with a bare UnicodeDecodeError."""
    lines = open(corpus.manifests[fmt], 'rb').read().splitlines(keepends=True)
    row = 5 if fmt == 'jsonl' else 6  # data row 5 (after the header line for CSV/TSV)
    lines[row] = lines[row].replace(b'photo', b'ph\xe9to')  # latin-1, not UTF-8
    path = tmp_path / f'captions.{fmt}'
    path.write_bytes(b''.join(lines))
    ds = ImageTextDataset(data_root=corpus.root, ann_file=str(path))
    assert len(ds) == NUM_PAIRS
    with pytest.raises(BadSampleError, match=r'not valid UTF-8 \(byte 0xe9 at column') as err:
        ds[5]
    assert err.value.path == f'{path}:{row + 1}' and err.value.kind == 'bad manifest row'
    assert ds[6]['caption'] == corpus.pairs[6][1]


def test_a_wrong_caption_key_is_named_at_construction(corpus):
    """A wrong caption key was accepted; every sample then failed as "empty caption"."""
    with pytest.raises(ValueError, match=r"captions\.jsonl:1: row has no 'text' field \(it has "
                                         r"\['caption', 'path'\]\); set caption_key"):
        ImageTextDataset(data_root=corpus.root, ann_file='captions.jsonl', caption_key='text')


def test_byte_order_mark_and_null_captions(tmp_path):
    csv_path = write_bytes(tmp_path / 'm.csv', b'\xef\xbb\xbfpath,caption\na.jpg,x\n')
    assert read_manifest(csv_path).paths == ['a.jpg']
    jsonl = write_bytes(tmp_path / 'm.jsonl', b'{"path": "a.jpg", "caption": null}\n')
    assert read_manifest(jsonl).captions == ['']  # a bad sample later ("empty caption")
