"""One training run per work directory: a lock file naming its holder (pid, host, start).

Two runs in one work dir (a second ``tools/train.py`` started by mistake, a job array
with a fixed ``--work-dir``) both save ``iter_N.pth``, replace each other's
``last_checkpoint`` and delete each other's checkpoints (``max_keep_ckpts``), and both
exit 0. :func:`work_dir_lock` makes the second run stop at once with a
:class:`WorkDirLockedError` naming the holder.

The lock is the file ``<work_dir>/.m3i_mm_train.lock`` (JSON: pid, host, start time, the
process's kernel start time, command line). It is created with ``os.link``, which is
atomic on local and network file systems alike, and removed when the run ends. A lock
left behind by a run that was killed is *stale*:

- same host: stale when its pid no longer runs, or runs a process that started at
  another time than the holder did (the pid was reused);
- another host: its process cannot be seen from here, so the holder refreshes the lock's
  modification time every :data:`HEARTBEAT_S` seconds; a lock whose heartbeat is older
  than :data:`STALE_AFTER_S` is stale (a job requeued on another node after a crash waits
  that long at most, and clocks of the hosts may differ by less than that). Until then the
  run is refused, and the message says so.

A stale lock is taken over with a log line. Checking and taking over happen under an
``flock`` of ``<lock>.guard`` where the file system supports it, so two runs that find
the same stale lock do not both take it.
"""
import contextlib
import errno
import fcntl
import json
import os
import os.path as osp
import secrets
import socket
import sys
import threading
import time
from datetime import datetime
from typing import Iterator, Optional

from .errors import UsageError
from .io import fsync_dir, temporary_path

__all__ = ['HEARTBEAT_S', 'LOCK_NAME', 'STALE_AFTER_S', 'WorkDirLockedError',
           'WorkDirNotWritableError', 'check_writable_dir', 'work_dir_lock']

LOCK_NAME = '.m3i_mm_train.lock'
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0


class WorkDirLockedError(UsageError):
    """Another training run holds the work directory."""


class WorkDirNotWritableError(UsageError):
    """The work directory cannot be created or written (read-only, no permission, full)."""


def _not_writable(work_dir: str, error: OSError) -> WorkDirNotWritableError:
    reason = os.strerror(error.errno) if error.errno else str(error)
    return WorkDirNotWritableError(
        f'cannot write to the work dir {work_dir} ({reason}): logs and checkpoints go there; '
        'pass --work-dir with a writable directory')


def check_writable_dir(work_dir: str) -> None:
    """Create ``work_dir`` if needed and check that a file can be written in it.

    Raises:
        WorkDirNotWritableError: naming the directory and the reason, in one line.
    """
    try:
        os.makedirs(work_dir, exist_ok=True)
        probe = temporary_path(osp.join(work_dir, 'write-check'))
        with open(probe, 'x'):
            pass
        os.remove(probe)
    except OSError as e:
        raise _not_writable(work_dir, e) from e


def _process_start(pid: int) -> Optional[int]:
    """The kernel's start time of process ``pid`` (clock ticks since boot; Linux), or None."""
    try:
        with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(')') + 2:].split()  # after "pid (command) "
    return int(fields[19]) if len(fields) > 19 else None


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        return state not in ('Z', 'X')  # a zombie has ended; nobody reaped it yet
    except (OSError, IndexError):
        return True


def _describe(holder: dict) -> str:
    started = holder.get('started')
    return (f'pid {holder.get("pid")} on host {holder.get("host")}'
            + (f', started {started}' if started else ''))


def stale_reason(holder: dict, heartbeat_age: float, host: str) -> Optional[str]:
    """Why the lock of ``holder`` is stale, or None if its run may still be going.

    Args:
        holder: The lock file's content.
        heartbeat_age: Seconds since the lock file was last modified.
        host: This host's name.
    """
    pid = holder.get('pid')
    if not isinstance(pid, int):
        return 'its lock file is garbled'
    if holder.get('host') == host:
        if not _pid_runs(pid):
            return f'process {pid} no longer runs'
        recorded, current = holder.get('process_start'), _process_start(pid)
        if recorded is not None and current is not None and recorded != current:
            return f'pid {pid} now belongs to another process'
        return None
    if heartbeat_age > STALE_AFTER_S:
        return f'its heartbeat stopped {heartbeat_age / 60:.0f} minutes ago'
    return None


@contextlib.contextmanager
def _guard(lock: str) -> Iterator[None]:
    """An ``flock`` of ``<lock>.guard`` (best effort: some network file systems lack it)."""
    try:
        fd = os.open(lock + '.guard', os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _read_holder(lock: str) -> Optional[dict]:
    try:
        with open(lock, encoding='utf-8', errors='replace') as f:
            holder = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _heartbeat(lock: str, token: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            if (_read_holder(lock) or {}).get('token') != token:
                return  # taken over or removed: nothing of ours to refresh
            os.utime(lock)
        except OSError:
            pass  # e.g. a full disk: the next beat tries again


@contextlib.contextmanager
def work_dir_lock(work_dir: str, log=None) -> Iterator[str]:
    """Hold the training lock of ``work_dir`` for the duration of the block.

    Args:
        work_dir: The run's work directory (created if missing).
        log: Callable taking a message (default: print to stderr), for a taken-over lock.

    Yields:
        The lock file's path.

    Raises:
        WorkDirLockedError: Another run holds the lock and it is not stale.
        WorkDirNotWritableError: The work dir cannot be created or written.
    """
    log = log or (lambda message: print(f'[m3i_mm] {message}', file=sys.stderr, flush=True))
    lock = osp.join(osp.abspath(work_dir), LOCK_NAME)
    host = socket.gethostname()
    token = secrets.token_hex(8)
    holder = dict(pid=os.getpid(), host=host,
                  started=datetime.now().astimezone().isoformat(timespec='seconds'),
                  process_start=_process_start(os.getpid()), token=token,
                  command=' '.join(sys.argv))
    try:
        os.makedirs(work_dir, exist_ok=True)
        tmp = temporary_path(lock)
        with open(tmp, 'x', encoding='utf-8') as f:
            json.dump(holder, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _not_writable(work_dir, e) from e
    try:
        with _guard(lock):
            _take(lock, tmp, host, log)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lock, token, stop), daemon=True,
                            name='m3i_mm-work-dir-lock')
    beat.start()
    try:
        yield lock
    finally:
        stop.set()
        with _guard(lock):
            if (_read_holder(lock) or {}).get('token') == token:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(lock)


def _take(lock: str, tmp: str, host: str, log) -> None:
    """Link ``tmp`` (our holder record) to ``lock``, or replace a stale lock with it."""
    try:
        os.link(tmp, lock)
        fsync_dir(lock)
        return
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise _not_writable(osp.dirname(lock), e) from e
        # no hard links here (some FUSE file systems): an exclusive create instead
        try:
            with open(lock, 'x', encoding='utf-8') as f, open(tmp, encoding='utf-8') as src:
                f.write(src.read())
            return
        except FileExistsError:
            pass
    holder = _read_holder(lock)
    if holder is None:  # released in the meantime
        return _take(lock, tmp, host, log)
    try:
        age = time.time() - os.stat(lock).st_mtime
    except FileNotFoundError:
        return _take(lock, tmp, host, log)
    reason = stale_reason(holder, age, host)
    if reason is None:
        other_host = holder.get('host') != host
        raise WorkDirLockedError(
            f'the work dir {osp.dirname(lock)} is in use by another training run '
            f'({_describe(holder)}' + (f', last heartbeat {age:.0f} s ago' if other_host else '')
            + '); two runs in one work dir overwrite and delete each other\'s checkpoints. '
            'Wait for it to finish or pass another --work-dir'
            + (f'; a lock of another host is taken over once its heartbeat is '
               f'{STALE_AFTER_S / 60:.0f} minutes old' if other_host else '')
            + f' (if that run is gone, delete {lock})')
    os.replace(tmp, lock)
    fsync_dir(lock)
    log(f'took over the lock of the work dir {osp.dirname(lock)} from an earlier run '
        f'({_describe(holder)}): {reason}')
