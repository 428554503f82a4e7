"""m3i_mm: M3I pre-training and InternImage for the OpenMMLab stack.

torch/torchvision and mmcv (2.1.0 with compiled ops) are not listed here: mmcv must be
built against the installed torch. ``tools/install_deps.py`` (or ``make install``)
installs them; see README "Install".
"""
import importlib.util
import os
import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    scope: dict = {}
    exec(open(osp.join(HERE, 'm3i_mm', 'version.py')).read(), scope)
    return scope['__version__']


def read_requirements(name: str) -> list:
    lines = open(osp.join(HERE, 'requirements', name)).read().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith('#')]


def cuda_extensions() -> dict:
    """The DCNv3 CUDA extension, when torch has CUDA and a CUDA toolkit is found.

    No GPU is needed to build it. ``M3I_MM_BUILD_CUDA_OPS=0`` skips it (the op then
    compiles on first use, or the Triton/PyTorch backends are used).
    """
    if os.environ.get('M3I_MM_BUILD_CUDA_OPS', '1') == '0':
        return {}
    spec = importlib.util.spec_from_file_location(
        'dcnv3_build_config', osp.join(HERE, 'm3i_mm', 'ops', 'dcnv3', 'build_config.py'))
    build_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_config)
    cuda_home = build_config.use_cuda_home()
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    except ImportError:  # isolated build without torch: the op compiles on first use
        return {}
    if not torch.version.cuda or not cuda_home:
        return {}
    build_config.set_default_arch_list(torch.cuda.is_available())
    ext = CUDAExtension(
        name='m3i_mm.ops.dcnv3._dcnv3_cuda',
        sources=[osp.relpath(build_config.SOURCE, HERE)],
        include_dirs=build_config.wheel_include_dirs(),
        extra_compile_args={'cxx': ['-O3'], 'nvcc': build_config.NVCC_FLAGS})
    return dict(ext_modules=[ext], cmdclass={'build_ext': BuildExtension})


setup(
    name='m3i_mm',
    version=read_version(),
    description='M3I all-in-one pre-training and InternImage backbones for OpenMMLab',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['m3i_mm', 'm3i_mm.*']),
    include_package_data=True,
    package_data={'m3i_mm.ops.dcnv3': ['csrc/*.cu', 'csrc/*.cpp'], 'm3i_mm.zoo': ['data/*.txt']},
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    license='Apache-2.0',
    zip_safe=False,
    **cuda_extensions(),
)
