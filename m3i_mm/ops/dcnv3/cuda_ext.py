"""Loader of the DCNv3 CUDA C++ extension.

``setup.py`` builds ``m3i_mm.ops.dcnv3._dcnv3_cuda`` at install time when torch has CUDA and
a CUDA toolkit is found (no GPU needed; ``M3I_MM_BUILD_CUDA_OPS=0`` skips it). Otherwise the
first use compiles the same source just in time with ``torch.utils.cpp_extension.load`` and
caches the build under ``$M3I_MM_HOME/torch_extensions`` (default ``~/.cache/m3i_mm``).
"""
import functools
from types import ModuleType

import torch

from ...utils.cache_dir import cache_dir
from . import build_config
from .geometry import DCNv3Geometry


def _prebuilt() -> ModuleType:
    from . import _dcnv3_cuda  # type: ignore[attr-defined]
    return _dcnv3_cuda


def cuda_toolkit_home() -> str:
    return build_config.resolve_cuda_home()


@functools.lru_cache(maxsize=None)
def extension_available() -> bool:
    """Prebuilt, or buildable here (CUDA torch and a CUDA toolkit)."""
    try:
        _prebuilt()
        return True
    except ImportError:
        return bool(torch.version.cuda) and bool(cuda_toolkit_home())


@functools.lru_cache(maxsize=None)
def load_extension() -> ModuleType:
    """The compiled extension: prebuilt if installed, else built (once) and cached.

    Raises:
        RuntimeError: when torch has no CUDA or no CUDA toolkit can be found.
    """
    try:
        return _prebuilt()
    except ImportError:
        pass
    if not torch.version.cuda or not cuda_toolkit_home():
        raise RuntimeError(
            'dcnv3: the "cuda" backend needs a CUDA build of torch and a CUDA toolkit '
            f'(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cuda_toolkit_home()!r}); '
            'use backend="triton" or "pytorch" instead')
    build_config.use_cuda_home()
    from torch.utils.cpp_extension import load
    tag = f'torch{torch.__version__}-cuda{torch.version.cuda}'.replace('+', '_')
    build_dir = cache_dir('torch_extensions', tag, create=True)
    build_config.set_default_arch_list(torch.cuda.is_available())
    build_config.log(f'dcnv3: compiling the CUDA extension (first use; cached in {build_dir})')
    return load(name='m3i_mm_dcnv3_cuda', sources=[build_config.SOURCE],
                build_directory=build_dir, extra_cuda_cflags=build_config.NVCC_FLAGS,
                extra_include_paths=build_config.wheel_include_dirs(), verbose=False)


def dcnv3_forward_cuda(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                       geo: DCNv3Geometry) -> torch.Tensor:
    return load_extension().forward(input, offset, mask, *geo.as_args())


def dcnv3_backward_cuda(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                        grad_out: torch.Tensor, geo: DCNv3Geometry,
                        need_input_grad: bool = True) -> tuple:
    return tuple(load_extension().backward(grad_out, input, offset, mask, *geo.as_args(),
                                           need_input_grad))
