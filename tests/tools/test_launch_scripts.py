"""tools/dist_*.sh and tools/slurm_*.sh find their interpreter (tools/python_env.sh):
``$PYTHON``, else the checkout's ``.venv/bin/python``, else ``python3``.

The interpreters here are stand-in scripts that print how they were called, so the tests
see exactly which one each launcher runs, with which arguments and PYTHONPATH."""
import os
import os.path as osp
import shutil
import subprocess

import pytest

from tests.conftest import REPO

SCRIPTS = {
    'dist_train.sh': (['cfg.py', '2', '--amp'],
                      '-m torch.distributed.run --nnodes=1 --node_rank=0 '
                      '--master_addr=127.0.0.1 --master_port=29500 --nproc_per_node=2 '
                      '{tools}/train.py cfg.py --launcher pytorch --amp'),
    'dist_test.sh': (['cfg.py', 'ckpt.pth', '2'],
                     '-m torch.distributed.run --nnodes=1 --node_rank=0 '
                     '--master_addr=127.0.0.1 --master_port=29500 --nproc_per_node=2 '
                     '{tools}/test.py cfg.py ckpt.pth --launcher pytorch'),
    'slurm_train.sh': (['part', 'job', 'cfg.py', 'wd'],
                       '-u {tools}/train.py cfg.py --work-dir=wd --launcher slurm'),
    'slurm_test.sh': (['part', 'job', 'cfg.py', 'ckpt.pth'],
                      '-u {tools}/test.py cfg.py ckpt.pth --launcher slurm'),
}


def stand_in(path, name: str) -> str:
    """An executable that prints ``name``, its arguments and PYTHONPATH."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{name} $* PYTHONPATH=$PYTHONPATH"\n')
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def checkout(tmp_path):
    """A copy of tools/ in a folder that looks like a checkout (has m3i_mm/), with a PATH
    holding only the commands the scripts use, a stand-in python3 and a stand-in srun that
    runs what it is given after its options."""
    root = tmp_path / 'checkout'
    (root / 'tools').mkdir(parents=True)
    for name in [*SCRIPTS, 'python_env.sh']:
        shutil.copy(osp.join(REPO, 'tools', name), root / 'tools')
    (root / 'm3i_mm').mkdir()
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for command in ('dirname', 'sh'):
        os.symlink(shutil.which(command), bin_dir / command)
    (bin_dir / 'srun').write_text(  # skips its options (-p takes a value), runs the rest
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do case "$1" in -p) shift 2;; -*) shift;; '
        '*) break;; esac; done\nexec "$@"\n')
    (bin_dir / 'srun').chmod(0o755)
    return root, bin_dir


def run(root, bin_dir, script: str, env: dict) -> subprocess.CompletedProcess:
    args, _ = SCRIPTS[script]
    full_env = {'PATH': str(bin_dir), 'HOME': os.environ.get('HOME', '/tmp'), **env}
    return subprocess.run(['/bin/bash', str(root / 'tools' / script), *args], env=full_env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize('script', sorted(SCRIPTS))
def test_interpreter_order(checkout, script, tmp_path):
    root, bin_dir = checkout
    tools = str(root / 'tools')
    expected_args = SCRIPTS[script][1].format(tools=tools)
    stand_in(bin_dir / 'python3', 'python3')

    # no PYTHON, no .venv: python3 from PATH
    res = run(root, bin_dir, script, {})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f'python3 {expected_args} PYTHONPATH={root}'

    # the checkout's .venv (what `make install` creates) comes before python3
    stand_in(root / '.venv' / 'bin' / 'python', 'venv-python')
    res = run(root, bin_dir, script, {'PYTHONPATH': '/elsewhere'})
    assert res.stdout.strip() == f'venv-python {expected_args} PYTHONPATH={root}:/elsewhere'

    # $PYTHON comes first
    own = stand_in(tmp_path / 'own' / 'python', 'own-python')
    res = run(root, bin_dir, script, {'PYTHON': own})
    assert res.stdout.strip() == f'own-python {expected_args} PYTHONPATH={root}'


def test_no_interpreter_is_one_error_line(checkout):
    root, bin_dir = checkout
    res = run(root, bin_dir, 'dist_train.sh', {})
    assert res.returncode == 2 and res.stdout == ''
    assert res.stderr.startswith('error: no Python interpreter found (no $PYTHON, no ')
    assert 'set PYTHON=/path/to/python, or run make install' in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_installed_tools_do_not_put_their_folder_on_pythonpath(checkout):
    """In an installed package (m3i_mm/.mim/tools) there is no m3i_mm/ next to tools/: the
    installed m3i_mm is imported, PYTHONPATH stays as it was."""
    root, bin_dir = checkout
    shutil.rmtree(root / 'm3i_mm')
    stand_in(bin_dir / 'python3', 'python3')
    res = run(root, bin_dir, 'dist_test.sh', {'PYTHONPATH': '/site'})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith('--launcher pytorch PYTHONPATH=/site')
