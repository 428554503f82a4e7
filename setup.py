"""m3i_mm: M3I pre-training and InternImage for the OpenMMLab stack.

torch/torchvision and mmcv (2.1.0 with compiled ops) are not listed here: mmcv must be
built against the installed torch. ``tools/install_deps.py`` (or ``make install``)
installs them; see README "Install".
"""
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


setup(
    name='m3i_mm',
    version=read_version(),
    description='M3I all-in-one pre-training and InternImage backbones for OpenMMLab',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['m3i_mm', 'm3i_mm.*']),
    include_package_data=True,
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
    license='Apache-2.0',
    zip_safe=False,
)
