#!/usr/bin/env python
"""Write the sidecar index (``<shard>.idx``) of WebDataset-style tar shards.

``m3i_mm.ImageTextDataset`` reads the sample count of every shard from these indexes at
start-up, and a shard's member offsets when the shard is first read; without them it
scans the tar headers itself (once, caching the result). Index big corpora ahead of time:

    python tools/dataset_converters/make_tar_index.py 'data/laion/{000000..041407}.tar'
    python tools/dataset_converters/make_tar_index.py 'data/cc12m/*.tar' --out-dir cache/idx

Each index is ``<shard>.idx`` next to its shard, or, with ``--out-dir`` (for read-only shard
folders; the dataset's ``index_cache_dir``), ``<hash of the shard path>-<shard name>.idx``
there. A file that is not an uncompressed tar, or a shard that does not exist, is one
``error:`` line (exit status 2).
"""
import argparse
import os.path as osp
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from tqdm import tqdm  # noqa: E402

from m3i_mm.cli.launch import run_cli  # noqa: E402
from m3i_mm.datasets.tar_shards import (resolve_shards, shard_index_path,  # noqa: E402
                                        stale_index_reason, write_shard_index)
from m3i_mm.utils.errors import UsageError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Index WebDataset-style tar shards.')
    parser.add_argument('shards', nargs='+',
                        help="shard paths, brace patterns ('data-{000000..000099}.tar') or "
                        "quoted glob patterns ('shards/*.tar')")
    parser.add_argument('--out-dir', default=None,
                        help='write indexes here (the dataset\'s index_cache_dir) instead of '
                             'next to the shards')
    parser.add_argument('--skip-existing', action='store_true',
                        help='leave shards alone whose index describes them (same size and '
                        'first/last blocks); stale or broken indexes are rewritten')
    parser.add_argument('--threads', type=int, default=4, help='shards indexed in parallel')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        _, shards = resolve_shards(args.shards)
    except ValueError as err:  # a directory given as a shard, a bad pattern
        raise UsageError(str(err)) from None
    todo = [(s, shard_index_path(s, args.out_dir)) for s in shards]
    if args.skip_existing:
        reasons = [(s, idx, stale_index_reason(s, idx)) for s, idx in todo]
        stale = [(s, reason) for s, _, reason in reasons if reason not in (None, 'no index')]
        if stale:
            print(f'{len(stale)} existing index(es) are stale or broken and are rewritten, '
                  f'e.g. {stale[0][0]}: {stale[0][1]}')
        todo = [(s, idx) for s, idx, reason in reasons if reason is not None]
    with ThreadPoolExecutor(max(1, args.threads)) as pool:
        try:
            counts = list(tqdm(pool.map(lambda job: write_shard_index(*job), todo),
                               total=len(todo), desc='indexing shards', unit='shard',
                               disable=len(todo) < 2))
        except ValueError as err:  # not a (readable, uncompressed) tar file
            raise UsageError(str(err)) from None
    print(f'indexed {len(todo)} shard(s) with {sum(counts)} samples '
          f'({len(shards) - len(todo)} already indexed)')
    return 0


if __name__ == '__main__':
    run_cli(main)
