"""The ``m3i://NAME`` checkpoint scheme and safe loading of zoo files.

``m3i://NAME`` works wherever mmengine takes a checkpoint path: ``load_from``,
``init_cfg=dict(type='Pretrained', checkpoint='m3i://NAME')``, ``--cfg-options``,
``mmengine.runner.load_checkpoint``. Loading resolves NAME in the model index, downloads
and verifies the file (:func:`m3i_mm.zoo.download.download_checkpoint`), reads it with
``torch.load(weights_only=True)`` and applies the entry's converter.
"""
import importlib.abc
import importlib.machinery
import os.path as osp
import pickle
import re
import sys
import zipfile
from typing import Any, Optional

from .converters import apply_converter
from .download import download_checkpoint
from .errors import CheckpointReadError, UnsafeCheckpointError, ZooError
from .index import get_entry

SCHEME = 'm3i://'
_CHECKPOINT_MODULE = 'mmengine.runner.checkpoint'


def load_checkpoint_file(path: str, map_location: Any = None, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with m3i_mm's allow-list and a clear error.

    Every local checkpoint m3i_mm and mmengine load goes through here (mmengine's loader of
    local paths is replaced by :func:`load_local_checkpoint`).

    Args:
        path: A checkpoint file.
        map_location: As for ``torch.load``.
        mmap: Memory-map the file (``torch.save`` zip archives; legacy files are read).

    Raises:
        CheckpointReadError: If the file is missing, empty, truncated or not a
            ``torch.save`` file; the message says which.
        UnsafeCheckpointError: If the file pickles objects outside the allow-list
            (``m3i_mm/utils/safe_globals.py``); the message names them.
    """
    import torch

    from ..utils.io import unreadable_checkpoint_reason
    from ..utils.safe_globals import allow_mmengine_checkpoint_globals
    reason = unreadable_checkpoint_reason(path)
    if reason is not None:
        raise CheckpointReadError(f'cannot load {path}: it {reason}; give a checkpoint '
                                  'written by torch.save (a .pth file)')
    allow_mmengine_checkpoint_globals()
    try:
        return torch.load(path, map_location=map_location, weights_only=True,
                          mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        if not re.search(r'GLOBAL [\w.]+', str(e)):  # not a refused class: broken data
            raise CheckpointReadError(f'cannot load {path}: torch.load failed ({_one_line(e)}); '
                                      'the file is damaged or not a PyTorch checkpoint') from e
        offending = sorted(set(re.findall(r'GLOBAL ([\w.]+)', str(e))))
        # (torch's own text is left out: it suggests weights_only=False, i.e. running it)
        raise UnsafeCheckpointError(
            f'refusing to load {path}: it pickles {", ".join(offending)}, which the '
            'weights_only allow-list (m3i_mm/utils/safe_globals.py) does not include, and '
            'unpickling arbitrary objects can run arbitrary code. If you trust the file, '
            're-save its tensors as a plain state dict') from e
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:  # damaged archive
        raise CheckpointReadError(f'cannot load {path}: torch.load failed ({type(e).__name__}: '
                                  f'{_one_line(e)}); the file is damaged or not a PyTorch '
                                  'checkpoint') from e


def load_local_checkpoint(filename: str, map_location: Any = None) -> Any:
    """mmengine ``CheckpointLoader`` backend for local paths (``--resume``, ``load_from``,
    ``init_cfg``, ``tools/test.py``): :func:`load_checkpoint_file`, so that a damaged file
    or one that pickles code is refused in one line naming the file, instead of torch's
    traceback."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')  # mmengine's message
    return load_checkpoint_file(filename, map_location)


def _one_line(error: BaseException) -> str:
    """torch's messages span lines (with tabs); errors here are one line."""
    return ' '.join(str(error).split())


def load_zoo_checkpoint(name: str, map_location: Any = None, cache_dir: Optional[str] = None
                        ) -> dict:
    """Download (if needed), verify, safely load and convert a zoo checkpoint.

    Args:
        name: The zoo entry name.
        map_location: As for ``torch.load``.
        cache_dir: Cache directory; defaults to ``$M3I_MM_HOME/checkpoints``.

    Returns:
        The checkpoint as mmengine expects it: the converter's output for entries that
        name one, else the file's dict as saved.
    """
    entry = get_entry(name)
    path = download_checkpoint(entry, cache_dir=cache_dir)
    checkpoint = load_checkpoint_file(path, map_location)
    if entry.converter is not None:
        return apply_converter(entry.converter, checkpoint)
    if not isinstance(checkpoint, dict):
        raise ZooError(f'zoo entry {name!r} ({path}) holds a {type(checkpoint).__name__}, not '
                       'a dict of tensors; name a Converter for it in its metafile')
    return checkpoint


def load_from_m3i_zoo(filename: str, map_location: Any = None) -> dict:
    """mmengine ``CheckpointLoader`` backend for ``m3i://NAME``."""
    return load_zoo_checkpoint(filename[len(SCHEME):], map_location)


def register_scheme() -> None:
    """Register ``m3i://`` with mmengine's ``CheckpointLoader``, and
    :func:`load_local_checkpoint` for local paths.

    ``CheckpointLoader`` lives in ``mmengine.runner``, whose import takes about two seconds.
    So that ``import m3i_mm`` stays cheap, the scheme is registered right away only if that
    module is already imported, and otherwise the moment it is (whatever imports it).
    """
    module = sys.modules.get(_CHECKPOINT_MODULE)
    if module is not None and hasattr(module, 'CheckpointLoader'):
        _register_with(module.CheckpointLoader)
    elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


def _register_with(checkpoint_loader: type) -> None:
    for prefix, loader in ((SCHEME, load_from_m3i_zoo), ('', load_local_checkpoint)):
        existing = checkpoint_loader._schemes.get(prefix)
        if existing is not None and getattr(existing, '__module__', None) == __name__:
            continue  # already ours (e.g. this module was reloaded)
        checkpoint_loader.register_scheme(prefix, loader, force=True)


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Import hook: registers the scheme once ``mmengine.runner.checkpoint`` has executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _CHECKPOINT_MODULE:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find_spec = getattr(finder, 'find_spec', None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


class _RegisteringLoader(importlib.abc.Loader):
    """Wraps the real loader of ``mmengine.runner.checkpoint`` and registers after it ran."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_with(module.CheckpointLoader)

    def __getattr__(self, name):  # get_source, get_filename, ... of the real loader
        return getattr(self._loader, name)
