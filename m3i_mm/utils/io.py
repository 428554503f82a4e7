"""Crash-safe file writing and checkpoint-file checks, shared by the whole package.

Every file m3i_mm writes that a later run or tool reads back (checkpoints, release files,
``last_checkpoint``, shard indexes, zoo hash records) goes through :func:`atomic_write`:
the data is written under a temporary name in the target's directory, flushed and
``fsync``-ed, renamed over the target (``os.replace``, atomic on POSIX) and the directory
is ``fsync``-ed, so that after a crash or power loss the target holds either its old or
its new content, never a part of the new one. Temporaries left by a killed writer are
named ``.<name>.tmp-<pid>-<random>`` (:func:`temporary_path`) and removed by
:func:`remove_stale_temporaries`.
"""
import contextlib
import errno
import os
import os.path as osp
import re
import secrets
import shutil
import zipfile
from typing import IO, Any, Iterator, List, Optional

__all__ = ['STORAGE_WRITE_ERRNOS', 'atomic_torch_save', 'atomic_write', 'atomic_write_text',
           'commit_path', 'fsync_dir', 'fsync_path', 'remove_stale_temporaries',
           'temporary_path', 'unreadable_checkpoint_reason']

#: Write failures that are the storage's, not the program's: no permission, read-only file
#: system, full disk or quota, file size limit. The tools report them in one line.
STORAGE_WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                                  errno.EDQUOT, errno.EFBIG})

_TEMPORARY = re.compile(r'^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(-[0-9a-f]+)?(?P<old>\.old)?$')


def temporary_path(path: str) -> str:
    """A fresh temporary name for ``path``: ``.<name>.tmp-<pid>-<random>`` next to it (same
    directory, hence same file system, so the rename is atomic). The random part keeps
    writers apart that share a pid (containers restart with the same pids; nodes of a
    shared file system have their own)."""
    dirname, basename = osp.split(osp.abspath(path))
    return osp.join(dirname, f'.{basename}.tmp-{os.getpid()}-{secrets.token_hex(4)}')


def fsync_path(path: str) -> None:
    """``fsync`` a file (its data reach the disk) or a directory (its entries do)."""
    flags = os.O_RDONLY
    if osp.isdir(path):
        flags |= getattr(os, 'O_DIRECTORY', 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """``fsync`` the directory holding ``path``, so a rename into it survives a crash."""
    fsync_path(osp.dirname(osp.abspath(path)))


def _fsync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            fsync_path(osp.join(root, name))
        fsync_path(root)


def commit_path(tmp: str, path: str) -> None:
    """Make a completely written ``tmp`` (file or directory) durable and rename it to ``path``.

    ``tmp`` must be in the same directory as ``path``. A directory replaces an existing
    ``path`` directory too: the old one is moved aside first and deleted after the rename.
    """
    if osp.isdir(tmp):
        _fsync_tree(tmp)
        aside = None
        if osp.lexists(path):
            aside = temporary_path(path) + '.old'
            os.replace(path, aside)
        os.replace(tmp, path)
        fsync_dir(path)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True) if osp.isdir(aside) else os.remove(aside)
        return
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_dir(path)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'wb', encoding: Optional[str] = None) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block completes.

    The file is created with the default permissions (``0o666`` minus the umask), like a
    plain ``open``. If the block raises, the temporary is removed and ``path`` is left as
    it was.

    Args:
        path: The file to (re)place.
        mode: ``'wb'`` or ``'w'``.
        encoding: Text encoding for ``mode='w'`` (default UTF-8).

    Yields:
        The open temporary file.
    """
    if mode not in ('wb', 'w'):
        raise ValueError(f"atomic_write writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, mode.replace('w', 'x'),  # never truncate another writer's file
                  encoding=(encoding or 'utf-8') if mode == 'w' else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path)
    finally:
        if osp.lexists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    with atomic_write(path, 'w') as f:
        f.write(text)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` atomically and durably (see :func:`atomic_write`)."""
    import torch
    with atomic_write(path, 'wb') as f:
        torch.save(obj, f)


def remove_stale_temporaries(dirname: str, keep_pid: Optional[int] = None) -> List[str]:
    """Delete the temporaries (``.<name>.tmp-<pid>-<random>``) that killed writers left in
    ``dirname``.

    A directory that :func:`commit_path` had moved aside (``...old``) goes back to its name
    when a kill came before the new one took its place, instead of being deleted.

    Args:
        dirname: The directory to clean (not recursive).
        keep_pid: Leave the temporaries of this process alone (default: the current one);
            -1 keeps none (when no writer of this run can be active yet).

    Returns:
        The names removed (or restored).
    """
    keep_pid = os.getpid() if keep_pid is None else keep_pid
    removed = []
    if not osp.isdir(dirname):
        return removed
    for name in os.listdir(dirname):
        match = _TEMPORARY.match(name)
        if match is None or int(match.group('pid')) == keep_pid:
            continue
        path = osp.join(dirname, name)
        original = osp.join(dirname, match.group('name'))
        if match.group('old') and not osp.lexists(original):
            os.replace(path, original)
            fsync_dir(original)
            removed.append(name)
            continue
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path) if osp.isdir(path) else os.remove(path)
            removed.append(name)
    return removed


def unreadable_checkpoint_reason(path: str) -> Optional[str]:
    """Why ``path`` cannot be a checkpoint ``torch.load`` reads, or None if it may be one.

    A cheap look at the file, without unpickling: missing, a directory without the
    sharded-checkpoint metadata, empty, or neither a ``torch.save`` zip archive (checked by
    its central directory, so a truncated file is caught) nor a legacy pickle.
    """
    if osp.isdir(path):
        return None if osp.isfile(osp.join(path, 'meta.pth')) else \
            'is a directory, not a checkpoint file'
    if not osp.exists(path):
        return 'does not exist'
    size = osp.getsize(path)
    if size == 0:
        return 'is empty (0 bytes): its write was interrupted'
    if zipfile.is_zipfile(path):
        return None
    with open(path, 'rb') as f:
        head = f.read(4)
    if head[:2] == b'PK':
        return f'is a truncated or damaged zip archive ({size} bytes): its write was ' \
            'probably interrupted'
    if head[:1] == b'\x80':  # pickle protocol >= 2: torch's legacy (non-zip) format
        return None
    return f'is not a PyTorch checkpoint ({size} bytes starting with {head!r})'
