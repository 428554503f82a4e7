#!/usr/bin/env python
"""Install the pinned OpenMMLab stack for m3i_mm into the running interpreter.

Run it with the Python of the environment to install into (``make install`` runs it with
the project's ``.venv``; a user with their own environment runs
``python tools/install_deps.py`` there). Steps:

1. torch/torchvision: kept when present (a user's own build); otherwise the pinned
   ``torch==2.14.1 torchvision==0.29.1``.
2. mmcv 2.1.0 built from its source distribution with compiled ops. Its ``setup.py``
   hard-codes ``-std=c++17``, which torch >= 2.14 headers reject, so the flag is raised to
   C++20 when the installed torch asks for it. CUDA ops are built when torch has CUDA, a
   toolkit is found, and a GPU is visible or ``FORCE_CUDA=1`` is set (then
   ``TORCH_CUDA_ARCH_LIST`` picks the architectures). The built wheel is cached under
   ``$M3I_MM_HOME`` (default ``~/.cache/m3i_mm``, m3i_mm's one cache root), keyed by
   Python, torch and CUDA settings, so a second install skips the build.
3. The rest of ``requirements/runtime.txt`` (and ``requirements/tests.txt`` with
   ``--tests``), then m3i_mm itself (editable with ``--editable``).
4. The DCNv3 CPU extension, compiled into the cache when a C++ compiler is present
   (optional: otherwise it compiles on first use, or DCNv3 uses its PyTorch path).

Only the standard library is used: this runs before anything else is installed.
"""
import argparse
import glob
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TORCH_PIN = ['torch==2.14.1', 'torchvision==0.29.1']
MMCV_VERSION = '2.1.0'
BUILD_TOOLS = ['setuptools<81', 'wheel', 'ninja']


def log(msg: str) -> None:
    print(f'[install_deps] {msg}', flush=True)


def fail(msg: str) -> None:
    print(f'[install_deps] ERROR: {msg}', file=sys.stderr, flush=True)
    sys.exit(1)


def pip(*args: str, quiet: bool = True) -> None:
    cmd = [sys.executable, '-m', 'pip', 'install', *(['-q'] if quiet else []), *args]
    log('pip install ' + ' '.join(args))
    if subprocess.call(cmd) != 0:
        fail(f'`{" ".join(cmd)}` failed (see the pip output above).')


def probe(code: str) -> str:
    """Run ``code`` in a fresh interpreter (imports there cannot poison this one)."""
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else ''


def ensure_torch() -> dict:
    info = probe('import torch, json; print(json.dumps(dict(version=torch.__version__, '
                 'cuda=torch.version.cuda, gpu=torch.cuda.is_available(), '
                 'include=__import__("os").path.join(__import__("os").path.dirname('
                 'torch.__file__), "include"))))')
    if not info:
        log('torch not found: installing the pinned ' + ' '.join(TORCH_PIN))
        pip(*TORCH_PIN, quiet=False)
        return ensure_torch()
    import json
    info = json.loads(info)
    log(f'using torch {info["version"]} (CUDA {info["cuda"]}, GPU visible: {info["gpu"]})')
    if not probe('import torchvision; print(torchvision.__version__)'):
        fail('torch is installed but torchvision is missing or does not import with it; '
             'mmpretrain needs it. Install the torchvision release that matches your '
             f'torch {info["version"]} (see https://github.com/pytorch/vision#installation).')
    return info


def find_cuda_home() -> str:
    home = os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH')
    if home and osp.exists(osp.join(home, 'bin', 'nvcc')):
        return home
    nvcc = shutil.which('nvcc')
    if nvcc:
        return osp.dirname(osp.dirname(osp.realpath(nvcc)))
    return ''


def mmcv_build_plan(torch_info: dict) -> dict:
    cuda_home = find_cuda_home()
    force = os.environ.get('FORCE_CUDA', '') == '1'
    with_cuda = bool(torch_info['cuda']) and bool(cuda_home) and (torch_info['gpu'] or force)
    archs = os.environ.get('TORCH_CUDA_ARCH_LIST', '')
    if with_cuda and not archs and not torch_info['gpu']:
        archs = '8.0;9.0'  # A100/H100 when building blind; override with TORCH_CUDA_ARCH_LIST
    headers = glob.glob(osp.join(torch_info['include'], 'c10', 'macros', '*.h')) + glob.glob(
        osp.join(torch_info['include'], 'ATen', '*.h'))
    needs_cxx20 = any('C++20 or later compatible compiler is required' in open(h).read()
                      for h in headers)
    py = f'cp{sys.version_info.major}{sys.version_info.minor}'
    variant = f'cuda{torch_info["cuda"]}-{archs.replace(";", "_") or "native"}' if with_cuda else 'cpu'
    key = f'mmcv-{MMCV_VERSION}-{py}-torch{torch_info["version"].replace("+", "_")}-{variant}'
    if not with_cuda and torch_info['cuda'] and cuda_home:
        log('CUDA torch and a CUDA toolkit are present but no GPU is visible: building mmcv '
            'with CPU ops only (set FORCE_CUDA=1 and TORCH_CUDA_ARCH_LIST to build CUDA ops).')
    return dict(with_cuda=with_cuda, archs=archs, cuda_home=cuda_home,
                needs_cxx20=needs_cxx20, key=key)


def mmcv_works() -> bool:
    return probe('import mmcv; from mmcv.ops import nms, RoIAlign; '
                 f'assert mmcv.__version__ == "{MMCV_VERSION}"; print("ok")') == 'ok'


def cache_dir() -> str:
    """m3i_mm's cache root (``m3i_mm/utils/cache_dir.py``, loaded by path: m3i_mm is not
    importable yet)."""
    import importlib.util
    path = osp.join(REPO, 'm3i_mm', 'utils', 'cache_dir.py')
    spec = importlib.util.spec_from_file_location('m3i_mm_cache_dir', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cache_root()


def prebuild_cpu_extension() -> None:
    """Compile the DCNv3 CPU extension now, so that its first use does not wait for it.

    Optional: without a C++ compiler (or if the build fails) the op compiles on first use
    or falls back to its PyTorch path, and the install goes on.
    """
    log('compiling the DCNv3 CPU extension (optional, ~15 s on 2 cores, cached under '
        f'{cache_dir()})')
    res = subprocess.run([sys.executable, '-m', 'm3i_mm.ops.dcnv3.cpu_ext'],
                         capture_output=True, text=True)
    lines = (res.stdout + res.stderr).strip().splitlines() or ['no output']
    if res.returncode == 0:
        log(f'DCNv3 CPU extension ready: {lines[-1]}')
    else:
        log(f'DCNv3 CPU extension not built ({lines[-1]}); DCNv3 on the CPU then uses '
            'its PyTorch path')


def download_mmcv_sdist(dest: str) -> str:
    found = glob.glob(osp.join(dest, f'mmcv-{MMCV_VERSION}.tar.gz'))
    if found:
        return found[0]
    os.makedirs(dest, exist_ok=True)
    log(f'downloading the mmcv {MMCV_VERSION} source distribution')
    # --no-build-isolation: mmcv's metadata step imports torch, which is installed here.
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--no-binary', ':all:',
           '--no-build-isolation', f'mmcv=={MMCV_VERSION}', '-d', dest]
    if subprocess.call(cmd) != 0:
        fail('could not download the mmcv source distribution (see pip output above).')
    return glob.glob(osp.join(dest, f'mmcv-{MMCV_VERSION}.tar.gz'))[0]


def patch_mmcv_source(src: str, plan: dict) -> None:
    setup_py = osp.join(src, 'setup.py')
    text = open(setup_py).read()
    if plan['needs_cxx20']:
        n = text.count('-std=c++17')
        if n == 0:
            fail('expected `-std=c++17` in mmcv setup.py; the source layout changed.')
        text = text.replace('-std=c++17', '-std=c++20')
        log(f'patched mmcv setup.py: -std=c++17 -> -std=c++20 ({n} places; torch needs C++20)')
    open(setup_py, 'w').write(text)


def run_with_progress(cmd: list, env: dict, log_path: str) -> int:
    """Run a build, writing its full output to ``log_path`` and a progress line to stdout."""
    ninja_step = re.compile(r'^\[(\d+)/(\d+)\]')
    start = time.time()
    last_shown = -1
    interactive = sys.stdout.isatty()
    with open(log_path, 'w') as out:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:
            out.write(line)
            m = ninja_step.match(line.strip())
            if not m:
                continue
            done, total = int(m.group(1)), int(m.group(2))
            pct = 100 * done // total
            elapsed = time.time() - start
            eta = elapsed / done * (total - done)
            msg = (f'building mmcv ops: {done}/{total} files ({pct}%), '
                   f'{elapsed / 60:.1f} min elapsed, ~{eta / 60:.1f} min left')
            if interactive:
                print('\r[install_deps] ' + msg, end='', flush=True)
            elif pct // 10 != last_shown:
                last_shown = pct // 10
                log(msg)
        proc.wait()
    if interactive:
        print(flush=True)
    return proc.returncode


def build_mmcv_wheel(plan: dict) -> str:
    wheel_dir = osp.join(cache_dir(), 'wheels', plan['key'])
    cached = glob.glob(osp.join(wheel_dir, 'mmcv-*.whl'))
    if cached:
        log(f'using the cached mmcv wheel {cached[0]}')
        return cached[0]
    sdist = download_mmcv_sdist(osp.join(cache_dir(), 'src'))
    with tempfile.TemporaryDirectory(prefix='m3i_mmcv_build_') as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter='data')
        src = osp.join(tmp, f'mmcv-{MMCV_VERSION}')
        patch_mmcv_source(src, plan)
        env = dict(os.environ, MMCV_WITH_OPS='1')
        env.setdefault('MAX_JOBS', str(os.cpu_count() or 1))
        if plan['with_cuda']:
            env.update(FORCE_CUDA='1', CUDA_HOME=plan['cuda_home'])
            if plan['archs']:
                env['TORCH_CUDA_ARCH_LIST'] = plan['archs']
        else:
            env['FORCE_CUDA'] = '0'
        os.makedirs(osp.join(cache_dir(), 'logs'), exist_ok=True)
        log_path = osp.join(cache_dir(), 'logs', plan['key'] + '.log')
        log(f'building mmcv {MMCV_VERSION} with {"CUDA" if plan["with_cuda"] else "CPU"} ops '
            f'({env["MAX_JOBS"]} jobs; ~15-25 min on 2 cores for CPU ops, once). '
            f'Full log: {log_path}')
        out_dir = osp.join(tmp, 'wheel')
        rc = run_with_progress([sys.executable, '-m', 'pip', 'wheel', '-v', '--no-deps',
                                '--no-build-isolation', src, '-w', out_dir], env, log_path)
        if rc != 0:
            tail = ''.join(open(log_path).readlines()[-40:])
            fail(f'the mmcv build failed; last lines of {log_path}:\n{tail}')
        built = glob.glob(osp.join(out_dir, 'mmcv-*.whl'))[0]
        os.makedirs(wheel_dir, exist_ok=True)
        final = osp.join(wheel_dir, osp.basename(built))
        shutil.copy(built, final + '.part')
        os.replace(final + '.part', final)  # atomic: a cache hit is always a whole wheel
    log(f'cached the mmcv wheel at {final}')
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--tests', action='store_true', help='also install test requirements')
    parser.add_argument('--editable', action='store_true', help='pip install -e the package')
    parser.add_argument('--no-package', action='store_true', help='only the dependencies')
    args = parser.parse_args()
    t0 = time.time()
    pip(*BUILD_TOOLS)
    torch_info = ensure_torch()
    # mmdet/mmseg/mmpretrain do not require mmcv (only their [mim] extras do), so the
    # rest of the stack goes first and mmcv's own dependencies are then in place.
    reqs = ['-r', osp.join(REPO, 'requirements', 'runtime.txt')]
    if args.tests:
        reqs += ['-r', osp.join(REPO, 'requirements', 'tests.txt')]
    pip(*reqs)
    if mmcv_works():
        log(f'mmcv {MMCV_VERSION} with compiled ops already works here')
    else:
        wheel = build_mmcv_wheel(mmcv_build_plan(torch_info))
        pip('--no-deps', '--force-reinstall', wheel)
        pip(wheel)  # pulls mmcv's remaining dependencies (addict, yapf, ...)
        if not mmcv_works():
            fail('mmcv was installed but `from mmcv.ops import nms` fails in this environment.')
    if not args.no_package:
        pip('--no-deps', '--no-build-isolation', *(['-e'] if args.editable else []), REPO)
        prebuild_cpu_extension()
    log(f'done in {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
