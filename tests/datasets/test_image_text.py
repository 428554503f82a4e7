import functools
import http.server
import json
import os.path as osp
import threading

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


# ------------------------------------------------------------------ issue 20: data as published
@pytest.fixture(scope='module')
def images(tmp_path_factory, corpus):
    """Six photo crops as image files (``img/0.jpg`` ..) under their own root."""
    root = tmp_path_factory.mktemp('published')
    (root / 'img').mkdir()
    for i in range(6):
        (root / 'img' / f'{i}.jpg').write_bytes(corpus.pairs[i][0])
    return root


def captions_of(ds):
    return [ds[i]['caption'] for i in range(len(ds))]


@pytest.mark.parametrize('layout', ['cc3m', 'cc12m'])
def test_headerless_tsv_as_published(corpus, images, layout):
    """CC3M (caption<TAB>url) and CC12M (url<TAB>caption) TSVs have no header row; they
    were refused ("no column 'path' in the header")."""
    rows = [(f'img/{i}.jpg', corpus.pairs[i][1]) for i in range(6)]
    lines = [f'{c}\t{p}' if layout == 'cc3m' else f'{p}\t{c}' for p, c in rows]
    (images / f'{layout}.tsv').write_text('\n'.join(lines) + '\n')
    recognised = ImageTextDataset(data_root=str(images), ann_file=f'{layout}.tsv')
    columns = ['caption', 'url'] if layout == 'cc3m' else ['url', 'caption']
    stated = ImageTextDataset(data_root=str(images), ann_file=f'{layout}.tsv',
                              columns=columns, path_key='url')
    for ds in (recognised, stated):
        assert len(ds) == 6 and captions_of(ds) == [c for _, c in rows]
        assert ds[2]['img_path'] == osp.join(str(images), 'img/2.jpg')


def test_headerless_tsv_that_cannot_be_told_apart_is_a_clear_error(tmp_path):
    tsv = write_bytes(tmp_path / 'm.tsv', b'a.jpg\tb.jpg\n')  # which one is the image?
    with pytest.raises(ValueError, match=r'm\.tsv:1: .*cannot be told which .*columns='):
        read_manifest(tsv)
    three = write_bytes(tmp_path / 'n.tsv', b'a cat\thttp://x/a.jpg\t12\n')
    with pytest.raises(ValueError, match=r'n\.tsv:1: .*3 fields.*columns='):
        read_manifest(three)
    # a header with other names is still a header error, with the hint for no header
    header = write_bytes(tmp_path / 'h.tsv', b'url\ttext\nhttp://x/a.jpg\ta cat\n')
    with pytest.raises(ValueError, match=r"no column 'path' in the header.*columns="):
        read_manifest(header)
    assert read_manifest(header, path_key='url', caption_key='text').paths == [
        'http://x/a.jpg']
    with pytest.raises(ValueError, match=r"path_key='path' is not one of columns"):
        read_manifest(tsv, columns=['url', 'caption'])
    with pytest.raises(ValueError, match='3 fields, but columns= names 2'):
        read_manifest(three, columns=['caption', 'url'], path_key='url')


def test_parquet_url_list_as_published(corpus, images, tmp_path):
    """LAION/CC parquet URL lists (URL + TEXT columns) were refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    urls = [f'img/{i}.jpg' for i in range(6)] + [None]
    texts = [corpus.pairs[i][1] for i in range(6)] + ['no url']
    pq.write_table(pa.table({'SAMPLE_ID': list(range(7)), 'URL': urls, 'TEXT': texts,
                             'similarity': [0.3] * 7}), str(images / 'laion.parquet'))
    ds = ImageTextDataset(data_root=str(images), ann_file='laion.parquet', path_key='URL',
                          caption_key='TEXT')
    assert len(ds) == 7 and [ds[i]['caption'] for i in range(6)] == texts[:6]
    with pytest.raises(BadSampleError, match="no 'URL'") as err:
        ds[6]
    assert err.value.path.endswith('laion.parquet:row 6')
    with pytest.raises(ValueError, match=r"no column 'path' among .*set path_key"):
        ImageTextDataset(data_root=str(images), ann_file='laion.parquet')


class _Images(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def image_server(images):
    handler = functools.partial(_Images, directory=str(images))
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def test_urls_are_read_through_mmengine_file_backends(corpus, image_server, tmp_path):
    """A CC3M-style TSV of URLs, served by a loopback HTTP server; a 404 is a missing file."""
    lines = [f'{corpus.pairs[i][1]}\t{image_server}/img/{i}.jpg' for i in range(3)]
    lines.append(f'gone\t{image_server}/img/404.jpg')
    (tmp_path / 'urls.tsv').write_text('\n'.join(lines) + '\n')
    ds = ImageTextDataset(ann_file=str(tmp_path / 'urls.tsv'))
    assert len(ds) == 4
    for i in range(3):
        sample = ds[i]
        assert sample['caption'] == corpus.pairs[i][1]
        assert np.array_equal(sample['img'], decoded_photo(corpus.pairs, i))
    with pytest.raises(BadSampleError, match='missing file') as err:
        ds[3]
    assert err.value.kind == 'missing file'


def test_setting_shards_switches_a_manifest_source(corpus, images):
    """--cfg-options ...shards=... on a manifest source needed an undocumented
    ann_file=None ("needs exactly one of ann_file and shards")."""
    ds = ImageTextDataset(data_root=corpus.shard_root, ann_file='captions.jsonl',
                          shards='data-{000000..000001}.tar')
    assert ds.shard_set is not None and len(ds) == 19
    with pytest.raises(ValueError, match='needs a manifest .ann_file=. or shards'):
        ImageTextDataset(data_root=corpus.root)


# ------------------------------------------------------------------ issue 21: manifests
def test_cr_only_line_endings_are_named(tmp_path):
    """Classic-Mac line endings were blamed on the header ("no column 'path'")."""
    for name, data in (('m.tsv', b'path\tcaption\ra.jpg\tx\rb.jpg\ty\r'),
                       ('m.jsonl', b'{"path": "a.jpg", "caption": "x"}\r{"path": "b"}\r')):
        with pytest.raises(ValueError, match=r'1: a carriage return .* CR only'):
            read_manifest(write_bytes(tmp_path / name, data))


def test_a_directory_where_the_manifest_belongs_is_named(tmp_path):
    """ann_file pointing at a folder ended in IsADirectoryError."""
    (tmp_path / 'cc3m.tsv').mkdir()
    with pytest.raises(ValueError, match=r'the manifest .*cc3m\.tsv is a directory, not a file'):
        ImageTextDataset(data_root=str(tmp_path), ann_file='cc3m.tsv')


@pytest.mark.parametrize('fmt', ['jsonl', 'tsv'])
def test_nul_and_file_uri_rows_are_bad_rows_named_by_line(corpus, images, fmt):
    """A NUL byte or a file:// path in one row ended the whole run."""
    rows = [(f'img/{i}.jpg', corpus.pairs[i][1]) for i in range(4)]
    rows[1] = ('img/1.jpg', 'a cap\0tion')
    rows[2] = (f'file://{images}/img/2.jpg', 'a caption')
    rows[3] = ('img/3\0.jpg', 'a caption')
    path = images / f'nul.{fmt}'
    if fmt == 'jsonl':
        path.write_text(''.join(json.dumps(dict(path=p, caption=c)) + '\n' for p, c in rows))
    else:
        path.write_text('path\tcaption\n' + ''.join(f'{p}\t{c}\n' for p, c in rows))
    ds = ImageTextDataset(data_root=str(images), ann_file=path.name)
    assert len(ds) == 4 and ds[0]['caption'] == corpus.pairs[0][1]
    first = 1 if fmt == 'jsonl' else 2
    for row, reason in ((1, 'NUL character in the caption'),
                        (2, "no mmengine file backend reads 'file://' paths"),
                        (3, 'NUL character in the path')):
        with pytest.raises(BadSampleError, match=reason) as err:
            ds[row]
        assert err.value.path == f'{path}:{first + row}' and err.value.kind == 'bad manifest row'


def test_restrict_to_root_refuses_paths_outside_the_data_root(corpus, images):
    """'../' in a manifest read files outside the data root."""
    root = images / 'root'
    (root / 'sub').mkdir(parents=True, exist_ok=True)
    (root / 'in.jpg').write_bytes(corpus.pairs[0][0])
    rows = [('in.jpg', 'inside'), ('../img/1.jpg', 'climbs out'),
            (str(images / 'img' / '2.jpg'), 'absolute'), ('sub/../in.jpg', 'stays in'),
            ('http://example.invalid/a.jpg', 'a URI')]
    (root / 'm.jsonl').write_text(''.join(json.dumps(dict(path=p, caption=c)) + '\n'
                                          for p, c in rows))
    free = ImageTextDataset(data_root=str(root), ann_file='m.jsonl')
    assert free[1]['caption'] == 'climbs out' and free[2]['caption'] == 'absolute'
    ds = ImageTextDataset(data_root=str(root), ann_file='m.jsonl', restrict_to_root=True)
    assert ds[0]['caption'] == 'inside' and ds[3]['caption'] == 'stays in'
    for row, reason in ((1, "'../' leads outside data_root"), (2, 'an absolute path'),
                        (4, 'a URI')):
        with pytest.raises(BadSampleError, match=reason) as err:
            ds[row]
        assert err.value.kind == 'bad manifest row'
