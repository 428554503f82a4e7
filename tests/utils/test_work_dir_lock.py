"""m3i_mm.utils.work_dir_lock: one training run per work dir; stale locks are taken over."""
import errno
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from m3i_mm.utils import work_dir_lock as wdl
from m3i_mm.utils.work_dir_lock import (LOCK_NAME, STALE_AFTER_S, WorkDirLockedError,
                                        WorkDirNotWritableError, check_writable_dir,
                                        work_dir_lock)


def write_lock(work_dir, **holder):
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, LOCK_NAME)
    with open(path, 'w') as f:
        json.dump(holder, f)
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    with work_dir_lock(str(tmp_path / 'w')) as lock:
        with open(lock) as f:
            holder = json.load(f)
        assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
        assert holder['started'] and holder['process_start'] is not None
    assert not os.path.exists(lock)
    assert os.listdir(tmp_path / 'w') == [LOCK_NAME + '.guard']  # no temporaries left


def test_a_second_run_is_refused_while_the_first_runs(tmp_path):
    work_dir = str(tmp_path / 'w')
    with work_dir_lock(work_dir):
        with pytest.raises(WorkDirLockedError, match=rf'the work dir .*w is in use by another '
                                                     rf'training run \(pid {os.getpid()} on '
                                                     rf'host {socket.gethostname()}, started '):
            with work_dir_lock(work_dir):
                pass
        assert os.path.exists(os.path.join(work_dir, LOCK_NAME))  # still the first run's


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    work_dir = str(tmp_path / 'w')
    pid = dead_pid()
    write_lock(work_dir, pid=pid, host=socket.gethostname(), started='yesterday')
    messages = []
    with work_dir_lock(work_dir, log=messages.append) as lock:
        with open(lock) as f:
            assert json.load(f)['pid'] == os.getpid()
    assert len(messages) == 1 and f'process {pid} no longer runs' in messages[0]


def test_a_reused_pid_does_not_keep_a_lock(tmp_path):
    """The recorded pid runs, but as another process (it started at another time)."""
    work_dir = str(tmp_path / 'w')
    write_lock(work_dir, pid=os.getppid(), host=socket.gethostname(), process_start=1)
    messages = []
    with work_dir_lock(work_dir, log=messages.append):
        pass
    assert f'pid {os.getppid()} now belongs to another process' in messages[0]


def test_a_lock_of_another_host_is_kept_until_its_heartbeat_stops(tmp_path):
    work_dir = str(tmp_path / 'w')
    lock = write_lock(work_dir, pid=4242, host='node-17', started='2026-12-06T08:00:00+00:00')
    with pytest.raises(WorkDirLockedError, match=r'pid 4242 on host node-17, started '
                                                 r'2026-12-06T08:00:00\+00:00, last heartbeat '
                                                 r'\d+ s ago\).*taken over once its heartbeat '
                                                 r'is 10 minutes old'):
        with work_dir_lock(work_dir):
            pass
    old = time.time() - STALE_AFTER_S - 60
    os.utime(lock, (old, old))
    messages = []
    with work_dir_lock(work_dir, log=messages.append):
        pass
    assert 'its heartbeat stopped 11 minutes ago' in messages[0]


def test_the_holder_keeps_its_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setattr(wdl, 'HEARTBEAT_S', 0.05)
    with work_dir_lock(str(tmp_path / 'w')) as lock:
        old = time.time() - 3600
        os.utime(lock, (old, old))
        time.sleep(0.5)
        assert time.time() - os.stat(lock).st_mtime < 60


def test_a_garbled_lock_is_taken_over(tmp_path):
    work_dir = tmp_path / 'w'
    work_dir.mkdir()
    (work_dir / LOCK_NAME).write_text('{"pid": ')
    messages = []
    with work_dir_lock(str(work_dir), log=messages.append):
        pass
    assert 'its lock file is garbled' in messages[0]


def test_release_leaves_a_lock_that_another_run_took_over(tmp_path):
    work_dir = str(tmp_path / 'w')
    with work_dir_lock(work_dir) as lock:
        write_lock(work_dir, pid=4242, host='node-17', token='theirs')
    with open(lock) as f:
        assert json.load(f)['token'] == 'theirs'


@pytest.mark.parametrize('code', [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_an_unwritable_work_dir_is_one_clear_error(tmp_path, monkeypatch, code):
    """(Simulated: the tests run as root; tests/tools/test_train_faults.py mounts a real
    read-only work dir where the machine allows it.)"""
    real_open = open

    def failing_open(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr('builtins.open', failing_open)
    message = rf'cannot write to the work dir {tmp_path}/w \({os.strerror(code)}\)'
    with pytest.raises(WorkDirNotWritableError, match=message):
        with work_dir_lock(str(tmp_path / 'w')):
            pass
    with pytest.raises(WorkDirNotWritableError, match=message):
        check_writable_dir(str(tmp_path / 'w'))
