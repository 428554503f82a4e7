#!/usr/bin/env python
"""List, download and verify the checkpoints of the m3i_mm model zoo.

Examples::

    python tools/zoo.py list
    python tools/zoo.py download internimage_t_1k_224            # prints the cached path
    python tools/zoo.py download internimage_t_1k_224 --mirror https://hf-mirror.com
    python tools/zoo.py verify internimage_t_1k_224
    python tools/zoo.py trust NAME    # a file you copied into the cache yourself

Entries come from ``model-index.yml`` (plus ``$M3I_MM_MODEL_INDEX``); files are cached in
``$M3I_MM_HOME/checkpoints`` (default ``~/.cache/m3i_mm/checkpoints``). Configs load an
entry with ``m3i://NAME``.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from m3i_mm.zoo import (CheckpointReadError, ChecksumMismatchError,  # noqa: E402
                        UnverifiedFileError, ZooEntry, ZooError, cache_path, cached_file,
                        check_cached, download_checkpoint, get_entry, load_index)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='List, download and verify zoo checkpoints.')
    parser.add_argument('--cache-dir', help='cache directory (default: $M3I_MM_HOME/checkpoints)')
    commands = parser.add_subparsers(dest='command', required=True)
    commands.add_parser('list', help='table of all entries and whether they are cached')
    download = commands.add_parser('download', help='download and verify an entry; prints its path')
    download.add_argument('name', help='zoo entry name')
    download.add_argument('--mirror', help='mirror base URL (e.g. https://hf-mirror.com) or '
                          'OLD_PREFIX=NEW_PREFIX; default: $M3I_MM_ZOO_MIRROR')
    download.add_argument('--force', action='store_true', help='download again even if cached')
    verify = commands.add_parser('verify', help='recompute the sha256 of a cached entry')
    verify.add_argument('name', help='zoo entry name')
    trust = commands.add_parser(
        'trust', help='record the sha256 of a cached unpinned entry that has no record (a '
        'file you put into the cache yourself); later loads are checked against it')
    trust.add_argument('name', help='zoo entry name')
    return parser.parse_args(argv)


def metric_text(entry: ZooEntry) -> str:
    """Every metric the entry reports (``name value``, comma-separated), or '-'."""
    return ', '.join(f'{name} {value}' for name, value in entry.metrics.items()) or '-'


def list_entries(cache_dir: Optional[str]) -> None:
    rows = [('name', 'task', 'resolution', 'metrics', 'sha256', 'cached')]
    for entry in load_index().values():
        rows.append((entry.name, entry.task, str(entry.resolution or '-'), metric_text(entry),
                     'pinned' if entry.pinned else 'unpinned',
                     'yes' if cached_file(entry, cache_dir) else 'no'))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def verify_entry(name: str, cache_dir: Optional[str], trust: bool = False) -> int:
    entry = get_entry(name)
    found = cached_file(entry, cache_dir)
    if found is None:
        print(f'{name}: not cached (expected at {cache_path(entry, cache_dir)}); run `python '
              f'tools/zoo.py download {name}`', file=sys.stderr)
        return 1
    path, record = found
    try:
        result = check_cached(entry, path, record, trust_unrecorded=trust)
    except ChecksumMismatchError as e:
        print(f'{name}: MISMATCH: {e}', file=sys.stderr)
        return 1
    except UnverifiedFileError as e:
        print(f'{name}: UNVERIFIED: {e}', file=sys.stderr)
        return 1
    except CheckpointReadError as e:
        print(f'{name}: NOT A CHECKPOINT: {e}', file=sys.stderr)
        return 1
    if result.pinned:
        print(f'{name}: OK, sha256 {result.sha256} matches the model index ({path})')
    elif result.recorded_now:
        print(f'{name}: unpinned, no hash was recorded for {path}; recorded sha256 '
              f'{result.sha256} now, as asked ({record})')
    else:
        print(f'{name}: OK (unpinned), sha256 {result.sha256} matches the hash recorded at '
              f'the first download ({record}); the model index has no hash to check it '
              'against')
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == 'list':
            list_entries(args.cache_dir)
            return 0
        if args.command == 'download':
            print(download_checkpoint(args.name, cache_dir=args.cache_dir, mirror=args.mirror,
                                      force=args.force))
            return 0
        return verify_entry(args.name, args.cache_dir, trust=args.command == 'trust')
    except (ZooError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
