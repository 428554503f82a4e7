"""Resuming M3I pre-training is bit-exact on the CPU.

The tiny M3I config (captioned, labelled and unlabelled photos; masks, mixing, two views,
EMA target encoder, MiniLM text encoder) trains ``ITERS`` iterations uninterrupted, and again
resumed from its iteration-``SAVE_AT`` checkpoint; both must end with the same weights and
optimizer state, bit for bit: with 0 and 2 dataloader workers, and on 2 gloo ranks
through ``tools/dist_train.sh``. (Before, a resumed 60-iteration run ended with 299 of 401
tensors different: the view crops drew from numpy's global generator, the masks from
torch's, and neither was saved.)

The downstream demo configs (mmpretrain classification, mmdet Mask R-CNN, mmseg UperNet)
run through ``tools/train.py``, are killed with SIGKILL after their first checkpoint and
resumed with ``--resume``: they too must end with the uninterrupted run's weights and
optimizer state, bit for bit.
"""
import gc
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO, free_port, run_tool
from tests.models.selfsup.m3i_fixtures import minilm_path

TINY_CONFIG = osp.join(REPO, 'configs', 'm3i', 'm3i_internimage-tiny_1xb8-300it_photos.py')
ITERS, SAVE_AT = 6, 3


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    from m3i_mm.demo.photo_datasets import write_m3i_demo_sources
    root = tmp_path_factory.mktemp('exact_resume')
    write_m3i_demo_sources(str(root / 'data' / 'demo' / 'm3i'))
    return root


def cfg_options(workers: int) -> dict:
    return {'model.text_encoder.model_name_or_path': minilm_path(),
            'model.text_encoder.local_files_only': True,
            'train_cfg.max_iters': ITERS,
            'default_hooks.checkpoint.interval': SAVE_AT,
            'default_hooks.checkpoint.max_keep_ckpts': 2,
            'default_hooks.logger.interval': 1,
            'train_dataloader.num_workers': workers}


def train(workspace, work_dir: str, workers: int, resume_from=None) -> None:
    """One run of the tiny config in this process, as tools/train.py sets it up."""
    from mmengine.runner import Runner

    from m3i_mm.cli.launch import use_atomic_checkpoints
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.merge_from_dict(cfg_options(workers))
    cfg.merge_from_dict({'train_dataloader.dataset.sources.0.data_root':
                         str(workspace / 'data/demo/m3i/captions'),
                         'train_dataloader.dataset.sources.1.dataset.data_root':
                         str(workspace / 'data/demo/m3i/labelled'),
                         'train_dataloader.dataset.sources.2.data_root':
                         str(workspace / 'data/demo/m3i/unlabelled')})
    cfg.work_dir = work_dir
    cfg.resume, cfg.load_from = resume_from is not None, resume_from
    use_atomic_checkpoints(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    del runner
    gc.collect()  # stops the dataloader workers now


def assert_same_training_state(straight: str, resumed: str) -> None:
    a = torch.load(straight, map_location='cpu', weights_only=False)
    b = torch.load(resumed, map_location='cpu', weights_only=False)
    assert a['meta']['iter'] == b['meta']['iter'] == ITERS
    different = [k for k, v in a['state_dict'].items() if not torch.equal(v, b['state_dict'][k])]
    assert not different, f'{len(different)} of {len(a["state_dict"])} tensors differ, e.g. ' \
                          f'{different[:5]}'
    for param, state in a['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(value, b['optimizer']['state'][param][name]), (param, name)


@pytest.mark.slow  # 4 short trainings of the tiny M3I model
@pytest.mark.parametrize('workers', [0, 2])
def test_resumed_run_ends_with_the_same_weights_bit_for_bit(workspace, tmp_path, workers):
    straight = str(tmp_path / 'straight')
    train(workspace, straight, workers)
    train(workspace, str(tmp_path / 'resumed'), workers,
          resume_from=osp.join(straight, f'iter_{SAVE_AT}.pth'))
    assert_same_training_state(osp.join(straight, f'iter_{ITERS}.pth'),
                               str(tmp_path / 'resumed' / f'iter_{ITERS}.pth'))


@pytest.mark.slow  # 2 x 2 processes of tools/dist_train.sh
def test_resumed_run_on_two_gloo_ranks_ends_with_the_same_weights(workspace):
    options = [f'{k}={v}' for k, v in cfg_options(workers=0).items()]
    runs = {}
    for name, extra in (('straight', []),
                        ('resumed', ['--resume', f'straight/iter_{SAVE_AT}.pth'])):
        res = run_tool(['tools/dist_train.sh', TINY_CONFIG, '2', '--work-dir', name, *extra,
                        '--cfg-options', *options], cwd=str(workspace),
                       env=dict(PORT=str(free_port())))
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
        runs[name] = res.stdout + res.stderr
    assert f'resumed epoch: 0, iter: {SAVE_AT}' in runs['resumed']
    assert_same_training_state(str(workspace / 'straight' / f'iter_{ITERS}.pth'),
                               str(workspace / 'resumed' / f'iter_{ITERS}.pth'))


# ------------------------------------------- downstream configs (mmpretrain, mmdet, mmseg)
DOWNSTREAM = {  # demo config, checkpoint interval, final checkpoint, shorter schedule
    'mmpretrain': ('internimage-tiny_m3i-pre_1xb4-5e_demo-cls.py', 1, 'epoch_3.pth',
                   'train_cfg.max_epochs=3'),
    'mmdet': ('mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py', 1, 'epoch_2.pth',
              'train_cfg.val_interval=100'),
    'mmseg': ('upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py', 5, 'iter_10.pth',
              'train_cfg.max_iters=10'),
}


@pytest.fixture(scope='module')
def demo_workspace(tmp_path_factory):
    from m3i_mm.demo.photo_datasets import write_demo_datasets
    root = tmp_path_factory.mktemp('downstream_resume')
    write_demo_datasets(str(root / 'data' / 'demo'))
    return root


def kill_after_first_checkpoint(args, cwd, work_dir: str) -> None:
    """Start tools/train.py as users do and SIGKILL its process group as soon as its first
    checkpoint is recorded (a crash at an arbitrary point of the following iterations)."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, osp.join(REPO, 'tools', 'train.py'), *args],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not osp.exists(osp.join(work_dir, 'last_checkpoint')):
            assert proc.poll() is None, f'the run ended (exit {proc.returncode}) before saving'
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL  # killed, not finished
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow  # per case: an uninterrupted demo run, a killed one and its resume
@pytest.mark.parametrize('codebase, workers', [('mmdet', 0), ('mmpretrain', 0),
                                               ('mmpretrain', 2), ('mmseg', 0)])
def test_killed_and_resumed_downstream_run_ends_bit_identical(demo_workspace, codebase,
                                                              workers):
    """Downstream configs run on mmengine's samplers and mmcv's transforms. Before
    tools/train.py keyed their draws (m3i_mm.KeyedSampler / KeyedDataset and
    IterationSeedHook), a resumed classification demo ended with 132 of its 133 tensors
    different."""
    config, interval, final, schedule = DOWNSTREAM[codebase]
    options = ['--cfg-options', 'model.backbone.init_cfg=None', schedule,
               f'default_hooks.checkpoint.interval={interval}',
               'default_hooks.checkpoint.max_keep_ckpts=10',
               f'train_dataloader.num_workers={workers}',
               f'train_dataloader.persistent_workers={workers > 0}']
    config = osp.join(REPO, 'configs', 'demo', config)
    ws = str(demo_workspace)
    straight = osp.join(ws, f'{codebase}_{workers}_straight')
    killed = osp.join(ws, f'{codebase}_{workers}_killed')
    res = run_tool(['tools/train.py', config, '--work-dir', straight, *options], cwd=ws)
    assert res.returncode == 0, res.stderr[-5000:]
    kill_after_first_checkpoint([config, '--work-dir', killed, *options], ws, killed)
    assert not osp.exists(osp.join(killed, final))
    res = run_tool(['tools/train.py', config, '--work-dir', killed, '--resume', *options],
                   cwd=ws)
    assert res.returncode == 0, res.stderr[-5000:]
    assert 'resumed epoch' in res.stdout + res.stderr
    a = torch.load(osp.join(straight, final), map_location='cpu', weights_only=False)
    b = torch.load(osp.join(killed, final), map_location='cpu', weights_only=False)
    different = [k for k, v in a['state_dict'].items() if not torch.equal(v, b['state_dict'][k])]
    assert not different, f'{len(different)} of {len(a["state_dict"])} tensors differ, e.g. ' \
                          f'{different[:5]}'
    for param, state in a['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value),
                               torch.as_tensor(b['optimizer']['state'][param][name])), (param,
                                                                                         name)
