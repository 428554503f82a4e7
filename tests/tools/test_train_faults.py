"""tools/train.py and tools/test.py on faulty inputs and environments (issue 21): pickle
payloads, another model's checkpoint, misspelled config keys, read-only work dirs, full
disks, two runs in one work dir. Each ends in one ``error:`` line, nothing lost."""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, TEST_CONFIGS, free_port, run_tool, running
from tests.tools.test_train_test_tools import (error_line, run_in_process,  # noqa: F401
                                               trained)

TINY_CLS = osp.join(TEST_CONFIGS, 'tiny_cls.py')


class _Payload:
    """Unpickling it would create ``marker``: it must never happen."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").write("the payload ran")', )


def evil_checkpoint(path, marker, legacy=False) -> str:
    obj = {'state_dict': {'backbone.conv1.weight': torch.zeros(8, 3, 3, 3)},
           'meta': {'epoch': 0, 'iter': 6, 'note': _Payload(str(marker))}}
    torch.save(obj, str(path), _use_new_zipfile_serialization=not legacy)
    return str(path)


def assert_refused_in_one_line(code, err, path, marker):
    line = error_line(err)
    assert code == 2, err
    assert line.startswith(f'error: refusing to load {path}: it pickles exec, which '
                           'the weights_only allow-list'), line
    # (not 'Traceback': earlier in-process runs may leave logging noise, see error_line)
    assert 'weights_only=False' not in err and 'UnpicklingError' not in err
    assert not osp.exists(marker), 'the payload ran'


PICKLE_PATHS = {
    '--resume PATH': lambda ckpt: ['train', [TINY_CLS, '--work-dir', 'w', '--resume', ckpt]],
    'load_from': lambda ckpt: ['train', [TINY_CLS, '--work-dir', 'w', '--cfg-options',
                                         f'load_from={ckpt}']],
    'init_cfg': lambda ckpt: ['train', [
        TINY_CLS, '--work-dir', 'w', '--cfg-options', 'model.backbone.init_cfg.type=Pretrained',
        f'model.backbone.init_cfg.checkpoint={ckpt}', 'model.backbone.init_cfg.prefix=backbone.']],
    'tools/test.py': lambda ckpt: ['test', [TINY_CLS, ckpt, '--work-dir', 'w']],
}


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy-format'])
@pytest.mark.parametrize('how', sorted(PICKLE_PATHS))
def test_a_pickle_payload_is_refused_in_one_line_naming_the_file(how, legacy,
                                                                 tiny_cls_workspace, capsys,
                                                                 monkeypatch):
    """Each ended in torch's long traceback, which names no file and suggests
    weights_only=False."""
    monkeypatch.chdir(tiny_cls_workspace)
    marker = tiny_cls_workspace / 'payload_ran'
    ckpt = evil_checkpoint(tiny_cls_workspace / 'evil.pth', marker, legacy)
    tool, argv = PICKLE_PATHS[how](ckpt)
    code, err = run_in_process(tool, argv, capsys)
    assert_refused_in_one_line(code, err, ckpt, marker)


def test_a_pickle_payload_named_by_last_checkpoint_is_refused(tiny_cls_workspace, capsys,
                                                              monkeypatch):
    monkeypatch.chdir(tiny_cls_workspace)
    marker = tiny_cls_workspace / 'payload_ran'
    os.makedirs('w')
    ckpt = evil_checkpoint(tiny_cls_workspace / 'w' / 'iter_6.pth', marker)
    (tiny_cls_workspace / 'w' / 'last_checkpoint').write_text(ckpt)
    code, err = run_in_process('train', [TINY_CLS, '--work-dir', 'w', '--resume'], capsys)
    assert_refused_in_one_line(code, err, ckpt, marker)


def test_fsdp2_checkpoint_reader_refuses_a_pickle_payload(tmp_path):
    from m3i_mm.engine.strategies.fsdp2 import _read_checkpoint
    from m3i_mm.zoo import UnsafeCheckpointError
    marker = tmp_path / 'payload_ran'
    ckpt = evil_checkpoint(tmp_path / 'full.pth', marker)
    with pytest.raises(UnsafeCheckpointError, match=f'refusing to load {ckpt}: it pickles '
                                                    'exec'):
        _read_checkpoint(ckpt)
    assert not marker.exists()


# --------------------------------------------- checkpoints that do not fit the model (4, 12)
def spoiled_copy(src: str, dst: str, spoil) -> str:
    ckpt = torch.load(src, map_location='cpu', weights_only=False)
    ckpt['state_dict'] = {k: spoil(k, v) for k, v in ckpt['state_dict'].items()}
    torch.save(ckpt, dst)
    return dst


SPOILERS = {  # how a checkpoint that "works" (test.py exited 0, near-chance scores) is made
    'int64': (lambda k, v: v.long() if v.is_floating_point() else v,
              r'have a dtype of another kind \(e.g. backbone.bn1.bias \(checkpoint '
              r'torch.int64, model torch.float32\)'),
    'bool': (lambda k, v: v != 0 if v.is_floating_point() else v,
             'have a dtype of another kind'),
    'nan': (lambda k, v: v * float('nan') if k == 'head.fc.weight' else v,
            r'1 hold NaN or Inf values \(e.g. head.fc.weight; a diverged run saves such '
            r'weights\)'),
}


@pytest.mark.parametrize('kind', sorted(SPOILERS))
def test_test_tool_refuses_weights_of_another_dtype_or_not_finite(kind, trained, tmp_path,
                                                                 capsys, monkeypatch):
    ws, _ = trained
    monkeypatch.chdir(ws)
    spoil, message = SPOILERS[kind]
    ckpt = spoiled_copy(osp.join(ws, 'straight', 'iter_12.pth'), str(tmp_path / 'x.pth'), spoil)
    code, err = run_in_process('test', [TINY_CLS, ckpt, '--work-dir', str(tmp_path / 'w')],
                               capsys)
    line = error_line(err)
    assert code == 2, err
    assert line.startswith(f'error: the checkpoint {ckpt} does not fit the model '
                           'ImageClassifier: '), line
    assert re.search(message, line), line
    assert '--allow-partial-checkpoint' in line


def test_resume_from_another_models_checkpoint_is_refused_before_it_is_loaded(
        trained, tmp_path, capsys, monkeypatch):
    """It ended in "loaded state dict contains a parameter group that doesn't match the size
    of optimizer's group" (a traceback), or, with as many weights, trained on silently."""
    ws, _ = trained
    monkeypatch.chdir(ws)
    other = osp.join(ws, 'straight', 'iter_6.pth')  # a ResNet-18; this run is a ResNet-34
    code, err = run_in_process('train', [TINY_CLS, '--work-dir', str(tmp_path / 'w'),
                                         '--resume', other, '--cfg-options',
                                         'model.backbone.depth=34'], capsys)
    line = error_line(err)
    assert code == 2, err
    assert line.startswith(f'error: the checkpoint {other} does not cover the model '
                           "ImageClassifier: 36 of the model's 98 weights are missing"), line
    assert line.endswith('Resume from a checkpoint of this config, or start from this one '
                         'with load_from=PATH (which loads the weights that fit) instead of '
                         '--resume.'), line


# ------------------------------------------------------- ranks end with their launcher (7)
def children_of(pid: int):
    """Pids of the processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.slow  # 2 gloo ranks under torchrun
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc (Linux)')
def test_ranks_exit_when_the_launchers_process_group_is_killed(tiny_cls_workspace):
    """torchrun starts each rank in a session of its own: killing tools/dist_train.sh's
    process group with SIGKILL left both ranks training (and saving) as orphans."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO, PYTHON=sys.executable,
               PORT=str(free_port()), PYTHONUNBUFFERED='1')
    log = tiny_cls_workspace / 'dist.log'
    with open(log, 'w') as out:
        launcher = subprocess.Popen(
            ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), TINY_CLS, '2', '--work-dir', 'w',
             '--cfg-options', 'train_cfg.max_iters=100000', 'param_scheduler.end=100000',
             'default_hooks.checkpoint.interval=100000'],
            cwd=str(tiny_cls_workspace), env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    ranks = []
    try:
        deadline = time.monotonic() + 300
        while 'Iter(train) [' not in log.read_text():  # both ranks are training
            assert launcher.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        ranks = children_of(launcher.pid)
        assert len(ranks) == 2, ranks
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + LAUNCHER_BOUND_S
        while any(running(pid) for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in ranks if running(pid)]
        assert not left, f'ranks {left} still run {LAUNCHER_BOUND_S} s after the launcher died'
    finally:
        for pid in [launcher.pid, *ranks]:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


LAUNCHER_BOUND_S = 15  # parent-death signal: at once; the watchdog: within a second or two


# --------------------------------------------------------------- one run per work dir (2)
@pytest.mark.slow  # a training run in the background
def test_a_second_run_in_the_same_work_dir_is_refused(tiny_cls_workspace):
    """Two runs in one work dir (other seeds) both exited 0, and one run's checkpoints
    vanished (the other's max_keep_ckpts deleted them)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO, PYTHONUNBUFFERED='1')
    log = tiny_cls_workspace / 'first.log'
    with open(log, 'w') as out:
        first = subprocess.Popen(
            [sys.executable, osp.join(REPO, 'tools', 'train.py'), TINY_CLS, '--work-dir', 'w',
             '--cfg-options', 'train_cfg.max_iters=100000', 'param_scheduler.end=100000'],
            cwd=str(tiny_cls_workspace), env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while 'Iter(train) [' not in log.read_text():
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        second = run_tool(['tools/train.py', TINY_CLS, '--work-dir', 'w', '--cfg-options',
                           'randomness.seed=1'], cwd=str(tiny_cls_workspace))
        assert second.returncode == 2, second.stderr[-3000:]
        line = error_line(second.stderr)
        assert line.startswith(f'error: the work dir {tiny_cls_workspace}/w is in use by '
                               f'another training run (pid {first.pid} on host '), line
        assert first.poll() is None  # the first run goes on
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # killed, its lock is stale: a new run (or --resume) takes it over
    third = run_tool(['tools/train.py', TINY_CLS, '--work-dir', 'w', '--cfg-options',
                      'train_cfg.max_iters=1'], cwd=str(tiny_cls_workspace))
    assert third.returncode == 0, third.stderr[-3000:]
    assert f'took over the lock of the work dir {tiny_cls_workspace}/w from an earlier run ' \
           f'(pid {first.pid} on host' in third.stderr
    assert f'process {first.pid} no longer runs' in third.stderr


# --------------------------------------------- read-only storage (11), on a real mount
def read_only_mount_works() -> bool:
    probe = subprocess.run(['unshare', '-m', '--propagation', 'private', 'sh', '-c',
                            'mount --bind /tmp /tmp && mount -o remount,ro,bind /tmp'],
                           capture_output=True)
    return probe.returncode == 0


needs_mount_namespace = pytest.mark.skipif(
    not sys.platform.startswith('linux') or not read_only_mount_works(),
    reason='needs `unshare -m` with mount rights to make a read-only file system (the '
    'errors themselves are also tested with simulated failures in tests/utils and tests/zoo)')


def run_with_read_only(path: str, args, cwd: str, env=None):
    """Run a repo tool with ``path`` bind-mounted read-only (in a mount namespace of its
    own, so nothing outside the process sees it)."""
    full_env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO, **(env or {}))
    script = (f'mount --bind "{path}" "{path}" && mount -o remount,ro,bind "{path}" && '
              f'exec "$0" "$@"')
    return subprocess.run(['unshare', '-m', '--propagation', 'private', 'sh', '-c', script,
                           sys.executable, osp.join(REPO, args[0]), *args[1:]], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=600)


@needs_mount_namespace
@pytest.mark.parametrize('tool', ['train', 'test'])
def test_a_read_only_work_dir_is_one_line(tool, trained, tmp_path):
    ws, _ = trained
    work_dir = tmp_path / 'w'
    work_dir.mkdir()
    args = [TINY_CLS] if tool == 'train' else [TINY_CLS, osp.join(ws, 'straight',
                                                                   'iter_12.pth')]
    res = run_with_read_only(str(work_dir), [f'tools/{tool}.py', *args, '--work-dir',
                                             str(work_dir)], cwd=ws)
    assert res.returncode == 2, res.stderr[-3000:]
    assert error_line(res.stderr) == (
        f'error: cannot write to the work dir {work_dir} (Read-only file system): logs and '
        'checkpoints go there; pass --work-dir with a writable directory')


@needs_mount_namespace
def test_a_read_only_zoo_cache_is_one_line(tmp_path):
    """tools/zoo.py download with $M3I_MM_HOME on a read-only file system."""
    from tests.zoo.conftest import LoopbackServer, checkpoint_bytes, model_entry, tiny_state_dict
    import yaml
    server = LoopbackServer()
    try:
        url = server.serve('/ckpt/ro.pth', checkpoint_bytes({'model': tiny_state_dict(0)}))
        index = tmp_path / 'index.yml'
        index.write_text(yaml.safe_dump({'Models': [model_entry('ro_entry', url)]}))
        home = tmp_path / 'home'
        home.mkdir()
        res = run_with_read_only(str(home), ['tools/zoo.py', 'download', 'ro_entry'],
                                 cwd=str(tmp_path), env=dict(M3I_MM_HOME=str(home),
                                                             M3I_MM_MODEL_INDEX=str(index),
                                                             M3I_MM_OFFLINE='0',
                                                             HF_HUB_OFFLINE='0'))
    finally:
        server.close()
    assert res.returncode == 1, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: zoo entry 'ro_entry': cannot write to the zoo cache {home}/checkpoints "
        f'({home}/checkpoints): Read-only file system. Set M3I_MM_HOME to a writable '
        'directory (the cache root), or download the file where the cache is writable and '
        'copy it with its .sha256 record')


# ----------------------------------------------------- misspelled config keys and types (13)
DEMO_CLS = osp.join(REPO, 'configs', 'demo', 'internimage-tiny_m3i-pre_1xb4-5e_demo-cls.py')
TYPOS = [  # (config, option, the one line); each ended in a traceback (the hook's at the
    # first save, after training), the optimizer's with "None is not a callable object"
    (TINY_CLS, 'default_hooks.checkpoint.intervl=2',
     "CheckpointHook (default_hooks.checkpoint) got unknown arguments ['intervl'], which "
     'would fail at the first save; its arguments are backend_args, by_epoch, '
     'file_client_args, filename_tmpl, greater_keys, interval, less_keys, max_keep_ckpts, '
     'out_dir, published_keys, rule, save_begin, save_best, save_last, save_optimizer, '
     'save_param_scheduler. Did you mean: interval?'),
    (DEMO_CLS, 'optim_wrapper.optimizer.type=AdamWW',
     'optim_wrapper.optimizer.type: AdamWW is not in the mmpretrain::optimizer registry. Did '
     'you mean: AdamW, Adam, RAdam?'),
    (TINY_CLS, 'train_cfg.max_iter=3',
     "IterBasedTrainLoop.__init__() got an unexpected keyword argument 'max_iter'. Did you "
     'mean: max_iters, val_interval?'),
    (TINY_CLS, 'model.head.num_clases=3',
     "ClsHead.__init__() got an unexpected keyword argument 'num_clases'. Did you mean: "
     'num_classes?'),
    (DEMO_CLS, 'model.backbone.arch.depth=[1,1,2,1]',
     "InternImage arch dict has unknown keys ['depth']. Did you mean: depths?"),
    (DEMO_CLS, 'model.backbone.depth=3',
     "InternImage got unexpected arguments ['depth']. Did you mean: depths?"),
]


@pytest.mark.parametrize('config, option, message', TYPOS,
                         ids=[option.split('=')[0] for _, option, _ in TYPOS])
def test_a_misspelled_config_key_or_type_is_one_line_at_the_start(config, option, message,
                                                                  tiny_cls_workspace, capsys,
                                                                  monkeypatch):
    monkeypatch.chdir(tiny_cls_workspace)
    code, err = run_in_process('train', [config, '--work-dir', 'w', '--cfg-options',
                                         'model.backbone.init_cfg=None', option], capsys)
    assert code == 2, err
    assert error_line(err) == f'error: {message}'
    assert not os.path.exists(tiny_cls_workspace / 'w' / 'iter_2.pth')  # refused at the start


# ------------------------------------------------- a save the storage refuses (11), for real
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='uses ulimit -f (RLIMIT_FSIZE)')
def test_a_checkpoint_larger_than_the_file_size_limit_is_one_line(tiny_cls_workspace):
    """The 137 kB checkpoint under a 100 kB file size limit (logs stay below it): the write
    fails with EFBIG. It ended in an OSError traceback."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    res = subprocess.run(['bash', '-c', 'ulimit -f 100 && exec "$0" "$@"', sys.executable,
                          osp.join(REPO, 'tools', 'train.py'), TINY_CLS, '--work-dir', 'w'],
                         cwd=str(tiny_cls_workspace), env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 2, res.stderr[-3000:]
    work_dir = tiny_cls_workspace / 'w'
    assert error_line(res.stderr) == (
        f'error: cannot save the checkpoint {work_dir}/iter_6.pth: File too large [EFBIG]; '
        'nothing of it was kept, and nothing else is lost: no checkpoint of this run was '
        'complete yet. Make room (or raise the limit) and resume')
    assert not [n for n in os.listdir(work_dir) if n.endswith('.pth') or '.tmp-' in n]
