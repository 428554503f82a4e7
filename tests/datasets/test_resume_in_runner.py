"""Exact mid-epoch resume of the multi-source data stream in a real mmengine Runner (CPU)."""
import gc
import os.path as osp

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import IterBasedTrainLoop, Runner
from torch import nn

from m3i_mm.datasets import MultiSourceDataset

BATCH = 4


class KeyRecorder(BaseModel):
    """A one-parameter model that records the sample keys of every training batch."""

    def __init__(self, log: list) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.log = log

    def forward(self, inputs=None, data_samples=None, mode='tensor'):
        return self.weight

    def train_step(self, data, optim_wrapper):
        self.log.append([sample.sample_key for sample in data['data_samples']])
        loss = (self.weight - 1).pow(2).sum()
        optim_wrapper.update_params(loss)
        return dict(loss=loss)


def train(corpus, work_dir, log, *, loop='iter', workers=0, resume_from=None,
          load_only=False, length=8, checkpoint_interval=3):
    """Train ``length`` iterations (or epochs of 4 batches), recording the keys seen."""
    pipeline = [dict(type='Resize', scale=(8, 8)),
                dict(type='PackInputs', meta_keys=('sample_key', 'source'))]
    sources = [
        dict(type='ImageTextDataset', name='manifest', data_root=corpus.root,
             ann_file='captions.jsonl'),  # with bad rows, replaced deterministically
        dict(type='ImageTextDataset', name='shards', data_root=corpus.shard_root,
             shards='data-{000000..000003}.tar'),
        dict(type='LabelledImageDataset', name='labelled',
             dataset=dict(type='CustomDataset', data_root=corpus.classes_root)),
    ]
    if loop == 'iter':
        sampler = dict(type='m3i_mm.MultiSourceSampler', batch_size=BATCH, ratios=[2, 1, 1],
                       infinite=True)
        train_cfg = dict(type='IterBasedTrainLoop', max_iters=length)
    else:
        sampler = dict(type='m3i_mm.MultiSourceSampler', batch_size=BATCH, ratios=[2, 1, 1],
                       steps_per_epoch=4)
        train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=length, val_interval=100)
    runner = Runner(
        model=KeyRecorder(log), work_dir=str(work_dir),
        experiment_name=f'{osp.basename(str(work_dir))}',
        train_dataloader=dict(
            batch_size=BATCH, num_workers=workers,
            dataset=dict(type='m3i_mm.MultiSourceDataset', sources=sources, pipeline=pipeline,
                         max_bad_fraction=0.5),
            sampler=sampler),
        train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=checkpoint_interval,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[dict(type='m3i_mm.SamplerStateHook')],
        default_scope='mmpretrain', randomness=dict(seed=0),
        load_from=resume_from, resume=resume_from is not None and not load_only)
    try:
        runner.train()
    finally:
        # Stop this run's dataloader workers now, not at some later garbage collection
        # (which can stall a later run for seconds while the workers are joined).
        if isinstance(runner._train_loop, IterBasedTrainLoop):
            runner._train_loop.dataloader_iterator = None
        del runner
        gc.collect()


@pytest.fixture(scope='module')
def straight(corpus, tmp_path_factory):
    """Uninterrupted runs: 8 iterations (checkpoints at 3 and 6), with 0 and 2 workers."""
    runs = {}
    for workers in (0, 2):
        work_dir = tmp_path_factory.mktemp(f'straight{workers}')
        log = []
        train(corpus, work_dir, log, workers=workers)
        runs[workers] = (str(work_dir), log)
    assert runs[0][1] == runs[2][1], 'workers must not change the data stream'
    return runs


def count_reads(monkeypatch):
    reads = []
    real = MultiSourceDataset.__getitem__
    monkeypatch.setattr(MultiSourceDataset, '__getitem__',
                        lambda self, index: reads.append(index) or real(self, index))
    return reads


def test_resume_sees_exactly_the_remaining_batches_without_reading_skipped_ones(
        corpus, straight, tmp_path, monkeypatch):
    work_dir, full = straight[0]
    assert len(full) == 8 and len({key for batch in full for key in batch}) > 16
    checkpoint = osp.join(work_dir, 'iter_3.pth')
    state = torch.load(checkpoint, weights_only=True)['sampler']
    assert state['step'] == 3 and state['batch_size'] == BATCH
    reads = count_reads(monkeypatch)
    resumed = []
    train(corpus, tmp_path, resumed, resume_from=checkpoint)
    assert resumed == full[3:]
    # The loop's 3 "skip" steps read nothing: only the 5 trained batches (plus the
    # re-tries of bad samples, which happen inside __getitem__) were fetched.
    assert len(reads) == 5 * BATCH


def test_resume_with_prefetching_workers(corpus, straight, tmp_path):
    work_dir, full = straight[2]
    resumed = []
    train(corpus, tmp_path, resumed, workers=2, resume_from=osp.join(work_dir, 'iter_6.pth'))
    assert resumed == full[6:]


def test_resume_mid_epoch_in_an_epoch_based_loop(corpus, tmp_path):
    full, resumed = [], []
    train(corpus, tmp_path / 'full', full, loop='epoch', length=3, checkpoint_interval=6)
    assert len(full) == 12
    # iter_6 lies in the middle of epoch 1 (iterations 4..7).
    train(corpus, tmp_path / 'resumed', resumed, loop='epoch', length=3,
          resume_from=str(tmp_path / 'full' / 'iter_6.pth'), checkpoint_interval=6)
    assert resumed == full[6:]


def test_checkpoint_without_sampler_state_and_load_from(corpus, straight, tmp_path):
    work_dir, full = straight[0]
    checkpoint = torch.load(osp.join(work_dir, 'iter_6.pth'), weights_only=True)
    del checkpoint['sampler']  # e.g. written before the hook was added
    torch.save(checkpoint, tmp_path / 'old.pth')
    resumed = []
    train(corpus, tmp_path / 'resumed', resumed, resume_from=str(tmp_path / 'old.pth'))
    assert resumed == full[6:]
    # load_from without resume starts a new run: the data stream starts at step 0.
    fresh = []
    train(corpus, tmp_path / 'fresh', fresh, resume_from=osp.join(work_dir, 'iter_6.pth'),
          load_only=True, length=2)
    assert fresh == full[:2]
