"""img2dataset's outputs read as published: its ``parquet`` output (images inside, failed
downloads as rows without bytes, row groups of 100) and its ``webdataset`` output (.jpg,
.txt and .json members per sample, a metadata-only .parquet beside each .tar). The files
are written here with the schema and member layout of img2dataset's ``writer.py``."""
import io
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from m3i_mm.datasets import BadSampleError, ImageTextDataset

#: img2dataset's parquet schema: the input's columns, its status columns, the image.
SCHEMA = pa.schema([('url', pa.string()), ('caption', pa.string()), ('key', pa.string()),
                    ('status', pa.string()), ('error_message', pa.string()),
                    ('width', pa.int32()), ('height', pa.int32()),
                    ('original_width', pa.int32()), ('original_height', pa.int32()),
                    ('jpg', pa.binary())])


def img2dataset_rows(pairs, shard_id, failed=()):
    """One row per input URL as img2dataset records it; ``failed`` rows have no image."""
    rows = []
    for i, (data, caption) in enumerate(pairs):
        ok = i not in failed
        rows.append(dict(url=f'http://example.invalid/{i}.jpg', caption=caption,
                         key=f'{shard_id:05d}{i:04d}', status='success' if ok else
                         'failed_to_download', error_message=None if ok else 'HTTP 404',
                         width=32 if ok else None, height=32 if ok else None,
                         original_width=32 if ok else None, original_height=32 if ok else None,
                         jpg=data if ok else None))
    return rows


def write_parquet_shard(path, rows, row_group=100):
    """As img2dataset's BufferedParquetWriter: one write_table per ``row_group`` rows."""
    with pq.ParquetWriter(str(path), SCHEMA) as writer:
        for start in range(0, len(rows), row_group):
            writer.write_table(pa.Table.from_pylist(rows[start:start + row_group], SCHEMA))


def reference(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))[..., ::-1]


@pytest.fixture
def parquet_shards(corpus, tmp_path):
    pairs = corpus.pairs[:14]
    write_parquet_shard(tmp_path / '00000.parquet', img2dataset_rows(pairs[:8], 0, {2, 5}),
                        row_group=3)
    write_parquet_shard(tmp_path / '00001.parquet', img2dataset_rows(pairs[8:], 1))
    return tmp_path, pairs


def test_img2dataset_parquet_output(parquet_shards):
    """img2dataset's parquet files (images embedded) were refused."""
    root, pairs = parquet_shards
    ds = ImageTextDataset(data_root=str(root), shards='{00000..00001}.parquet')
    kept = [i for i in range(14) if i not in (2, 5)]  # failed downloads are not samples
    assert len(ds) == 12 and ds.block_sizes == [6, 6]
    for index, i in enumerate(kept):
        sample = ds[index]
        assert sample['caption'] == pairs[i][1]
        assert np.array_equal(sample['img'], reference(pairs[i][0]))
        shard, row = divmod(i, 8) if i < 8 else (1, i - 8)
        assert sample['sample_key'] == f'{shard:05d}.parquet/{shard:05d}{row:04d}'
        assert sample['img_path'] == f'{root}/{shard:05d}.parquet:row {row}'
    assert ds.metainfo == dict(kind='image-text parquet shards', num_shards=2)
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned dataloader worker gets
    assert clone[11]['caption'] == pairs[13][1]


def test_parquet_shard_rows_without_caption_are_bad_samples(corpus, tmp_path):
    rows = img2dataset_rows(corpus.pairs[:3], 0)
    rows[1]['caption'] = None
    write_parquet_shard(tmp_path / 'a.parquet', rows)
    ds = ImageTextDataset(shards=str(tmp_path / '*.parquet'))
    assert ds[0]['caption'] == corpus.pairs[0][1]
    with pytest.raises(BadSampleError, match='no caption member') as err:
        ds[1]
    assert err.value.path == f'{tmp_path}/a.parquet:row 1'


def test_metadata_only_parquet_is_named(corpus, tmp_path):
    """The .parquet img2dataset writes next to each .tar holds no images."""
    meta = [{k: v for k, v in row.items() if k != 'jpg'}
            for row in img2dataset_rows(corpus.pairs[:3], 0)]
    pq.write_table(pa.Table.from_pylist(meta), str(tmp_path / '00000.parquet'))
    with pytest.raises(ValueError, match=r"has no image column 'jpg' .*metadata-only .parquet "
                                         r'next to each .tar'):
        ImageTextDataset(shards=str(tmp_path / '*.parquet'))
    with pytest.raises(ValueError, match=r"no column 'path' among .*set path_key"):
        ImageTextDataset(ann_file=str(tmp_path / '00000.parquet'))


def test_img2dataset_webdataset_output(corpus, tmp_path):
    """img2dataset's tars: 9-digit keys, .jpg + .txt + .json (its metadata) per sample,
    written in Python's default (pax) tar format; a metadata .parquet and stats beside."""
    import tarfile
    pairs = corpus.pairs[:6]
    for shard_id in range(2):
        rows = img2dataset_rows(pairs[3 * shard_id:3 * shard_id + 3], shard_id)
        with tarfile.open(tmp_path / f'{shard_id:05d}.tar', 'w') as tar:
            for row in rows:
                meta = {k: v for k, v in row.items() if k != 'jpg'}
                for ext, payload in (('jpg', row['jpg']), ('txt', row['caption'].encode()),
                                     ('json', json.dumps(meta, indent=4).encode())):
                    info = tarfile.TarInfo(f'{row["key"]}.{ext}')
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != 'jpg'}
                                             for r in rows]),
                       str(tmp_path / f'{shard_id:05d}.parquet'))
        (tmp_path / f'{shard_id:05d}_stats.json').write_text('{}')
    ds = ImageTextDataset(data_root=str(tmp_path), shards='*.tar')
    assert len(ds) == 6 and ds.block_sizes == [3, 3]
    assert [ds[i]['caption'] for i in range(6)] == [c for _, c in pairs]
    assert ds[4]['sample_key'] == '00001.tar/000010001'
    assert np.array_equal(ds[4]['img'], reference(pairs[4][0]))
