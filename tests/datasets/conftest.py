"""Photo corpora shared by the dataset tests: manifests, tar shards and class folders."""
import os.path as osp
from types import SimpleNamespace

import pytest

from m3i_mm.demo.photo_datasets import (photo_caption_pairs, write_caption_manifest,
                                         write_caption_shards, write_classification_folder)

NUM_PAIRS = 40
#: Broken rows of the manifests: row -> kind.
MANIFEST_BAD = {3: 'truncated', 7: 'random_bytes', 11: 'missing', 15: 'empty_caption'}
#: Broken pairs of the shards. 'missing' (no image member) means the key is not a sample.
SHARD_BAD = {3: 'truncated', 7: 'random_bytes', 11: 'missing', 15: 'empty_caption',
             19: 'no_caption'}
NUM_SHARDS = 4


@pytest.fixture(scope='session')
def corpus(tmp_path_factory) -> SimpleNamespace:
    """40 photo crops with captions as JSONL/CSV/TSV manifests and 4 tar shards (with
    broken samples), plus a clean copy of each and a 4-class labelled folder."""
    root = str(tmp_path_factory.mktemp('corpus'))
    pairs = photo_caption_pairs(NUM_PAIRS, size=32, seed=0)
    manifests = {fmt: write_caption_manifest(root, pairs, f'captions.{fmt}', bad=MANIFEST_BAD)
                 for fmt in ('jsonl', 'csv', 'tsv')}
    clean_manifest = write_caption_manifest(osp.join(root, 'clean'), pairs, 'captions.jsonl')
    shards = write_caption_shards(osp.join(root, 'shards'), pairs, NUM_SHARDS, bad=SHARD_BAD)
    json_shards = write_caption_shards(osp.join(root, 'json_shards'), pairs, 2,
                                       caption_format='json')
    classes = write_classification_folder(osp.join(root, 'classes'), per_class=4)
    return SimpleNamespace(root=root, pairs=pairs, manifests=manifests,
                           clean_manifest=clean_manifest, shards=shards,
                           shard_root=osp.join(root, 'shards'), json_shards=json_shards,
                           classes_root=osp.join(root, 'classes'), classes=classes)
