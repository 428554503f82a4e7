"""m3i_mm.cli.launch.exit_with_launcher: a rank does not outlive the process that launched it.

A stand-in launcher (a python process) starts a stand-in rank that calls
``exit_with_launcher`` and then sleeps; the launcher is killed with SIGKILL. The end-to-end
case (tools/dist_train.sh, 2 gloo ranks) is in tests/tools/test_train_faults.py.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, running

RANK = '''
import sys, time
from m3i_mm.cli.launch import exit_with_launcher
exit_with_launcher(sys.argv[1])
print('ready', flush=True)
time.sleep(120)
'''
LAUNCHER = '''
import subprocess, sys
rank = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]],
                        start_new_session=True)  # as torchrun starts its ranks
print(rank.pid, flush=True)
rank.wait()
'''


def launch(launcher_kind: str):
    env = dict(os.environ, PYTHONPATH=REPO, RANK='1')
    launcher = subprocess.Popen([sys.executable, '-c', LAUNCHER, RANK, launcher_kind],
                                env=env, stdout=subprocess.PIPE, text=True)
    rank = int(launcher.stdout.readline())
    assert launcher.stdout.readline().strip() == 'ready'  # the rank has armed its watch
    return launcher, rank


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc (Linux)')
@pytest.mark.parametrize('kind', ['pytorch', 'slurm'])  # parent-death signal; watchdog only
def test_a_rank_exits_when_its_launcher_is_killed(kind):
    launcher, rank = launch(kind)
    try:
        assert running(rank)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 10
        while running(rank) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(rank), f'--launcher {kind}: the rank outlived its launcher by 10 s'
    finally:
        if running(rank):
            os.kill(rank, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc (Linux)')
def test_a_run_without_launcher_survives_its_parent():
    """``nohup python tools/train.py ...`` from a shell that then exits keeps training."""
    launcher, rank = launch('none')
    try:
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        time.sleep(3)
        assert running(rank)
    finally:
        if running(rank):
            os.kill(rank, signal.SIGKILL)
