"""The CUDA extension builds without a GPU (at install time) and loads."""
import pytest
import torch

from m3i_mm.ops.dcnv3 import build_config, cuda_ext


def test_cuda_home_resolution_finds_a_real_toolkit():
    home = build_config.resolve_cuda_home()
    if not home:
        pytest.skip('no CUDA toolkit on this machine')
    import os.path as osp
    assert osp.exists(osp.join(home, 'bin', 'nvcc'))


@pytest.mark.skipif(not torch.version.cuda or not build_config.resolve_cuda_home(),
                    reason='needs a CUDA build of torch and a CUDA toolkit (the extension is '
                    'then built by `pip install` even without a GPU)')
def test_prebuilt_extension_imports_without_a_gpu():
    module = cuda_ext._prebuilt()  # built by setup.py; fails if the install skipped it
    assert callable(module.forward) and callable(module.backward)
    assert cuda_ext.extension_available()
