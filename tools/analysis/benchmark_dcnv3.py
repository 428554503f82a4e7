#!/usr/bin/env python
"""Benchmark the DCNv3 op: forward and forward+backward time, bandwidth, memory floor.

Shapes are those of ``shared/docs/anchors.md`` (kernel 3x3, stride 1, pad 1, offsets
~ N(0, 2), masks softmax-normalised). Every backend that can run on the device is timed in
the same run (``pytorch`` and, when its extension builds, ``cpu`` on the CPU; ``pytorch``,
``triton`` and ``cuda`` on CUDA); ``--official PATH`` (an OpenGVLab/InternImage checkout)
adds the official pure-PyTorch core and, if its extension is built, the official CUDA op,
side by side.

    # GPU (all anchors shapes, fp32/fp16/bf16, every backend)
    python tools/analysis/benchmark_dcnv3.py --device cuda --official ~/InternImage
    # CPU (the shapes of the CPU anchors, batch 8 / 1)
    python tools/analysis/benchmark_dcnv3.py --device cpu --official ~/InternImage

Columns: median ms (CUDA: ``triton.testing.do_bench`` when Triton is present, else CUDA
events; CPU: median of ``--repeats`` rounds in which the backends take turns, so that
the noise of a shared machine hits all of them alike), achieved bandwidth = floor bytes
/ time, ``x floor`` = time / memory-floor time, and ``saved MB`` = bytes the autograd graph
keeps for backward (from ``saved_tensors_hooks``; with ``--device cuda`` also the peak
memory of forward+backward). The floor counts input, offset, mask read once and output
written once (backward: grad_out read and three gradients written too); ``--bandwidth``
sets the device bandwidth it is computed with (default: 3.02 TB/s on CUDA, the H100 copy
bandwidth measured for anchors.md; on CPU a copy is measured).
"""
import argparse
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from dcnv3_import import import_dcnv3  # noqa: E402
from timing import median_ms  # noqa: E402

# name: (N, H, W, groups, group channels)
GPU_SHAPES = {
    'T-s1': (64, 56, 56, 4, 16), 'T-s2': (64, 28, 28, 8, 16), 'T-s3': (64, 14, 14, 16, 16),
    'T-s4': (64, 7, 7, 32, 16), 'B-s1': (64, 56, 56, 7, 16), 'H-s1': (16, 56, 56, 10, 32),
    'T-det': (2, 200, 336, 4, 16), 'H-seg': (2, 128, 128, 10, 32),
}
CPU_SHAPES = {'T-s1-b8': (8, 56, 56, 4, 16), 'T-s3-b8': (8, 14, 14, 16, 16),
              'T-det-b1': (1, 200, 336, 4, 16)}
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
POINTS = 9


def make_inputs(shape, dtype, device, seed: int = 0):
    n, h, w, g, c = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, w, g * c, generator=gen)
    offset = 2 * torch.randn(n, h, w, g * POINTS * 2, generator=gen)
    mask = torch.randn(n, h, w, g, POINTS, generator=gen).softmax(-1).reshape(n, h, w, -1)
    return [t.to(device=device, dtype=dtype) for t in (x, offset, mask)]


def floor_bytes(shape, dtype) -> Tuple[int, int]:
    n, h, w, g, c = shape
    size = torch.finfo(dtype).bits // 8
    x = n * h * w * g * c
    off = n * h * w * g * POINTS * 2
    msk = n * h * w * g * POINTS
    fwd = (x + off + msk + x) * size
    return fwd, fwd + (x + x + off + msk) * size  # bwd: read grad_out, write 3 gradients


def runners(device: str, official: Optional[str]) -> Dict[str, Callable]:
    """name -> fn(x, offset, mask, group, group_channels)."""
    out = {}
    dcnv3 = import_dcnv3().dcnv3

    def ours(backend):
        return lambda x, o, m, g, c: dcnv3(x, o, m, 3, 1, 1, 1, g, c, 1.0, False, backend)

    out['pytorch'] = ours('pytorch')
    if device == 'cpu':
        from m3i_mm.ops.dcnv3 import cpu_ext
        if cpu_ext.extension_available():
            out['cpu'] = ours('cpu')
    if device == 'cuda':
        from m3i_mm.ops.dcnv3.function import triton_available
        if triton_available():
            out['triton'] = ours('triton')
        from m3i_mm.ops.dcnv3 import cuda_ext
        if cuda_ext.extension_available():
            out['cuda'] = ours('cuda')
    if official:
        from official_internimage import official_dcnv3_core_pytorch, official_dcnv3_cuda
        core = official_dcnv3_core_pytorch(official)
        out['official-pytorch'] = lambda x, o, m, g, c: core(
            x, o, m, 3, 3, 1, 1, 1, 1, 1, 1, g, c, 1.0, False)
        function = official_dcnv3_cuda(official) if device == 'cuda' else None
        if function is not None:
            out['official-cuda'] = lambda x, o, m, g, c: function.apply(
                x, o, m, 3, 3, 1, 1, 1, 1, 1, 1, g, c, 1.0, 256, False)
    return out


def time_ms(fn: Callable, device: str, repeats: int) -> float:
    """Median ms: ``triton.testing.do_bench`` on CUDA when Triton is installed."""
    if device == 'cuda':
        try:
            from triton.testing import do_bench
            return float(do_bench(fn))
        except ImportError:
            pass
    return median_ms(fn, device, warmup=1, iters=repeats)


def saved_bytes(fn: Callable, inputs: List[torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward of ``fn(*inputs)``."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(storages.values())


def measure_bandwidth(device: str) -> float:
    """Copy bandwidth in bytes/s (read + write) of a 256 MB buffer."""
    src = torch.empty(64 * 2**20, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, 10)
    return 2 * src.numel() * 4 / (ms * 1e-3)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--shapes', nargs='*', help='shape names (default: all for the device)')
    parser.add_argument('--dtypes', nargs='*', choices=list(DTYPES),
                        help='default: fp32 fp16 bf16 on CUDA, fp32 on CPU')
    parser.add_argument('--backends', nargs='*', help='subset of the available backends')
    parser.add_argument('--official', help='OpenGVLab/InternImage checkout to compare with')
    parser.add_argument('--repeats', type=int, default=11,
                        help='CPU rounds (every backend runs once per round)')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads for the CPU')
    parser.add_argument('--bandwidth', type=float, help='device bandwidth for the floor, TB/s')
    parser.add_argument('--no-backward', action='store_true', help='forward only')
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but torch sees no CUDA device')
    if args.threads:
        torch.set_num_threads(args.threads)
    table = GPU_SHAPES if args.device == 'cuda' else CPU_SHAPES
    all_shapes = {**GPU_SHAPES, **CPU_SHAPES}
    names = args.shapes or list(table)
    unknown = [s for s in names if s not in all_shapes]
    if unknown:
        raise SystemExit(f'error: unknown shapes {unknown}; known: {list(all_shapes)}')
    dtypes = args.dtypes or (['fp32', 'fp16', 'bf16'] if args.device == 'cuda' else ['fp32'])
    fns = runners(args.device, args.official)
    if args.backends:
        fns = {k: v for k, v in fns.items() if k in args.backends}
    if args.bandwidth:
        bandwidth = args.bandwidth * 1e12
    elif args.device == 'cuda':
        bandwidth = 3.02e12
    else:
        bandwidth = measure_bandwidth('cpu')
    device_name = torch.cuda.get_device_name() if args.device == 'cuda' else \
        f'CPU, {torch.get_num_threads()} threads'
    print(f'# DCNv3 benchmark: {device_name}, torch {torch.__version__}, floor at '
          f'{bandwidth / 1e12:.3f} TB/s')
    print('| shape | dtype | backend | fwd ms | fwd GB/s | fwd x floor | fwd+bwd ms | '
          'fwd+bwd x floor | saved MB | peak MB |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for name in names:
        shape = all_shapes[name]
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            fwd_bytes, total_bytes = floor_bytes(shape, dtype)
            floor_f = fwd_bytes / bandwidth * 1e3
            floor_t = total_bytes / bandwidth * 1e3
            cases = {}
            for backend, fn in fns.items():
                try:
                    cases[backend] = prepare(fn, shape, dtype, args)
                except Exception as e:  # one backend failing must not hide the others
                    print(f'| {name} | {dtype_name} | {backend} | failed: '
                          f'{type(e).__name__}: {str(e).splitlines()[0][:80]} |||||||')
            fwd_ms = measure({b: c['fwd'] for b, c in cases.items()}, args)
            both_ms = measure({b: c['step'] for b, c in cases.items() if c['step']}, args)
            for backend, case in cases.items():
                fwd, both = fwd_ms[backend], both_ms.get(backend)

                def fmt(v, spec):
                    return 'n/a' if v is None else format(v, spec)

                print(f'| {name} | {dtype_name} | {backend} | {fwd:.3f} | '
                      f'{fwd_bytes / (fwd * 1e-3) / 1e9:.2f} | {fwd / floor_f:.1f} | '
                      f'{fmt(both, ".3f")} | '
                      f'{fmt(both and both / floor_t, ".1f")} | {fmt(case["saved"], ".1f")} | '
                      f'{fmt(case["peak"], ".1f")} |', flush=True)


def prepare(fn: Callable, shape, dtype, args) -> dict:
    """Closures for one backend: forward (no grad) and forward+backward, run once each."""
    g, c = shape[3], shape[4]
    x, offset, mask = make_inputs(shape, dtype, args.device)

    def fwd():
        with torch.no_grad():
            fn(x, offset, mask, g, c)

    fwd()
    case = dict(fwd=fwd, step=None, saved=None, peak=None)
    if args.no_backward:
        return case
    leaves = [t.detach().requires_grad_() for t in (x, offset, mask)]
    grad = torch.randn_like(x)

    def step():
        for t in leaves:
            t.grad = None
        fn(*leaves, g, c).backward(grad)

    if args.device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        case['peak'] = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        step()
    case['step'] = step
    case['saved'] = saved_bytes(lambda *t: fn(*t, g, c), leaves) / 2**20
    return case


def measure(steps: Dict[str, Callable], args) -> Dict[str, float]:
    """Median ms per backend. On CPU the backends take turns, one call each per round, so
    that a slow phase of a noisy machine hits all of them alike; on CUDA each is timed with
    :func:`time_ms`."""
    if args.device == 'cuda':
        return {name: time_ms(step, 'cuda', args.repeats) for name, step in steps.items()}
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


if __name__ == '__main__':
    main()
