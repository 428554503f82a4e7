"""Build settings of the DCNv3 CUDA extension, shared by setup.py and the JIT loader, and
the log line of the extension loaders.

Standard library only (setup.py loads this file by path, before m3i_mm is importable).
"""
import glob
import os
import os.path as osp
import sys
from typing import List

SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'csrc', 'dcnv3_cuda.cu')
# Built when no GPU is visible: Ampere (A100, A10/RTX 30) and Hopper, plus PTX for newer.
DEFAULT_ARCH_LIST = '8.0;8.6;9.0+PTX'
NVCC_FLAGS = ['-O3']


def wheel_include_dirs() -> List[str]:
    """Header folders of the pip-installed CUDA libraries (``nvidia/*/include``).

    torch's CUDA headers include cuSPARSE/cuBLAS headers, which a minimal CUDA toolkit
    lacks but torch's ``nvidia-*`` wheels ship.
    """
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for root in getattr(nvidia, '__path__', []):
        found += sorted(p for p in glob.glob(osp.join(root, '*', 'include')) if osp.isdir(p))
    return found


def set_default_arch_list(gpu_visible: bool) -> None:
    """Without a GPU torch would target every architecture; pick a sensible few."""
    if not gpu_visible and not os.environ.get('TORCH_CUDA_ARCH_LIST'):
        os.environ['TORCH_CUDA_ARCH_LIST'] = DEFAULT_ARCH_LIST


def resolve_cuda_home() -> str:
    """The CUDA toolkit root: ``CUDA_HOME``/``CUDA_PATH``, the ``nvcc`` on PATH, or
    ``/usr/local/cuda``, whichever first has both ``bin/nvcc`` and the CUDA runtime library.

    (A ``nvcc`` wrapper script outside the toolkit, e.g. ``/usr/local/bin/nvcc``, would
    otherwise make torch look for ``libcudart`` in the wrong place.) Empty if none.
    """
    import shutil
    candidates = [os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH')]
    nvcc = shutil.which('nvcc')
    if nvcc:
        candidates.append(osp.dirname(osp.dirname(osp.realpath(nvcc))))
    candidates.append('/usr/local/cuda')
    for home in filter(None, candidates):
        has_runtime = any(
            osp.exists(osp.join(home, lib, 'libcudart.so')) for lib in ('lib64', 'lib'))
        if osp.exists(osp.join(home, 'bin', 'nvcc')) and has_runtime:
            return home
    return ''


def use_cuda_home() -> str:
    """Point torch's extension builder at :func:`resolve_cuda_home` and return it."""
    home = resolve_cuda_home()
    if home:
        os.environ['CUDA_HOME'] = home
        import sys
        cpp_extension = sys.modules.get('torch.utils.cpp_extension')
        if cpp_extension is not None:  # already imported: it read CUDA_HOME at import
            cpp_extension.CUDA_HOME = home
    return home


def log(message: str) -> None:
    """One line to mmengine's current logger, or to stderr where mmengine is not installed
    (the op runs without it, e.g. in ``tools/analysis/gpu_check.py``)."""
    try:
        from mmengine.logging import print_log
    except ImportError:
        print(message, file=sys.stderr, flush=True)
        return
    print_log(message, logger='current')
