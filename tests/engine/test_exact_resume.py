"""Resuming M3I pre-training is bit-exact on the CPU.

The tiny M3I config (captioned, labelled and unlabelled photos; masks, mixing, two views,
EMA target encoder, MiniLM text encoder) trains ``ITERS`` iterations uninterrupted, and again
resumed from its iteration-``SAVE_AT`` checkpoint; both must end with the same weights and
optimizer state, bit for bit: with 0 and 2 dataloader workers, and on 2 gloo ranks
through ``tools/dist_train.sh``. (Before, a resumed 60-iteration run ended with 299 of 401
tensors different: the view crops drew from numpy's global generator, the masks from
torch's, and neither was saved.)
"""
import gc
import os.path as osp

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
