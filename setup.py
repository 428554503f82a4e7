"""m3i_mm: M3I pre-training and InternImage for the OpenMMLab stack.

torch/torchvision and mmcv (2.1.0 with compiled ops) are not listed here: mmcv must be
built against the installed torch. ``tools/install_deps.py`` (or ``make install``)
installs them; see README "Install".
"""
import importlib.util
import os
import os.path as osp
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = osp.dirname(osp.abspath(__file__))
# Package data in the OpenMMLab layout (``m3i_mm/.mim/``, read by mim and by
# ``m3i_mm.utils.package_data``): the configs, the model index with its metafiles and the
# tools. ``install_deps.py`` installs a checkout's dependencies and is not shipped.
MIM_ITEMS = ('configs', 'model-index.yml', 'tools')
MIM_IGNORE = shutil.ignore_patterns('__pycache__', '*.pyc', 'install_deps.py')


def read_version() -> str:
    scope: dict = {}
    exec(open(osp.join(HERE, 'm3i_mm', 'version.py')).read(), scope)
    return scope['__version__']


def read_requirements(name: str) -> list:
    lines = open(osp.join(HERE, 'requirements', name)).read().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith('#')]


class BuildPyWithMimData(build_py):
    """``build_py`` that also copies :data:`MIM_ITEMS` into ``m3i_mm/.mim`` of the build.

    Only into the build folder (what a wheel or ``pip install .`` installs), never into the
    source tree; an editable install reads them from the checkout itself.
    """

    def run(self) -> None:
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        target = osp.join(self.build_lib, 'm3i_mm', '.mim')
        if osp.isdir(target):
            shutil.rmtree(target)  # a stale copy from an earlier build
        os.makedirs(target)
        for item in MIM_ITEMS:
            src = osp.join(HERE, item)
            if not osp.exists(src):
                raise FileNotFoundError(f'{src} is missing: m3i_mm is built from a checkout '
                                        'or an sdist that holds it (see MANIFEST.in)')
            if osp.isdir(src):
                shutil.copytree(src, osp.join(target, item), ignore=MIM_IGNORE)
            else:
                shutil.copy2(src, osp.join(target, item))


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


def setup_commands() -> dict:
    """``cmdclass`` and ``ext_modules``: the .mim copy, and the CUDA build when there is one."""
    options = cuda_extensions()
    options['cmdclass'] = {'build_py': BuildPyWithMimData, **options.get('cmdclass', {})}
    return options


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
    **setup_commands(),
)
