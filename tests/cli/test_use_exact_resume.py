"""m3i_mm.cli.launch.use_exact_resume: what tools/train.py changes in a config so that a
resumed run draws what the uninterrupted one drew (the runs themselves are compared in
tests/engine/test_exact_resume.py)."""
import os.path as osp

from mmengine.config import Config

from m3i_mm.cli.launch import use_exact_resume
from tests.conftest import REPO, TEST_CONFIGS

M3I_TINY = osp.join(REPO, 'configs', 'm3i', 'm3i_internimage-tiny_1xb8-300it_photos.py')


def test_a_downstream_config_gets_keyed_data_and_iteration_seeds():
    cfg = Config.fromfile(osp.join(TEST_CONFIGS, 'tiny_cls.py'))
    sampler, dataset = cfg.train_dataloader.sampler.to_dict(), \
        cfg.train_dataloader.dataset.to_dict()
    use_exact_resume(cfg)
    assert cfg.train_dataloader.sampler == dict(type='m3i_mm.KeyedSampler', sampler=sampler)
    assert cfg.train_dataloader.dataset == dict(type='m3i_mm.KeyedDataset', dataset=dataset)
    assert cfg.custom_hooks == [dict(type='m3i_mm.IterationSeedHook')]
    use_exact_resume(cfg)  # applying it twice changes nothing more
    assert cfg.train_dataloader.sampler.sampler == sampler
    assert cfg.custom_hooks == [dict(type='m3i_mm.IterationSeedHook')]


def test_diff_rank_seed_gives_the_sampler_the_shared_seed():
    cfg = Config.fromfile(osp.join(TEST_CONFIGS, 'tiny_cls.py'))
    cfg.randomness = dict(seed=7, diff_rank_seed=True)
    use_exact_resume(cfg)
    assert cfg.train_dataloader.sampler.seed == 7


def test_m3i_configs_keep_their_keyed_sampler_and_hooks():
    cfg = Config.fromfile(M3I_TINY)
    before = cfg.train_dataloader.to_dict(), list(cfg.custom_hooks)
    use_exact_resume(cfg)
    assert (cfg.train_dataloader.to_dict(), list(cfg.custom_hooks)) == before
