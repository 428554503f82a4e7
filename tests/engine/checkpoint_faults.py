"""Kill a training run at every file operation of a checkpoint save, then resume it.

Run by ``test_checkpoint_hook.py`` as a script in a fresh process (it forks one child per
run, so the parent must not have started any thread pool)::

    python tests/engine/checkpoint_faults.py HOOK_TYPE OUT_JSON

A toy model trains ``ITERS`` iterations with a checkpoint every ``INTERVAL`` iterations and
``max_keep_ckpts=1``. A dry run records the file operations of the second save (the one
that replaces the first checkpoint): opening for writing, the first write of each file,
``fsync``, ``os.replace``/``rename``, ``os.remove``/``unlink``, ``shutil.rmtree``. Then,
for every operation, a fresh run is killed with SIGKILL right before it (and, for a first
write, once more after half of its bytes reach the file), and a new process resumes the
work dir as ``--resume`` does (``resume=True``, no path). The JSON written lists, per
fault point, whether the resumed run finished with the weights of an uninterrupted run,
what it resumed from and what the work dir held.
"""
import builtins
import json
import os
import os.path as osp
import shutil
import signal
import sys
import tempfile
import traceback

ITERS, INTERVAL = 6, 2
SAVE_ITER = 3  # runner.iter during the after_train_iter that writes iter_4.pth
CHECKPOINT_NAMES = ('iter_', '.iter_', 'last_checkpoint', '.last_checkpoint')


def _build_runner(work_dir: str, hook_type: str, resume: bool):
    import torch
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch import nn

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 1)

        def forward(self, inputs, targets=None, mode='tensor'):
            out = self.fc(torch.stack(inputs) if isinstance(inputs, list) else inputs)
            if mode == 'loss':
                return dict(loss=((out.squeeze(1) - torch.stack(targets))**2).mean())
            return out

    class Window(Hook):
        """Marks the after_train_iter of the save under test (first and last hook)."""

        def __init__(self, value: bool, priority: str) -> None:
            self.value = value
            self.priority = priority

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter == SAVE_ITER:
                _STATE['active'] = self.value

    generator = torch.Generator().manual_seed(0)
    data = [dict(inputs=torch.randn(3, generator=generator),
                 targets=torch.randn((), generator=generator)) for _ in range(2 * ITERS)]
    runner = Runner(
        model=Toy(), work_dir=work_dir, experiment_name='faults',
        train_dataloader=dict(batch_size=2, num_workers=0, dataset=data,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=ITERS),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        default_hooks=dict(checkpoint=dict(type=hook_type, interval=INTERVAL, by_epoch=False,
                                           max_keep_ckpts=1),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[Window(True, 'HIGHEST'), Window(False, 'LOWEST')],
        default_scope='mmengine', randomness=dict(seed=0), resume=resume, load_from=None)
    return runner


# ------------------------------------------------------------------ fault injection
_STATE = dict(active=False, events=[], kill_at=None, half=False)


def _checkpoint_path(path) -> bool:
    return isinstance(path, (str, bytes, os.PathLike)) and osp.basename(
        os.fsdecode(path)).startswith(CHECKPOINT_NAMES)


def _event(description: str, midway_write=None) -> None:
    """Record an operation; SIGKILL this process if it is the one to die at."""
    if not _STATE['active']:
        return
    number = len(_STATE['events'])
    _STATE['events'].append(description)
    if number == _STATE['kill_at']:
        if _STATE['half'] and midway_write is not None:
            midway_write()
        os.kill(os.getpid(), signal.SIGKILL)


class _File:
    """A file opened for writing whose first write is a fault point."""

    def __init__(self, file, name: str) -> None:
        self._file = file
        self._name = name
        self._written = False

    def write(self, data):
        if not self._written:
            self._written = True

            def half():
                self._file.write(data[:len(data) // 2])
                self._file.flush()
                os.fsync(self._file.fileno())  # the half is really in the file
            _event(f'write {self._name}', half)
        return self._file.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _install_fault_points() -> None:
    real_open, real_replace, real_rename = builtins.open, os.replace, os.rename
    real_remove, real_unlink, real_rmtree, real_fsync = (os.remove, os.unlink, shutil.rmtree,
                                                         os.fsync)

    def open_(file, mode='r', *args, **kwargs):
        writing = any(m in mode for m in 'wax+')
        if writing and _checkpoint_path(file):
            _event(f'open {osp.basename(os.fsdecode(file))}')
            return _File(real_open(file, mode, *args, **kwargs), osp.basename(os.fsdecode(file)))
        return real_open(file, mode, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if _checkpoint_path(dst):
            _event(f'replace -> {osp.basename(os.fsdecode(dst))}')
        return real_replace(src, dst, *args, **kwargs)

    def rename(src, dst, *args, **kwargs):
        if _checkpoint_path(dst):
            _event(f'rename -> {osp.basename(os.fsdecode(dst))}')
        return real_rename(src, dst, *args, **kwargs)

    def remove(path, *args, **kwargs):
        if _checkpoint_path(path):
            _event(f'remove {osp.basename(os.fsdecode(path))}')
        return real_remove(path, *args, **kwargs)

    def unlink(path, *args, **kwargs):
        if _checkpoint_path(path):
            _event(f'unlink {osp.basename(os.fsdecode(path))}')
        return real_unlink(path, *args, **kwargs)

    def rmtree(path, *args, **kwargs):
        if _checkpoint_path(path):
            _event(f'rmtree {osp.basename(os.fsdecode(path))}')
        return real_rmtree(path, *args, **kwargs)

    def fsync(fd):
        _event('fsync')
        return real_fsync(fd)

    builtins.open, os.replace, os.rename = open_, replace, rename
    os.remove, os.unlink, shutil.rmtree, os.fsync = remove, unlink, rmtree, fsync


# ------------------------------------------------------------------ runs in children
def _in_child(target, *args) -> int:
    """Run ``target(*args)`` in a forked child; its exit status (negative: killed by)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            target(*args)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _train(work_dir: str, hook_type: str, kill_at, half: bool, events_file=None) -> None:
    _STATE.update(kill_at=kill_at, half=half)
    runner = _build_runner(work_dir, hook_type, resume=False)
    runner.train()
    if events_file is not None:
        with open(events_file, 'w') as f:
            json.dump(_STATE['events'], f)


def _resume(work_dir: str, hook_type: str, result_file: str) -> None:
    import torch
    record = osp.join(work_dir, 'last_checkpoint')
    named = open(record).read().strip() if osp.isfile(record) else None
    runner = _build_runner(work_dir, hook_type, resume=True)
    runner.train()
    torch.save(dict(weights=runner.model.state_dict(), iter=runner.iter,
                    resumed_from=named), result_file)


def _listing(work_dir: str) -> list:
    return sorted(n for n in os.listdir(work_dir) if n.startswith(CHECKPOINT_NAMES))


def main(hook_type: str, out_json: str) -> None:
    import matplotlib.pyplot  # noqa: F401  (the visualizer's)
    import torch
    import torch._dynamo  # noqa: F401  (imported by the first optimizer)
    from mmengine.registry import HOOKS, init_default_scope
    from mmengine.runner import Runner
    # Imported and looked up once here, not in each forked child.
    init_default_scope('mmengine')
    HOOKS.get(hook_type)
    Runner._log_env = lambda self, env_cfg: None  # collect_env runs compilers: seconds
    _install_fault_points()
    root = tempfile.mkdtemp(prefix='ckpt_faults_')
    straight, events_file = osp.join(root, 'straight'), osp.join(root, 'events.json')
    assert _in_child(_train, straight, hook_type, None, False, events_file) == 0
    with open(events_file) as f:
        events = json.load(f)
    assert _in_child(_resume, straight, hook_type, osp.join(root, 'straight.pt')) == 0
    expected = torch.load(osp.join(root, 'straight.pt'))['weights']
    points = [(i, False) for i in range(len(events))] + [
        (i, True) for i, e in enumerate(events) if e.startswith('write ')]
    results = []
    for number, (kill_at, half) in enumerate(points):
        work_dir = osp.join(root, f'run{number}')
        status = _in_child(_train, work_dir, hook_type, kill_at, half)
        after_kill = _listing(work_dir)
        result_file = osp.join(root, f'run{number}.pt')
        resumed = _in_child(_resume, work_dir, hook_type, result_file) == 0
        row = dict(fault=('half of ' if half else 'before ') + events[kill_at],
                   killed=status == -signal.SIGKILL, after_kill=after_kill, resumed=resumed)
        if resumed:
            result = torch.load(result_file)
            row.update(resumed_from=result['resumed_from'], iter=result['iter'],
                       same_weights=all(torch.equal(result['weights'][k], v)
                                        for k, v in expected.items()),
                       after_resume=_listing(work_dir))
        results.append(row)
    with open(out_json, 'w') as f:
        json.dump(dict(events=events, results=results), f, indent=1)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    import m3i_mm  # noqa: F401  (registers the m3i_mm scope and the checkpoint allow-list)
    main(sys.argv[1], sys.argv[2])
