#!/usr/bin/env python
"""Benchmark the multi-source data layer: loader throughput and sampler memory per rank.

1. Throughput: samples/s of a DataLoader (``MultiSourceDataset`` + ``MultiSourceSampler``
   + an augmentation pipeline) over generated photo crops, stored as a JSONL manifest with
   image files and as WebDataset-style tar shards, for each ``--workers`` and
   ``--pipelines``: ``crop`` (mmpretrain's RandomResizedCrop 224 + flip, one view) and
   ``m3i`` (M3I's two SiameseIM views: ``M3IViews`` 224 with its default colour pipelines,
   + ``PackM3IInputs``).
2. Memory: what the sampler of one rank holds for simulated corpora of 400M samples (no
   files needed: the sampler only needs the sizes), measured with tracemalloc (peak of
   Python/numpy allocations while building it and drawing batches) and the process RSS,
   next to what a materialised permutation (``torch.randperm``: 8 bytes per sample) needs.

Example::

    python tools/analysis/benchmark_data.py --workers 0 1 2
    python tools/analysis/benchmark_data.py --pipelines m3i --workers 0 2 --skip-memory
    python tools/analysis/benchmark_data.py --decode-backends pillow cv2 --workers 0 \
        --skip-memory
"""
import argparse
import gc
import itertools
import os
import os.path as osp
import sys
import tempfile
import time
import tracemalloc
from types import SimpleNamespace

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import cv2  # noqa: E402
from mmengine.dataset import default_collate  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from m3i_mm.datasets import (DECODE_BACKENDS, MultiSourceDataset,  # noqa: E402
                             MultiSourceSampler)
from m3i_mm.demo.photo_datasets import (photo_caption_pairs,  # noqa: E402
                                         write_caption_manifest, write_caption_shards)

PIPELINES = {
    'crop': ('decode + RandomResizedCrop 224 + RandomFlip + PackInputs',
             [dict(type='RandomResizedCrop', scale=224), dict(type='RandomFlip', prob=0.5),
              dict(type='PackInputs', meta_keys=('sample_key', 'source'))]),
    'm3i': ('decode + M3IViews 224 (two views, SiameseIM colour pipelines) + PackM3IInputs',
            [dict(type='m3i_mm.M3IViews', size=224, scale=(0.08, 1.0)),
             dict(type='m3i_mm.PackM3IInputs')]),
}
SIMULATED = {
    # name: (source sizes, samples per shard or None for unsharded sources)
    '1 source, 400M samples': ([400_000_000], None),
    '1 source, 400M in 40k shards': ([400_000_000], 10_000),
    'LAION-400M + YFCC-15M + CC12M, sharded': ([400_000_000, 15_000_000, 12_000_000],
                                               10_000),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Benchmark the m3i_mm data layer.')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2],
                        help='dataloader worker counts to time')
    parser.add_argument('--pipelines', nargs='+', choices=sorted(PIPELINES), default=['crop'],
                        help='augmentation pipelines to time (crop: one mmpretrain view; '
                        'm3i: the two M3I views)')
    parser.add_argument('--decode-backends', nargs='+', choices=DECODE_BACKENDS,
                        default=[DECODE_BACKENDS[0]],
                        help="image decoders to time (the sources' decode_backend)")
    parser.add_argument('--num-samples', type=int, default=1024,
                        help='photo crops generated for the throughput test')
    parser.add_argument('--image-size', type=int, default=256, help='side of the crops')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--num-batches', type=int, default=24,
                        help='timed batches per configuration (after 4 warm-up batches)')
    parser.add_argument('--num-shards', type=int, default=8)
    parser.add_argument('--memory-batches', type=int, default=200,
                        help='batches of 64 drawn from each simulated corpus')
    parser.add_argument('--skip-throughput', action='store_true')
    parser.add_argument('--skip-memory', action='store_true')
    parser.add_argument('--work-dir', default=None,
                        help='where to write the photo corpus (default: a temporary folder)')
    return parser.parse_args(argv)


def write_corpus(root: str, args) -> dict:
    pairs = photo_caption_pairs(args.num_samples, size=args.image_size, seed=0)
    manifest = write_caption_manifest(root, pairs, 'captions.jsonl')
    shards = write_caption_shards(osp.join(root, 'shards'), pairs, args.num_shards)
    return dict(
        manifest=dict(type='ImageTextDataset', data_root=root,
                      ann_file=osp.basename(manifest)),
        shards=dict(type='ImageTextDataset', shards=shards))


def time_loader(source: dict, pipeline: str, workers: int, args) -> float:
    dataset = MultiSourceDataset([source], pipeline=PIPELINES[pipeline][1])
    sampler = MultiSourceSampler(dataset, args.batch_size, seed=0, infinite=True)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                        num_workers=workers, collate_fn=default_collate,
                        persistent_workers=False)
    it = iter(loader)
    for _ in range(4):  # worker start-up and first reads
        next(it)
    start = time.perf_counter()
    for _ in range(args.num_batches):
        next(it)
    elapsed = time.perf_counter() - start
    del it
    gc.collect()
    return args.num_batches * args.batch_size / elapsed


def rss_bytes() -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return 0


def measure_sampler(sizes, per_shard, num_batches: int) -> dict:
    blocks = [None if per_shard is None else [per_shard] * (n // per_shard) for n in sizes]
    fake = SimpleNamespace(source_sizes=sizes, source_block_sizes=blocks)

    def draw(batches: int) -> float:
        sampler = MultiSourceSampler(fake, batch_size=64, seed=0, rank=3, world_size=64,
                                     infinite=True)
        start = time.perf_counter()
        for _ in itertools.islice(iter(sampler), batches * 64):
            pass
        return time.perf_counter() - start

    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    draw(num_batches)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_delta = rss_bytes() - rss_before
    elapsed = draw(num_batches)  # timed without tracemalloc's overhead
    return dict(peak=peak, rss=rss_delta, rate=num_batches * 64 / elapsed,
                randperm=8 * sum(sizes))


def human(num_bytes: float) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if abs(num_bytes) < 1024 or unit == 'GiB':
            return f'{num_bytes:.1f} {unit}' if unit != 'B' else f'{num_bytes:.0f} B'
        num_bytes /= 1024


def print_table(title: str, header, rows) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(f'\n{title}')
    print('  '.join(str(h).ljust(w) for h, w in zip(header, widths)))
    print('  '.join('-' * w for w in widths))
    for row in rows:
        print('  '.join(str(x).ljust(w) for x, w in zip(row, widths)))


def main(argv=None) -> int:
    args = parse_args(argv)
    # As an mmengine Runner sets up every process (env_cfg defaults): no OpenCV threads.
    cv2.setNumThreads(0)
    print(f'machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} at start '
          '(other processes compete for the cores); OpenCV threading off, as in mmengine runs')
    if not args.skip_throughput:
        init_default_scope('mmpretrain')
        with tempfile.TemporaryDirectory() as tmp:
            root = args.work_dir or tmp
            t0 = time.perf_counter()
            sources = write_corpus(root, args)
            print(f'wrote {args.num_samples} photo crops of {args.image_size} px as a manifest '
                  f'and {args.num_shards} tar shards in {time.perf_counter() - t0:.1f} s')
            for pipeline in args.pipelines:
                rows = []
                for name, source in sources.items():
                    for decoder in args.decode_backends:
                        for workers in args.workers:
                            rate = time_loader(dict(source, decode_backend=decoder), pipeline,
                                               workers, args)
                            rows.append((name, decoder, workers, f'{rate:.0f}'))
                print_table(f'Loader throughput, pipeline {pipeline!r} (batch '
                            f'{args.batch_size}, {PIPELINES[pipeline][0]})',
                            ('storage', 'decoder', 'workers', 'samples/s'), rows)
    if not args.skip_memory:
        rows = []
        for name, (sizes, per_shard) in SIMULATED.items():
            m = measure_sampler(sizes, per_shard, args.memory_batches)
            rows.append((name, human(m['peak']), human(m['rss']), human(m['randperm']),
                         f'{m["rate"]:.0f}'))
        print_table(f'Sampler memory of one rank (rank 3 of 64, batch 64, '
                    f'{args.memory_batches} batches drawn)',
                    ('simulated corpus', 'tracemalloc peak', 'RSS delta',
                     'materialised permutation', 'indices/s'), rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
