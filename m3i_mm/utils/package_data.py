"""Where m3i_mm's configs, model index and tools are: the one resolver for them.

Run from a checkout (or an editable install of one) they are the checkout's ``configs/``,
``model-index.yml`` and ``tools/``. A regular install (``pip install .``, a wheel) carries
copies of them in the package, under ``m3i_mm/.mim/`` (the OpenMMLab convention, which
``mim`` reads; ``setup.py`` puts them there when it builds). Standard library only.
"""
import os.path as osp
from typing import Optional

__all__ = ['PACKAGE_DIR', 'MIM_DIR', 'checkout_root', 'data_root', 'data_path', 'find_config']

#: The ``m3i_mm`` package folder.
PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The package data of an installed m3i_mm.
MIM_DIR = osp.join(PACKAGE_DIR, '.mim')


def checkout_root() -> Optional[str]:
    """The checkout the package runs from (the folder above it, when that holds
    ``model-index.yml`` and ``configs/``), or None for an installed package."""
    folder = osp.dirname(PACKAGE_DIR)
    if osp.isfile(osp.join(folder, 'model-index.yml')) and osp.isdir(osp.join(folder, 'configs')):
        return folder
    return None


def data_root() -> str:
    """The folder holding ``configs/``, ``model-index.yml`` and ``tools/``.

    :func:`checkout_root` when m3i_mm runs from a checkout; else the installed package data
    ``m3i_mm/.mim``. When neither has them (a broken install), ``m3i_mm/.mim`` is returned
    and the file look-ups below fail with that path in their messages.
    """
    return checkout_root() or MIM_DIR


def data_path(*parts: str) -> str:
    """A path inside :func:`data_root`, e.g. ``data_path('configs', 'demo', 'x.py')``."""
    return osp.join(data_root(), *parts)


def find_config(path: str) -> str:
    """``path`` as given when it exists; else, for a relative path, the same path inside
    :func:`data_root` when that exists (so ``configs/m3i/x.py`` works from any directory
    once m3i_mm is installed).

    Returns:
        The path to use (``path`` itself when neither exists: the caller reports it).
    """
    if osp.exists(path) or osp.isabs(path):
        return path
    shipped = data_path(path)
    return shipped if osp.isfile(shipped) else path
