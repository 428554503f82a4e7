#!/usr/bin/env python
"""What the DCNv3 GPU kernels compile to, read without a GPU.

Compiles every Triton kernel of ``m3i_mm.ops.dcnv3`` at the launch configuration the op
picks for each benchmark shape (forward, backward with and without the input gradient;
fp32, fp16, bf16; sm_80 and sm_90 by default), and the CUDA extension
(``csrc/dcnv3_cuda.cu``, ``nvcc -cubin``), then prints one markdown table per architecture:

* registers per thread, stack frame and spill instructions (``cuobjdump
  --dump-resource-usage`` and ``LDL``/``STL`` in the SASS), shared memory;
* theoretical occupancy (resident warps per SM from registers, shared memory and the block
  size, over the SM's maximum);
* the widths of the global loads, stores and atomics in the PTX (``ld.global.v4.b32`` is one
  128-bit load), counted per kernel;
* for the Triton kernels, the bytes one output element makes the threads request (the PTX's
  memory instructions, those in the loop over the sampling points counted once per point,
  times the threads of a program, over its output elements) against the compulsory
  minimum (each input, offset and mask element read once, each output written once; for
  backward also grad_out read and the three gradients written). Requests of one address by
  several threads of a warp count several times: that is the cost of computing a point's
  geometry in every thread that holds part of its channel row ("geometry copies" = threads
  per (pixel, group) row).

    python tools/analysis/kernel_report.py                       # all shapes, sm_80 + sm_90
    python tools/analysis/kernel_report.py --arch 90 --json report.json --cubin-dir cubins
    python tools/analysis/kernel_report.py --subset guard --arch 90   # what the tests check

Compilation needs no GPU (``triton.compile`` for a named target; ``nvcc`` for the CUDA
extension, skipped with a note when there is none). Triton keeps its compiled kernels in
its cache (``~/.triton/cache``) and the CUDA extension's cubin is cached under
``$M3I_MM_HOME/kernel_report`` by a hash of the source, flags and compiler, so a second run
with nothing changed only re-reads the binaries. Run it under the heavy-job lock on shared
machines (``flock /tmp/m3i_heavy.lock python tools/analysis/kernel_report.py``).
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from dcnv3_import import REPO, import_dcnv3  # noqa: E402

# name: (N, H, W, groups, group channels), the benchmark shapes (one definition)
from benchmark_dcnv3 import GPU_SHAPES  # noqa: E402

DTYPES = ('fp32', 'fp16', 'bf16')
KERNELS = ('forward', 'backward', 'backward-no-input-grad')
ARCHS = (80, 90)
# The tests' spill guard: each group width and dtype class, forward and both backwards.
GUARD_SUBSET = [('T-s1', 'fp32'), ('T-s1', 'bf16'), ('H-s1', 'fp32'), ('H-s1', 'bf16'),
                ('T-s4', 'fp16')]
MAX_REGISTERS = 128
# Per-SM limits: 64K registers (allocated per warp in units of 256), warps, blocks, shared.
SM_LIMITS = {80: dict(warps=64, blocks=32, shared=167936),
             86: dict(warps=48, blocks=16, shared=102400),
             89: dict(warps=48, blocks=24, shared=102400),
             90: dict(warps=64, blocks=32, shared=233472)}
_MEMORY_OP = re.compile(r'^\s*(?:@!?%p\w*\s+)?(ld|st|atom|red)\.global((?:\.[\w:]+)*)\s',
                        re.MULTILINE)
_TYPE_BITS = re.compile(r'\.(?:b|u|s|f|bf)(8|16|32|64)(?:x2)?$')


@dataclass
class KernelResult:
    """One compiled kernel configuration and what its binary says."""
    source: str  # 'triton' or 'cuda'
    kernel: str
    shape: str
    groups_x_channels: str
    dtype: str
    arch: int
    block_q: Optional[int]
    num_warps: int
    registers: int
    stack_bytes: int
    local_bytes: int
    spill_instructions: int  # LDL + STL in the SASS
    shared_bytes: int
    occupancy: float
    loads: Dict[str, int] = field(default_factory=dict)  # 'v4 x 32 bit' -> count
    stores: Dict[str, int] = field(default_factory=dict)
    atomics: Dict[str, int] = field(default_factory=dict)
    channel_load_bits: int = 0  # width of the most frequent global load (the channel tiles)
    geometry_copies: Optional[int] = None
    bytes_per_output: Optional[float] = None
    minimum_bytes_per_output: Optional[float] = None
    compile_seconds: float = 0.0
    cubin: Optional[str] = None


def tools_dir() -> str:
    """The folder of the CUDA binary tools that ship inside the triton package."""
    import triton
    return osp.join(osp.dirname(triton.__file__), 'backends', 'nvidia', 'bin')


def cuobjdump(*args: str) -> str:
    exe = osp.join(tools_dir(), 'cuobjdump')
    if not osp.exists(exe):
        exe = shutil.which('cuobjdump') or exe
    return subprocess.run([exe, *args], capture_output=True, text=True, check=True).stdout


def resource_usage(cubin_path: str) -> Dict[str, Dict[str, int]]:
    """``{function: {REG, STACK, SHARED, LOCAL, spills}}`` from the cubin."""
    text = cuobjdump('--dump-resource-usage', cubin_path)
    usage: Dict[str, Dict[str, int]] = {}
    name = None
    for line in text.splitlines():
        match = re.search(r'Function (\S+):', line)
        if match:
            name = match.group(1)
            continue
        if name and 'REG:' in line:
            usage[name] = {k: int(v) for k, v in re.findall(r'(REG|STACK|SHARED|LOCAL):(\d+)',
                                                            line)}
    sass = cuobjdump('--dump-sass', cubin_path)
    current = None
    for line in sass.splitlines():
        match = re.search(r'Function : (\S+)', line)
        if match:
            current = match.group(1)
            usage.setdefault(current, {})['spills'] = 0
        elif current and re.search(r'\b(LDL|STL)\b', line):
            usage[current]['spills'] += 1
    return usage


def occupancy(registers: int, threads: int, shared: int, arch: int) -> float:
    """Theoretical occupancy: resident warps per SM over the SM's maximum."""
    limits = SM_LIMITS.get(arch, SM_LIMITS[90])
    warps = max(1, -(-threads // 32))
    regs_per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = (65536 // regs_per_warp) // warps
    by_shared = limits['shared'] // (shared + 1024) if shared else limits['blocks']
    blocks = min(by_regs, by_shared, limits['blocks'], limits['warps'] // warps)
    return blocks * warps / limits['warps']


def _width(suffixes: str) -> Tuple[int, int]:
    """(vector length, bits per element) of a PTX memory instruction's suffixes."""
    parts = suffixes.split('.')
    vec = 1
    for p in parts:
        if p in ('v2', 'v4', 'v8'):
            vec = int(p[1:])
    bits = 0
    for p in parts:
        match = _TYPE_BITS.search('.' + p)
        if match:
            bits = int(match.group(1)) * (2 if p.endswith('x2') else 1)
    return vec, bits


def ptx_memory_ops(ptx: str, loop_trips: int) -> Tuple[Dict[str, Counter], Dict[str, int]]:
    """Memory instructions of a PTX function by kind and width, and dynamic bytes per thread.

    Instructions between a loop's head label and its backward branch count ``loop_trips``
    times in the dynamic bytes (the kernels have one loop: over the sampling points).
    """
    lines = ptx.splitlines()
    label_at = {}
    for i, line in enumerate(lines):
        match = re.match(r'^(\$L__\w+):', line.strip())
        if match:
            label_at[match.group(1)] = i
    in_loop = [False] * len(lines)
    for i, line in enumerate(lines):
        match = re.search(r'\bbra(?:\.uni)?\s+(\$L__\w+);', line)
        if match and label_at.get(match.group(1), len(lines)) < i:
            for j in range(label_at[match.group(1)], i + 1):
                in_loop[j] = True
    static: Dict[str, Counter] = {'ld': Counter(), 'st': Counter(), 'atom': Counter()}
    dynamic = {'ld': 0, 'st': 0, 'atom': 0}
    line_of = {}
    offset = 0
    for i, line in enumerate(lines):
        line_of[offset] = i
        offset += len(line) + 1
    starts = sorted(line_of)
    import bisect
    for match in _MEMORY_OP.finditer(ptx):
        kind = 'atom' if match.group(1) in ('atom', 'red') else match.group(1)
        vec, bits = _width(match.group(2))
        static[kind][f'{vec}x{bits}'] += 1
        line_no = line_of[starts[bisect.bisect_right(starts, match.start()) - 1]]
        dynamic[kind] += vec * bits // 8 * (loop_trips if in_loop[line_no] else 1)
    return static, dynamic


def channel_load_bits(loads: Dict[str, int]) -> int:
    """Bits of the most frequent global load (ties: the widest): the channel-tile reads,
    which outnumber the per-point offset and mask reads in every kernel here."""
    if not loads:
        return 0
    bits = {k: int(k.split('x')[0]) * int(k.split('x')[1]) for k in loads}
    return bits[max(loads, key=lambda k: (loads[k], bits[k]))]


def geometry_copies(ttgir: str, block_q: int, threads: int) -> Optional[int]:
    """Threads that hold (and so compute the geometry of) one pixel's channel row.

    Read from the register layout of the channel-tile loads (3-D tensors, one axis of
    ``BLOCK_Q`` pixels): ``threads x rows per thread / BLOCK_Q``. None when the layout is
    not a plain blocked one.
    """
    match = re.search(r'tt\.load .*: tensor<(\d+)x(\d+)x(\d+)x!tt\.ptr<\w+>, #(\w+)>', ttgir)
    if not match:
        return None
    dims = [int(match.group(i)) for i in (1, 2, 3)]
    if block_q not in dims[:2]:
        return None
    axis = dims.index(block_q)
    layout = re.search(r'#' + match.group(4) + r' = #ttg\.blocked<\{sizePerThread = \[([\d, ]+)\]'
                       r', threadsPerWarp = \[([\d, ]+)\], warpsPerCTA = \[([\d, ]+)\]', ttgir)
    if not layout:
        return None
    size, lanes, warps = ([int(v) for v in g.split(',')] for g in layout.groups())
    coverage = size[axis] * lanes[axis] * warps[axis]
    rows_per_thread = size[axis] * max(1, block_q // coverage)
    return max(1, threads * rows_per_thread // block_q)


def _fmt_widths(counts: Dict[str, int]) -> str:
    """``{'4x32': 8, '1x32': 3}`` -> ``8x128b 3x32b`` (count x bits per instruction)."""
    items = sorted(counts.items(), key=lambda kv: -int(kv[0].split('x')[0]) * int(
        kv[0].split('x')[1]))
    return ' '.join(f'{n}x{int(k.split("x")[0]) * int(k.split("x")[1])}b' for k, n in items) \
        or '-'


# ----------------------------------------------------------------------------- Triton

def _torch_dtype(name: str):
    import torch
    return {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}[name]


def triton_case(kernel: str, shape_name: str, dtype_name: str, arch: int = 90) -> dict:
    """Kernel function, launch configuration and argument specialisation of one call."""
    import torch
    ops = import_dcnv3()
    from m3i_mm.ops.dcnv3 import triton_kernels as tk
    n, h, w, g, c = GPU_SHAPES[shape_name]
    dtype = _torch_dtype(dtype_name)
    geo = ops.make_geometry(g * c, 3, 1, 1, 1, g, c, 1.0, False)
    out_h, out_w = geo.output_size(h, w)
    backward = kernel != 'forward'
    cfg = tk.launch_config(c, dtype.itemsize, backward=backward,
                           input_grad=kernel == 'backward', arch=arch)
    num_q = n * out_h * out_w
    # small stand-ins carry dtype and alignment (the JIT specialises on both, not on size)
    like = torch.empty(16, dtype=dtype)
    acc = torch.empty(16, dtype=torch.float32)
    sizes = {'input': n * h * w * g * c, 'offset': num_q * g * geo.num_points * 2}
    wide = max(sizes.values()) >= 2**31 - 1
    constexprs = tk.kernel_constexprs(geo, dtype, wide, dtype.itemsize, True)
    launch = cfg.kernel_kwargs()
    options = dict(num_warps=launch.pop('num_warps'), num_stages=launch.pop('num_stages'))
    constexprs.update(launch)
    ints = [num_q, h, w, out_w, out_h * out_w]
    if backward:
        fn = tk._dcnv3_backward_kernel
        tensors = [like, like, like, like, acc, like, like]
        constexprs['NEED_INPUT_GRAD'] = kernel == 'backward'
    else:
        fn = tk._dcnv3_forward_kernel
        tensors = [like, like, like, like]
    minimum = _minimum_bytes(g, c, geo.num_points, dtype.itemsize, backward,
                             kernel == 'backward')
    return dict(fn=fn, cfg=cfg, options=options, args=tensors + ints, constexprs=constexprs,
                points=geo.num_points, outputs_per_program=cfg.block_q * c, channels=c,
                element_size=dtype.itemsize, minimum=minimum, groups=g)


def _minimum_bytes(groups: int, channels: int, points: int, size: int, backward: bool,
                   input_grad: bool) -> float:
    """Compulsory bytes per output element of one (pixel, group) row."""
    row = channels * size * 2 + points * 3 * size  # input + output, offset (2P) + mask (P)
    if backward:  # reads input, offset, mask, grad_out; writes grad_offset, grad_mask
        row = channels * size * 2 + points * 3 * size * 2
        if input_grad:
            row += channels * size
    return row / channels


def _specialise(args: Sequence, backend_cls) -> List[Tuple[str, str]]:
    """(type, attribute) per runtime argument, as Triton's JIT specialises a call."""
    try:
        from triton._C.libtriton import native_specialize_impl
    except ImportError:  # older Triton: the same rule by hand
        native_specialize_impl = None
    out = []
    for arg in args:
        if native_specialize_impl is not None:
            out.append(tuple(native_specialize_impl(backend_cls, arg, False, True, True)))
        elif isinstance(arg, int):
            out.append(('i32' if -2**31 <= arg < 2**31 else 'i64',
                        'D' if arg % 16 == 0 else ''))
        else:
            from triton.runtime.jit import mangle_type
            out.append((mangle_type(arg), 'D' if arg.data_ptr() % 16 == 0 else ''))
    return out


def compile_triton(case: dict, arch: int):
    """Compile one kernel configuration for ``sm_<arch>`` (Triton's cache makes reruns cheap)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    target = GPUTarget('cuda', arch, 32)
    backend = make_backend(target)
    fn = case['fn']
    names = list(fn.arg_names)
    spec = _specialise(case['args'], type(backend))
    signature, constants, attrs = {}, {}, {}
    for i, (kind, attr) in enumerate(spec):
        if kind == 'constexpr':  # an int argument equal to 1
            signature[names[i]] = 'constexpr'
            constants[(i, )] = case['args'][i]
            continue
        signature[names[i]] = kind
        if attr:
            attrs[(i, )] = backend.parse_attr(attr)
    for name, value in case['constexprs'].items():
        signature[name] = 'constexpr'
        constants[(names.index(name), )] = value
    for name in names:
        if name not in signature:
            raise RuntimeError(f'kernel_report: no value for argument {name} of {fn.__name__}')
    signature = {name: signature[name] for name in names}
    return triton.compile(ASTSource(fn, signature, constants, attrs), target=target,
                          options=case['options'])


def report_triton(kernel: str, shape_name: str, dtype_name: str, arch: int,
                  cubin_dir: Optional[str]) -> KernelResult:
    case = triton_case(kernel, shape_name, dtype_name, arch)
    start = time.perf_counter()
    compiled = compile_triton(case, arch)
    seconds = time.perf_counter() - start
    cfg = case['cfg']
    n, h, w, g, c = GPU_SHAPES[shape_name]
    name = f'{kernel}_{shape_name}_{dtype_name}_sm{arch}'
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(cubin_dir or tmp, f'triton_{name}.cubin')
        with open(path, 'wb') as f:
            f.write(compiled.asm['cubin'])
        usage = next(iter(resource_usage(path).values()))
    static, dynamic = ptx_memory_ops(compiled.asm['ptx'], case['points'])
    threads = 32 * cfg.num_warps
    shared = int(getattr(compiled.metadata, 'shared', usage.get('SHARED', 0)) or 0)
    widest = channel_load_bits(static['ld'])
    copies = geometry_copies(compiled.asm['ttgir'], cfg.block_q, threads)
    moved = sum(dynamic.values()) * threads / case['outputs_per_program']
    return KernelResult(
        'triton', kernel, shape_name, f'{g} x {c}', dtype_name, arch, cfg.block_q,
        cfg.num_warps, usage.get('REG', 0), usage.get('STACK', 0), usage.get('LOCAL', 0),
        usage.get('spills', 0), shared, occupancy(usage.get('REG', 0), threads, shared, arch),
        dict(static['ld']), dict(static['st']), dict(static['atom']), widest, copies,
        round(moved, 1), round(case['minimum'], 2), round(seconds, 2),
        path if cubin_dir else None)


# ----------------------------------------------------------------------------- CUDA

def cuda_source() -> str:
    return osp.join(REPO, 'm3i_mm', 'ops', 'dcnv3', 'csrc', 'dcnv3_cuda.cu')


def _nvcc() -> Optional[str]:
    home = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    if home and osp.exists(osp.join(home, 'bin', 'nvcc')):
        return osp.join(home, 'bin', 'nvcc')
    return shutil.which('nvcc')


def _cache_folder() -> str:
    import_dcnv3()
    from m3i_mm.utils.cache_dir import cache_dir
    return cache_dir('kernel_report', create=True)


def compile_cuda(arch: int) -> Tuple[str, str, float]:
    """``nvcc -cubin`` and ``-ptx`` of the extension for ``sm_<arch>``, cached by content.

    Returns:
        (cubin path, PTX text, seconds spent compiling; 0 when cached).
    """
    import torch.utils.cpp_extension as cpp
    nvcc = _nvcc()
    if not nvcc:
        raise RuntimeError('no nvcc (CUDA toolkit) found: set CUDA_HOME')
    source = cuda_source()
    includes = list(cpp.include_paths(device_type='cuda')) if 'device_type' in \
        cpp.include_paths.__code__.co_varnames else list(cpp.include_paths(cuda=True))
    import sysconfig
    includes.append(sysconfig.get_paths()['include'])
    import_dcnv3()
    from m3i_mm.ops.dcnv3 import build_config
    includes += build_config.wheel_include_dirs()
    flags = ['-O3', f'-arch=sm_{arch}', '-DTORCH_EXTENSION_NAME=dcnv3_report',
             '-DTORCH_API_INCLUDE_EXTENSION_H', '-D_GLIBCXX_USE_CXX11_ABI=1',
             '--expt-relaxed-constexpr', '-w'] + [f'-I{p}' for p in includes]
    import torch
    if getattr(torch._C, '_GLIBCXX_USE_CXX11_ABI', True) is False:
        flags = [f for f in flags if 'CXX11_ABI' not in f] + ['-D_GLIBCXX_USE_CXX11_ABI=0']
    version = subprocess.run([nvcc, '--version'], capture_output=True, text=True).stdout
    with open(source, 'rb') as f:
        key = hashlib.sha256(f.read() + ' '.join(flags).encode() + version.encode() +
                             torch.__version__.encode()).hexdigest()[:16]
    folder = _cache_folder()
    cubin = osp.join(folder, f'dcnv3_cuda_sm{arch}_{key}.cubin')
    ptx = osp.join(folder, f'dcnv3_cuda_sm{arch}_{key}.ptx')
    seconds = 0.0
    if not (osp.exists(cubin) and osp.exists(ptx)):
        start = time.perf_counter()
        for kind, out in (('-cubin', cubin), ('-ptx', ptx)):
            # C++20 first (torch >= 2.14 headers need it), then C++17 for older torch
            for std in ('-std=c++20', '-std=c++17'):
                cmd = [nvcc, kind, std, *flags, source, '-o', out + '.tmp']
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode == 0:
                    break
            if done.returncode != 0:
                raise RuntimeError(f'nvcc failed for sm_{arch}:\n{done.stderr[-3000:]}')
            os.replace(out + '.tmp', out)
        seconds = time.perf_counter() - start
    with open(ptx) as f:
        return cubin, f.read(), seconds


def _block_size() -> int:
    with open(cuda_source()) as f:
        match = re.search(r'constexpr\s+int\s+kThreads\s*=\s*(\d+)', f.read())
    return int(match.group(1)) if match else 256


def _demangle(name: str) -> str:
    tool = shutil.which('c++filt')
    if not tool:
        return name
    return subprocess.run([tool, name], capture_output=True, text=True).stdout.strip()


def report_cuda(arch: int, cubin_dir: Optional[str]) -> Tuple[List[KernelResult], str]:
    """The extension's kernels whose offset and mask dtypes equal the input dtype (the
    model's case), and a line summarising all its template instantiations."""
    cubin, ptx, seconds = compile_cuda(arch)
    if cubin_dir:
        kept = osp.join(cubin_dir, f'cuda_extension_sm{arch}.cubin')
        shutil.copyfile(cubin, kept)
        cubin = kept
    usage = resource_usage(cubin)
    threads = _block_size()
    bodies = {}
    for chunk in re.split(r'\.entry\s+', ptx)[1:]:
        bodies[chunk.split('(', 1)[0].strip()] = chunk
    names = {'float': 'fp32', 'double': 'fp64', 'c10::Half': 'fp16', 'c10::BFloat16': 'bf16'}
    results, registers, spilled = [], [], 0
    for name, use in sorted(usage.items()):
        if 'REG' not in use:
            continue
        registers.append(use['REG'])
        spilled += bool(use.get('STACK') or use.get('spills'))
        match = re.search(r'(dcnv3_\w+_kernel)<([^>]*)>', _demangle(name))
        if not match:
            continue
        types = [names.get(t.strip(), t.strip()) for t in match.group(2).split(',')]
        if len(set(types[:3])) != 1:  # offset/mask dtypes differ from the input's
            continue
        static, _ = ptx_memory_ops(bodies.get(name, ''), 1)
        results.append(KernelResult(
            'cuda', match.group(1), 'any', 'any', types[0], arch, None, threads // 32,
            use['REG'], use.get('STACK', 0), use.get('LOCAL', 0), use.get('spills', 0),
            use.get('SHARED', 0), occupancy(use['REG'], threads, use.get('SHARED', 0), arch),
            dict(static['ld']), dict(static['st']), dict(static['atom']),
            channel_load_bits(static['ld']), compile_seconds=round(seconds, 1),
            cubin=cubin if cubin_dir else None))
    summary = (f'CUDA extension, sm_{arch}: {len(registers)} kernel instantiations (input x '
               f'offset x mask dtypes), {min(registers, default=0)}-{max(registers, default=0)} '
               f'registers, {spilled} with stack or spills; {threads} threads per block')
    return results, summary


# ----------------------------------------------------------------------------- output

def markdown(results: List[KernelResult], arch: int) -> str:
    rows = [r for r in results if r.arch == arch]
    lines = [f'### sm_{arch}', '',
             '| source | kernel | shape | G x C | dtype | BLOCK_Q | warps | regs | stack B | '
             'spill instr | shared B | occupancy | global loads | stores | atomics | '
             'geometry copies | B/output requested | B/output minimum |',
             '|' + '---|' * 18]
    for r in rows:
        def opt(v, spec=''):
            return '-' if v is None else format(v, spec)

        lines.append(
            f'| {r.source} | {r.kernel} | {r.shape} | {r.groups_x_channels} | {r.dtype} | '
            f'{opt(r.block_q)} | {r.num_warps} | {r.registers} | {r.stack_bytes} | '
            f'{r.spill_instructions} | {r.shared_bytes} | {r.occupancy:.0%} | '
            f'{_fmt_widths(r.loads)} | {_fmt_widths(r.stores)} | {_fmt_widths(r.atomics)} | '
            f'{opt(r.geometry_copies)} | {opt(r.bytes_per_output, ".1f")} | '
            f'{opt(r.minimum_bytes_per_output, ".2f")} |')
    return '\n'.join(lines)


def check(results: List[KernelResult]) -> List[str]:
    """Violations of the design rules of the Triton kernels (empty when all hold)."""
    problems = []
    for r in results:
        where = f'{r.kernel} {r.shape} {r.dtype} sm_{r.arch}'
        if r.source != 'triton':
            continue
        if r.stack_bytes or r.local_bytes or r.spill_instructions:
            problems.append(f'{where}: spills (stack {r.stack_bytes} B, local {r.local_bytes} '
                            f'B, {r.spill_instructions} LDL/STL)')
        if r.registers > MAX_REGISTERS:
            problems.append(f'{where}: {r.registers} registers > {MAX_REGISTERS}')
        if r.channel_load_bits < 64:
            problems.append(f'{where}: channel tiles read with {r.channel_load_bits}-bit loads '
                            '(< 64)')
    return problems


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', nargs='+', type=int, default=list(ARCHS),
                        help='compute capabilities (80 = A100, 90 = H100/H200)')
    parser.add_argument('--shapes', nargs='+', choices=list(GPU_SHAPES),
                        help='benchmark shapes (default: all)')
    parser.add_argument('--dtypes', nargs='+', choices=DTYPES, default=list(DTYPES))
    parser.add_argument('--kernels', nargs='+', choices=KERNELS, default=list(KERNELS))
    parser.add_argument('--subset', choices=('all', 'guard'), default='all',
                        help="'guard': the representative subset the test suite checks")
    parser.add_argument('--no-cuda', action='store_true', help='skip the CUDA extension')
    parser.add_argument('--json', help='write every result to this JSON file')
    parser.add_argument('--cubin-dir', help='keep every compiled cubin in this folder')
    parser.add_argument('--check', action='store_true',
                        help='exit 1 when a Triton kernel spills, passes 128 registers or '
                        'reads channels with loads narrower than 64 bit')
    args = parser.parse_args(argv)
    if os.environ.get('TRITON_INTERPRET') == '1':
        raise SystemExit('kernel_report: unset TRITON_INTERPRET (the interpreter compiles '
                         'nothing)')
    if args.cubin_dir:
        os.makedirs(args.cubin_dir, exist_ok=True)
    if args.subset == 'guard':
        cases = [(s, d) for s, d in GUARD_SUBSET]
    else:
        cases = [(s, d) for s in (args.shapes or list(GPU_SHAPES)) for d in args.dtypes]
    import triton
    import torch
    print(f'# DCNv3 kernel report: triton {triton.__version__}, torch {torch.__version__}, '
          f'{time.strftime("%Y-%m-%d")}', flush=True)
    results: List[KernelResult] = []
    errors: List[str] = []
    seen: Dict[tuple, KernelResult] = {}
    summaries: List[str] = []
    total = len(args.arch) * len(cases) * len(args.kernels)
    done = 0
    for arch in args.arch:
        for shape_name, dtype_name in cases:
            for kernel in args.kernels:
                done += 1
                case = triton_case(kernel, shape_name, dtype_name, arch)
                # shapes that compile to the same binary are compiled once
                key = (arch, kernel, dtype_name, repr(sorted(case['constexprs'].items())),
                       repr([(a % 16 == 0, a == 1) for a in case['args']
                             if isinstance(a, int)]))
                try:
                    if key in seen and not args.cubin_dir:
                        result = KernelResult(**{**asdict(seen[key]), 'shape': shape_name,
                                                 'compile_seconds': 0.0})
                    else:
                        result = report_triton(kernel, shape_name, dtype_name, arch,
                                               args.cubin_dir)
                        seen[key] = result
                    results.append(result)
                except Exception as e:  # keep going: one failure must not hide the rest
                    errors.append(f'{kernel} {shape_name} {dtype_name} sm_{arch}: '
                                  f'{type(e).__name__}: {e}')
                if sys.stderr.isatty() or done == total or done % 24 == 0:
                    print(f'[{done}/{total}] compiled', end='\r' if sys.stderr.isatty()
                          else '\n', file=sys.stderr, flush=True)
        if not args.no_cuda:
            try:
                cuda_results, summary = report_cuda(arch, args.cubin_dir)
                results += cuda_results
                summaries.append(summary)
            except Exception as e:
                errors.append(f'CUDA extension sm_{arch}: {type(e).__name__}: '
                              f'{str(e).splitlines()[0] if str(e) else ""}')
    print(file=sys.stderr)
    for arch in args.arch:
        print(markdown(results, arch) + '\n')
    problems = check(results)
    for line in summaries:
        print(f'- {line}')
    for line in errors:
        print(f'- error: {line}')
    for line in problems:
        print(f'- rule broken: {line}')
    if not problems and not errors:
        print(f'All {sum(r.source == "triton" for r in results)} Triton kernel configurations: '
              f'no spills, at most {MAX_REGISTERS} registers, channel loads of 64 bits or '
              'more.')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(triton=triton.__version__, torch=torch.__version__,
                           results=[asdict(r) for r in results], errors=errors,
                           cuda_summaries=summaries,
                           problems=problems), f, indent=1)
    return 1 if args.check and (problems or errors) else 0


if __name__ == '__main__':
    sys.exit(main())
