"""m3i_mm's one cache root: downloaded checkpoints, compiled extensions, built wheels.

``$M3I_MM_HOME`` if set, else ``~/.cache/m3i_mm``. Standard library only: the installer
(``tools/install_deps.py``) loads this file by path before m3i_mm is importable.
"""
import os
import os.path as osp

HOME_ENV = 'M3I_MM_HOME'
DEFAULT_HOME = '~/.cache/m3i_mm'


def cache_root() -> str:
    """The cache root: ``$M3I_MM_HOME`` or ``~/.cache/m3i_mm`` (absolute, not created)."""
    return osp.abspath(osp.expanduser(os.environ.get(HOME_ENV) or DEFAULT_HOME))


def cache_dir(*parts: str, create: bool = False) -> str:
    """A folder under :func:`cache_root`, e.g. ``cache_dir('torch_extensions')``.

    Args:
        parts: Path components below the root.
        create: Create the folder (and its parents) if missing.
    """
    path = osp.join(cache_root(), *parts)
    if create:
        os.makedirs(path, exist_ok=True)
    return path
