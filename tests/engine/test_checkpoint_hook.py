"""m3i_mm.CheckpointHook: a kill at any file operation of a save leaves a resumable run."""
import errno
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from tests.conftest import REPO

DRIVER = osp.join(REPO, 'tests', 'engine', 'checkpoint_faults.py')


def run_fault_injection(hook_type: str, tmp_path) -> dict:
    out = tmp_path / 'faults.json'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    res = subprocess.run([sys.executable, DRIVER, hook_type, str(out)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-5000:]
    with open(out) as f:
        return json.load(f)


@pytest.mark.slow  # ~40 forked training runs
def test_kill_at_any_point_of_a_save_leaves_a_resumable_checkpoint(tmp_path):
    report = run_fault_injection('m3i_mm.CheckpointHook', tmp_path)
    events, results = report['events'], report['results']
    # the save under test: checkpoint to a temporary, fsync, rename, fsync the directory;
    # last_checkpoint the same way; then the previous checkpoint is deleted
    assert events[0].startswith('open .iter_4.pth.tmp-') and events[-1] == 'remove iter_2.pth'
    assert any(e.startswith('replace -> iter_4.pth') for e in events)
    assert any(e.startswith('replace -> last_checkpoint') for e in events)
    assert events.count('fsync') >= 4
    assert len(results) > len(events)  # every operation, plus kills half-way through writes
    for row in results:
        assert row['killed'], row
        assert row['resumed'] and row['same_weights'] and row['iter'] == 6, row
        assert row['resumed_from'].endswith(('iter_2.pth', 'iter_4.pth')), row
        # nothing is left behind: no temporaries, only the newest checkpoint
        assert row['after_resume'] == ['iter_6.pth', 'last_checkpoint'], row
    # until last_checkpoint is replaced the run resumes from iter_2, afterwards from iter_4
    switch = next(i for i, e in enumerate(events) if e == 'replace -> last_checkpoint')
    for row, fault_index in zip(results, fault_indices(events, results)):
        newest = 'iter_4.pth' if fault_index > switch else 'iter_2.pth'
        assert row['resumed_from'].endswith(newest), row


def fault_indices(events, results):
    """Index in ``events`` of each result's fault (the driver's order: every event, then
    the half-way writes)."""
    writes = [i for i, e in enumerate(events) if e.startswith('write ')]
    return list(range(len(events))) + writes[:len(results) - len(events)]


@pytest.mark.slow  # ~40 forked training runs
def test_the_fault_injection_catches_mmengine_checkpoint_hook(tmp_path):
    """mmengine's own hook deletes iter_2 before iter_4 is written: some kills leave
    nothing to resume. (This is why the tools use m3i_mm.CheckpointHook.)"""
    results = run_fault_injection('CheckpointHook', tmp_path)['results']
    lost = [row for row in results if not row['resumed']]
    assert lost, results
    assert any(row['after_kill'] == ['last_checkpoint'] for row in lost), lost


class _Scorer(BaseModel):
    """One weight; the validation "accuracy" rises with every evaluation."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, inputs=None, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return dict(loss=(self.w - 1).pow(2).sum())
        return [dict(score=float(self.w))]


def test_a_new_best_checkpoint_replaces_the_old_one_only_once_it_is_written(tmp_path,
                                                                            monkeypatch):
    from mmengine.evaluator import BaseMetric
    from mmengine.registry import METRICS

    @METRICS.register_module(force=True)
    class _RisingScore(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.extend(data_samples)

        def compute_metrics(self, results):
            return dict(score=results[0]['score'])

    operations = []
    real_replace, real_remove = os.replace, os.remove
    monkeypatch.setattr(os, 'replace', lambda src, dst: operations.append(
        ('write', osp.basename(dst))) or real_replace(src, dst))
    monkeypatch.setattr(os, 'remove', lambda path: operations.append(
        ('remove', osp.basename(path))) or real_remove(path))
    data = [dict(inputs=torch.zeros(1))] * 2
    loader = dict(batch_size=1, dataset=data, sampler=dict(type='DefaultSampler',
                                                           shuffle=False),
                  collate_fn=dict(type='pseudo_collate'))
    runner = Runner(
        model=_Scorer(), work_dir=str(tmp_path), train_dataloader=loader,
        val_dataloader=loader, val_evaluator=dict(type='_RisingScore'), val_cfg=dict(),
        train_cfg=dict(by_epoch=False, max_iters=3, val_interval=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='m3i_mm.CheckpointHook', interval=100,
                                           by_epoch=False, save_best='score', rule='greater',
                                           save_last=False)),
        default_scope='mmengine')
    runner.train()
    best = [name for kind, name in operations if name.startswith('best_')]
    assert best == ['best_score_iter_1.pth', 'best_score_iter_2.pth', 'best_score_iter_1.pth',
                    'best_score_iter_3.pth', 'best_score_iter_2.pth']
    assert [kind for kind, name in operations if name.startswith('best_')] == [
        'write', 'write', 'remove', 'write', 'remove']
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith('.pth')) == [
        'best_score_iter_3.pth']


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EFBIG])
def test_a_failed_save_keeps_the_previous_checkpoint_and_names_it(tmp_path, monkeypatch, code):
    """A full disk or a file size limit: half of the new checkpoint is written, then the
    write fails. (It ended in an OSError traceback that did not say nothing was lost.)"""
    from mmengine.fileio import LocalBackend

    from m3i_mm.engine.hooks.checkpoint_hook import CheckpointSaveError
    from tests.engine.checkpoint_faults import _build_runner
    real_put = LocalBackend.put

    def put(self, data, path):
        if '.iter_4.pth.tmp-' in str(path):
            with open(path, 'wb') as f:
                f.write(data[:len(data) // 2])
            raise OSError(code, os.strerror(code))
        return real_put(self, data, path)

    monkeypatch.setattr(LocalBackend, 'put', put)
    runner = _build_runner(str(tmp_path), 'm3i_mm.CheckpointHook', resume=False)
    with pytest.raises(CheckpointSaveError) as raised:
        runner.train()
    assert str(raised.value) == (
        f'cannot save the checkpoint {tmp_path}/iter_4.pth: {os.strerror(code)} '
        f'[{errno.errorcode[code]}]; nothing of it was kept, and nothing else is lost: the '
        f'last complete checkpoint is {tmp_path}/iter_2.pth, which tools/train.py --resume '
        'takes. Make room (or raise the limit) and resume')
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(('iter_', '.iter', 'last'))) \
        == ['iter_2.pth', 'last_checkpoint']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
