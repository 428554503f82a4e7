"""Loader of the DCNv3 CPU C++ extension (the ``cpu`` backend).

``csrc/dcnv3_cpu.cpp`` is compiled on first use with the system C++ compiler (``$CXX`` or
``c++``; about 15 s on 2 cores, once), for the vector instruction set torch itself
uses on this machine (``torch.backends.cpu.get_cpu_capability()``), and cached under
``$M3I_MM_HOME/torch_extensions`` (default ``~/.cache/m3i_mm``) in a folder named after the
torch version, the instruction set and a hash of the source and flags: a changed source, a
new torch or another CPU kind (a shared home on a mixed cluster) gets its own build.
``make install`` builds it ahead when a compiler is present (``python -m
m3i_mm.ops.dcnv3.cpu_ext`` does the same by hand).

Nothing is forced on users: without a compiler, or if the build fails, one log line says
why and ``backend='auto'`` uses the ``pytorch`` backend; a failed build is remembered in its
cache folder (with its log) so later processes do not retry it. ``M3I_MM_DCNV3_CPU_EXT=0``
turns the extension off.
"""
import contextlib
import fcntl
import functools
import hashlib
import os
import os.path as osp
import platform
import shlex
import shutil
import subprocess
from typing import List, Optional, Tuple

import torch

from ...utils.cache_dir import cache_dir
from . import build_config
from .geometry import DCNv3Geometry

SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc', 'dcnv3_cpu.cpp')
ENV_SWITCH = 'M3I_MM_DCNV3_CPU_EXT'
LIBRARY = 'm3i_mm_dcnv3_cpu'  # the torch.ops namespace the source registers
# Vector instruction sets per torch CPU capability (x86-64 only; elsewhere the defaults).
ISA_FLAGS = {
    'AVX512': ['-mavx2', '-mfma', '-mf16c', '-mavx512f', '-mavx512bw', '-mavx512vl',
               '-mavx512dq', '-mprefer-vector-width=512'],
    'AVX2': ['-mavx2', '-mfma', '-mf16c'],
}


class ExtensionUnavailable(RuntimeError):
    """The CPU extension is switched off, or cannot be built or loaded here."""


def enabled() -> bool:
    """False when ``M3I_MM_DCNV3_CPU_EXT=0`` (or ``false``/``no``/``off``)."""
    return os.environ.get(ENV_SWITCH, '1').strip().lower() not in ('0', 'false', 'no', 'off')


def compiler() -> Optional[List[str]]:
    """The C++ compiler command (``$CXX``, which may carry a launcher or flags such as
    ``ccache g++``, or ``c++``) with its program resolved to a path; None when there is none."""
    words = shlex.split(os.environ.get('CXX') or 'c++')
    program = shutil.which(words[0]) if words else None
    return None if program is None else [program, *words[1:]]


def capability() -> str:
    """torch's CPU capability, the instruction set the extension is compiled for."""
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        return 'DEFAULT'
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        return 'DEFAULT'


def _torch_dirs() -> Tuple[str, str]:
    root = osp.dirname(osp.abspath(torch.__file__))
    return osp.join(root, 'include'), osp.join(root, 'lib')


def compile_command(cxx: List[str], output: str) -> List[str]:
    """The one compiler invocation that builds the extension into ``output``."""
    include, lib = _torch_dirs()
    openmp = 'OpenMP' in torch.__config__.parallel_info()
    return [
        # -fno-trapping-math: lets the point-geometry loop vectorise (NaN/Inf semantics are
        # unchanged; nothing here relies on floating-point traps). -ffp-contract=off: the
        # backward classifies each point's rows twice (to size the band buffers, then to
        # scatter) and both must agree bit for bit, whatever the compiler's FMA default
        *cxx, '-O3', '-fno-trapping-math', '-ffp-contract=off', '-std=c++20', '-fPIC', '-shared', '-DNDEBUG',
        '-fopenmp' if openmp else '-fopenmp-simd',
        f'-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}',
        *ISA_FLAGS.get(capability(), []),
        '-isystem', include, '-isystem', osp.join(include, 'torch', 'csrc', 'api', 'include'),
        SOURCE, '-o', output,
        f'-L{lib}', '-lc10', '-ltorch_cpu', '-ltorch', f'-Wl,-rpath,{lib}',
    ]


def build_dir() -> str:
    """The cache folder of this source, flags, torch version and CPU capability."""
    key = hashlib.sha256()
    with open(SOURCE, 'rb') as f:
        key.update(f.read())
    # the compiler is part of the key: switching CXX after a failed build tries again.
    # The source's folder is not: every install of the same file (a checkout, a wheel in
    # another environment) shares one build.
    command = compile_command(compiler() or ['c++'], 'OUT')
    key.update(' '.join('SOURCE' if arg == SOURCE else arg for arg in command).encode())
    key.update(torch.__version__.encode())
    name = f'dcnv3_cpu-torch{torch.__version__}-{capability()}-{key.hexdigest()[:12]}'
    return cache_dir('torch_extensions', name.replace('+', '_'))


@contextlib.contextmanager
def _locked(folder: str):
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, 'lock'), 'w') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(verbose: bool = False) -> str:
    """Compile the extension (if not cached) and return the path of the shared library.

    Concurrent processes (ranks, test workers) wait for one build. The library is moved into
    place only when complete.

    Raises:
        ExtensionUnavailable: no compiler, or the build failed now or before (the message
            names the log).
    """
    folder = build_dir()
    library, log_path, failed = (osp.join(folder, f'{LIBRARY}.so'), osp.join(folder, 'build.log'),
                                 osp.join(folder, 'FAILED'))
    if osp.exists(library):
        return library
    cxx = compiler()
    if cxx is None:
        raise ExtensionUnavailable(
            f'no C++ compiler ({os.environ.get("CXX") or "c++"} not found; set CXX to use '
            'another)')
    with _locked(folder):
        if osp.exists(library):
            return library
        if osp.exists(failed):
            raise ExtensionUnavailable(f'its build failed before (log: {log_path}; delete '
                                       f'{folder} to retry)')
        tmp = f'{library}.tmp-{os.getpid()}'
        command = compile_command(cxx, tmp)
        _log(f'dcnv3: compiling the CPU extension for {capability()} (once, about 15 s on 2 '
             f'cores; cached in {folder})')
        with open(log_path, 'w') as log:
            log.write(' '.join(command) + '\n')
            log.flush()
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0 or not osp.exists(tmp):
            if result.returncode > 0:  # a compiler error, not a killed compiler (e.g. OOM)
                open(failed, 'w').close()
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise ExtensionUnavailable(f'its build failed: {_first_error(log_path)} (log: '
                                       f'{log_path})')
        os.replace(tmp, library)
        if verbose:
            print(open(log_path).read())
    return library


def _first_error(log_path: str) -> str:
    with open(log_path) as f:
        lines = f.read().splitlines()[1:]
    errors = [ln.strip() for ln in lines if 'error' in ln.lower()]
    return (errors or [ln.strip() for ln in lines if ln.strip()] or ['no output'])[0][:200]


def _log(message: str) -> None:
    build_config.log(message)


@functools.lru_cache(maxsize=None)
def load_extension() -> str:
    """Build (if needed) and load the extension into this process; the library path.

    Raises:
        ExtensionUnavailable: switched off, no compiler, or a failed build.
    """
    if not enabled():
        raise ExtensionUnavailable(f'switched off by {ENV_SWITCH}=0')
    library = build()
    torch.ops.load_library(library)
    _register_autograd_and_fake()
    return library


_registered = False


def _register_autograd_and_fake() -> None:
    """Autograd and fake (meta) kernels of the extension's ops, so that the ``cpu`` backend
    calls the compiled op directly (no Python layer in inference) and ``torch.compile`` and
    ``torch.export`` see one opaque op. Once per process (a reload of the same library, e.g.
    after ``load_extension.cache_clear()``, keeps them)."""
    global _registered
    if _registered:
        return
    _registered = True
    forward, backward = 'm3i_mm_dcnv3_cpu::forward', 'm3i_mm_dcnv3_cpu::backward'

    @torch.library.register_fake(forward)
    def _forward_fake(input, offset, mask, *args):
        return input.new_empty(input.shape[0], offset.shape[1], offset.shape[2], input.shape[3])

    @torch.library.register_fake('m3i_mm_dcnv3_cpu::dwconv_norm_gelu')
    def _dwconv_norm_gelu_fake(input, *args):
        return torch.empty_like(input)

    @torch.library.register_fake(backward)
    def _backward_fake(grad_out, input, offset, mask, *args):
        return torch.empty_like(input), torch.empty_like(offset), torch.empty_like(mask)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:3])
        ctx.static_args = inputs[3:]

    def differentiate(ctx, grad_out):
        input, offset, mask = ctx.saved_tensors
        grad_input, grad_offset, grad_mask = torch.ops.m3i_mm_dcnv3_cpu.backward(
            grad_out, input, offset, mask, *ctx.static_args, ctx.needs_input_grad[0], 0)
        return (grad_input if ctx.needs_input_grad[0] else None, grad_offset, grad_mask,
                *([None] * len(ctx.static_args)))

    torch.library.register_autograd(forward, differentiate, setup_context=setup_context)


_unavailable: Optional[str] = None  # why the extension cannot run here ('' = it can)


@torch.compiler.assume_constant_result  # decided once, outside any compiled graph
def unavailable_reason() -> str:
    """Why the ``cpu`` backend cannot run here, ``''`` when it can (built and loaded now).

    The first failure is logged, with what is used instead.
    """
    global _unavailable
    if _unavailable is None:
        try:
            load_extension()
            _unavailable = ''
        except ExtensionUnavailable as e:
            _unavailable = str(e)
        except OSError as e:  # a library that does not load (e.g. another libc)
            _unavailable = f'its library does not load ({e})'
        if _unavailable and enabled():
            _log(f'dcnv3: the CPU extension is unavailable, {_unavailable}; backend "auto" '
                 f'uses "pytorch" instead (set {ENV_SWITCH}=0 to skip this attempt)')
    return _unavailable


def extension_available() -> bool:
    """Whether the ``cpu`` backend can run here (see :func:`unavailable_reason`)."""
    return not unavailable_reason()


def dcnv3_cpu(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
              geo: DCNv3Geometry, softmax_mask: bool = False) -> torch.Tensor:
    """The ``cpu`` backend (differentiable).

    Args:
        softmax_mask: ``mask`` holds logits; the softmax over the points of each group is
            computed inside the kernels.
    """
    if not torch.compiler.is_compiling():  # (a traced graph runs after resolve_backend loaded it)
        load_extension()
    if input.dtype in _REDUCED and (offset.dtype not in _REDUCED or mask.dtype not in _REDUCED):
        # The kernels read offset and mask in the input's dtype: float32 offsets would be
        # rounded to 16 bits (1/32 px steps at |offset| ~ 4) before locating the points.
        # Mixed calls compute in float32 instead, as the PyTorch path locates in float32.
        out = torch.ops.m3i_mm_dcnv3_cpu.forward(input.float(), offset.float(), mask.float(),
                                                 *geo.as_args(), softmax_mask)
        return out.to(input.dtype)
    return torch.ops.m3i_mm_dcnv3_cpu.forward(input, offset, mask, *geo.as_args(), softmax_mask)


_REDUCED = (torch.float16, torch.bfloat16)


def dcnv3_backward_cpu(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                       grad_out: torch.Tensor, geo: DCNv3Geometry,
                       need_input_grad: bool = True, bands: int = 0,
                       softmax_mask: bool = False) -> tuple:
    """Gradients for input, offset and mask (what autograd calls, exposed for tests).

    Args:
        bands: Bands of output rows per (image, group) for the input-gradient scatter; 0
            lets the kernel choose from the thread count (tests force other values).
    """
    load_extension()
    return tuple(torch.ops.m3i_mm_dcnv3_cpu.backward(grad_out, input, offset, mask,
                                                     *geo.as_args(), softmax_mask,
                                                     need_input_grad, bands))


def dwconv_norm_gelu(input: torch.Tensor, conv_weight: torch.Tensor,
                     conv_bias: Optional[torch.Tensor], norm_weight: torch.Tensor,
                     norm_bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Depth-wise conv (odd square kernel, stride 1, size kept) + bias, LayerNorm over the
    channels, exact GELU, fused, on a channels-last ``(N, H, W, C)`` float32/float64 map.

    Inference only (no autograd): the DCNv3 module's offset/mask branch uses it in eager
    inference on the CPU instead of three aten ops and two intermediate tensors.
    """
    load_extension()
    return torch.ops.m3i_mm_dcnv3_cpu.dwconv_norm_gelu(input, conv_weight, conv_bias,
                                                       norm_weight, norm_bias, eps)


if __name__ == '__main__':
    try:
        print(load_extension())
    except ExtensionUnavailable as error:
        raise SystemExit(f'dcnv3: CPU extension not built: {error}')
