"""m3i_mm.BadSampleReportHook: per-source counts in the log and in checkpoints, resumed."""
import gc
import glob
import os.path as osp

import pytest
import torch
from mmengine.model import BaseModel
from mmengine.runner import IterBasedTrainLoop, Runner
from torch import nn

from m3i_mm.engine.hooks.bad_sample_report_hook import COUNTS_KEY
from m3i_mm.demo.photo_datasets import (photo_caption_pairs, write_caption_manifest,
                                         write_classification_folder)

BAD_ROWS = {1: 'missing', 4: 'random_bytes', 9: 'truncated', 13: 'empty_caption'}


class Sink(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, inputs=None, data_samples=None, mode='tensor'):
        return self.weight

    def train_step(self, data, optim_wrapper):
        loss = (self.weight - 1).pow(2).sum()
        optim_wrapper.update_params(loss)
        return dict(loss=loss)


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp('report')
    write_caption_manifest(str(root / 'captions'), photo_caption_pairs(16), 'm.jsonl',
                           bad=BAD_ROWS)
    write_classification_folder(str(root / 'classes'), per_class=2)
    return [dict(type='ImageTextDataset', name='captions', data_root=str(root / 'captions'),
                 ann_file='m.jsonl'),
            dict(type='UnlabelledImageDataset', name='plain', data_root=str(root / 'classes'))]


def train(sources, work_dir, resume_from=None, workers=2, persistent=False):
    runner = Runner(
        model=Sink(), work_dir=str(work_dir), experiment_name=osp.basename(str(work_dir)),
        train_dataloader=dict(
            batch_size=4, num_workers=workers, persistent_workers=persistent,
            dataset=dict(type='m3i_mm.MultiSourceDataset', sources=sources, max_bad_fraction=1.0,
                         pipeline=[dict(type='Resize', scale=(8, 8)),
                                   dict(type='PackInputs')]),
            sampler=dict(type='m3i_mm.MultiSourceSampler', batch_size=4, ratios=[3, 1],
                         infinite=True, seed=1)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=6),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='m3i_mm.CheckpointHook', interval=3,
                                           by_epoch=False),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[dict(type='m3i_mm.SamplerStateHook'),
                      dict(type='m3i_mm.BadSampleReportHook', interval=2)],
        default_scope='mmpretrain', load_from=resume_from, resume=resume_from is not None)
    try:
        runner.train()
    finally:  # stop the workers now, not at some later garbage collection
        if isinstance(runner._train_loop, IterBasedTrainLoop):
            runner._train_loop.dataloader_iterator = None
        persistent_iterator = getattr(runner.train_dataloader, '_iterator', None)
        if persistent_iterator is not None:
            persistent_iterator._shutdown_workers()
        del runner
        gc.collect()


def counts_in(checkpoint: str) -> dict:
    return torch.load(checkpoint, weights_only=True)['message_hub']['runtime_info'][COUNTS_KEY]


def log_lines(work_dir) -> list:
    log = glob.glob(osp.join(str(work_dir), '*', '*.log'))[0]
    return [line for line in open(log) if 'samples read / bad / replaced per source' in line]


@pytest.mark.parametrize('persistent', [False, True])
def test_counts_of_the_workers_are_logged_and_saved_and_resume_continues_them(
        sources, tmp_path, persistent):
    """Bad-sample counts were never reported."""
    train(sources, tmp_path / 'straight', persistent=persistent)
    lines = log_lines(tmp_path / 'straight')
    # every 2 iterations, at the checkpoints (3, 6) and at the end: iterations 2, 3, 4, 6
    assert len(lines) == 4, lines
    final = counts_in(str(tmp_path / 'straight' / 'iter_6.pth'))
    captions, plain = final['captions'], final['plain']
    assert plain['bad'] == 0 and plain['read'] > 0
    assert 0 < captions['bad'] == sum(captions[k] for k in (
        'missing file', 'undecodable image', 'truncated image', 'empty caption'))
    assert captions['replaced'] > 0
    assert captions['read'] + plain['read'] == 6 * 4 + captions['bad']  # 6 batches of 4
    assert (f"captions {captions['read']} / {captions['bad']} / {captions['replaced']} ("
            in lines[-1])
    middle = counts_in(str(tmp_path / 'straight' / 'iter_3.pth'))
    assert middle['captions']['read'] + middle['plain']['read'] == 3 * 4 + middle[
        'captions']['bad']
    # resumed from iteration 3, the counts carry on to those of the straight run
    train(sources, tmp_path / 'resumed', persistent=persistent,
          resume_from=str(tmp_path / 'straight' / 'iter_3.pth'))
    assert counts_in(str(tmp_path / 'resumed' / 'iter_6.pth')) == final
