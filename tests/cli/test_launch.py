"""m3i_mm.cli.launch: what the tools do before the runner starts."""
import os.path as osp

import pytest
import torch

from m3i_mm.cli.launch import (UsageError, check_launcher_env, load_config, resolve_resume,
                                 use_atomic_checkpoints)
from tests.conftest import REPO, TEST_CONFIGS

#: One config of each family: they inherit their checkpoint hook from mmpretrain's,
#: mmdet's and mmseg's default_runtime, or from the M3I runtime.
FAMILY_CONFIGS = [
    'configs/m3i/m3i_internimage-tiny_1xb8-300it_photos.py',
    'configs/internimage/internimage-t_m3i-pre_16xb32-20e_in1k.py',
    'configs/mask_rcnn/mask-rcnn_internimage-t_fpn_1x_coco.py',
    'configs/upernet/upernet_internimage-t_8xb2-160k_ade20k-512x512.py',
    'configs/demo/mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py',
    osp.relpath(osp.join(TEST_CONFIGS, 'tiny_cls.py'), REPO),
]


@pytest.mark.parametrize('config', FAMILY_CONFIGS)
def test_every_config_gets_the_crash_safe_checkpoint_hook(config):
    cfg = load_config(osp.join(REPO, config))
    before = dict(cfg.default_hooks.checkpoint)
    use_atomic_checkpoints(cfg)
    after = dict(cfg.default_hooks.checkpoint)
    assert after.pop('type') == 'm3i_mm.CheckpointHook'
    before.pop('type')
    assert after == before  # interval, max_keep_ckpts, ... are kept


def test_a_checkpoint_hook_of_another_class_is_kept_with_a_warning(capsys):
    from mmengine.hooks import CheckpointHook
    from mmengine.registry import HOOKS

    @HOOKS.register_module(force=True)
    class MyCheckpointHook(CheckpointHook):
        pass

    cfg = load_config(osp.join(TEST_CONFIGS, 'tiny_cls.py'))
    cfg.default_hooks.checkpoint.type = 'MyCheckpointHook'
    use_atomic_checkpoints(cfg)
    assert cfg.default_hooks.checkpoint.type == 'MyCheckpointHook'
    assert 'MyCheckpointHook is not m3i_mm.CheckpointHook' in capsys.readouterr().err


@pytest.mark.parametrize('launcher, missing', [
    ('pytorch', 'RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT'),
    ('slurm', 'SLURM_PROCID, SLURM_NTASKS, SLURM_NODELIST'),
    ('mpi', 'OMPI_COMM_WORLD_RANK')])
def test_launcher_without_its_environment_is_named(launcher, missing, monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'SLURM_PROCID',
                 'SLURM_NTASKS', 'SLURM_NODELIST', 'OMPI_COMM_WORLD_RANK',
                 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match=f'--launcher {launcher}: the environment lacks '
                                         f'{missing}'):
        check_launcher_env(launcher)
    check_launcher_env('none')


def test_resume_auto_checks_what_last_checkpoint_names(tmp_path):
    assert resolve_resume(str(tmp_path), 'auto') is None  # nothing to resume: start anew
    good = tmp_path / 'iter_2.pth'
    torch.save({'meta': {}}, good)
    record = tmp_path / 'last_checkpoint'
    record.write_text(str(tmp_path / 'iter_4.pth'))
    with pytest.raises(UsageError, match=r'last_checkpoint names .*iter_4.pth, which does not '
                                         r'exist; pass a checkpoint with --resume PATH '
                                         r'\(complete checkpoints there, newest first: .*'
                                         r'iter_2.pth\)'):
        resolve_resume(str(tmp_path), 'auto')
    (tmp_path / 'iter_4.pth').write_bytes(b'')
    with pytest.raises(UsageError, match='iter_4.pth, which is empty'):
        resolve_resume(str(tmp_path), 'auto')
    record.write_text('')
    with pytest.raises(UsageError, match='last_checkpoint is empty'):
        resolve_resume(str(tmp_path), 'auto')
    record.write_text(str(good))
    assert resolve_resume(str(tmp_path), 'auto') == str(good)
    assert resolve_resume(str(tmp_path), str(good)) == str(good)


def _run_cli_error(main, capsys) -> str:
    from m3i_mm.cli.launch import run_cli
    with pytest.raises(SystemExit) as info:
        run_cli(main)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_a_bad_dcnv3_backend_variable_is_one_error_line(monkeypatch, capsys):
    """M3I_MM_DCNV3_BACKEND=bogus while a model runs: `error: ...`, exit 2, no traceback."""
    from m3i_mm.models.backbones import InternImage
    monkeypatch.delenv('M3I_MM_TRACEBACK', raising=False)
    monkeypatch.setenv('M3I_MM_DCNV3_BACKEND', 'bogus')
    model = InternImage(arch=dict(channels=16, depths=[1, 1, 1, 1], groups=[4, 8, 16, 32]))
    err = _run_cli_error(lambda: model(torch.rand(1, 3, 32, 32)), capsys)
    assert err.startswith("error: M3I_MM_DCNV3_BACKEND='bogus' is not a DCNv3 backend")
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 2


def test_an_unknown_type_error_names_the_scoped_m3i_mm_type(monkeypatch, capsys):
    import mmpretrain.registry
    from mmengine.registry import init_default_scope
    monkeypatch.delenv('M3I_MM_TRACEBACK', raising=False)
    init_default_scope('mmpretrain')
    err = _run_cli_error(lambda: mmpretrain.registry.TRANSFORMS.build(dict(type='M3IViews')),
                         capsys)
    assert err.startswith('error: M3IViews is not in the mmpretrain::transform registry')
    assert "(m3i_mm registers M3IViews in its scope: write type='m3i_mm.M3IViews')" in err


def test_a_relative_config_path_falls_back_to_the_shipped_configs(tmp_path, monkeypatch):
    """`tools/train.py configs/...` from any directory (e.g. where m3i_mm is installed)."""
    monkeypatch.chdir(tmp_path)
    name = 'configs/demo/mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py'
    assert load_config(name).filename == osp.join(REPO, name)
    (tmp_path / 'configs' / 'demo').mkdir(parents=True)
    (tmp_path / name).write_text("default_scope = 'mmdet'\nmine = True\n")
    assert load_config(name).mine is True  # a file of the current directory comes first
    with pytest.raises(UsageError, match="config file not found: 'configs/nope.py'"):
        load_config('configs/nope.py')
