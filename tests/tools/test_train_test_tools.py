"""tools/train.py, tools/test.py and tools/dist_train.sh on a tiny mmpretrain job (CPU)."""
import glob
import importlib.util
import json
import os
import os.path as osp
import pickle
import re
import shutil

import pytest
import torch

from tests.conftest import REPO, TEST_CONFIGS, free_port, run_tool

TINY_CLS = osp.join(TEST_CONFIGS, 'tiny_cls.py')


def read_losses(work_dir: str) -> dict:
    """iteration -> loss, from the LocalVisBackend scalars of every run in ``work_dir``."""
    losses = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        for line in open(path):
            rec = json.loads(line)
            if 'loss' in rec:
                losses[rec['iter']] = rec['loss']
    return losses


def check_ok(res):
    assert res.returncode == 0, f'exit {res.returncode}\nSTDOUT\n{res.stdout[-3000:]}\n' \
                                f'STDERR\n{res.stderr[-5000:]}'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One uninterrupted 12-iteration run (checkpoints at 6 and 12), shared by the tests."""
    from m3i_mm.demo.photo_datasets import write_classification_folder
    ws = tmp_path_factory.mktemp('tiny_cls')
    write_classification_folder(str(ws / 'data' / 'tiny_cls'))
    res = run_tool(['tools/train.py', TINY_CLS, '--work-dir', 'straight'], cwd=str(ws))
    check_ok(res)
    return str(ws), res


def test_train_writes_checkpoints_and_logs(trained):
    ws, res = trained
    assert '[m3i_mm] rank 0/1 finished training at iter 12' in res.stdout
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(ws, 'straight', '*.pth'))) == [
        'iter_12.pth', 'iter_6.pth']
    assert sorted(read_losses(osp.join(ws, 'straight'))) == list(range(1, 13))


def test_test_tool_reports_metrics_and_dumps_predictions(trained):
    ws, _ = trained
    res = run_tool(['tools/test.py', TINY_CLS, 'straight/iter_12.pth', '--work-dir', 'w_test',
                    '--out', 'preds.pkl'], cwd=ws)
    check_ok(res)
    metrics = json.loads(res.stdout.split('[m3i_mm] test metrics: ')[1].splitlines()[0])
    assert 0.0 <= metrics['accuracy/top1'] <= 100.0
    with open(osp.join(ws, 'preds.pkl'), 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 16  # every test image has a dumped prediction


def test_resume_continues_exactly(trained):
    """Resume from the iteration-6 checkpoint: iterations 7..12 repeat the straight run."""
    ws, _ = trained
    straight = read_losses(osp.join(ws, 'straight'))
    # auto: a work dir whose last checkpoint is iteration 6, as a run stopped there leaves it
    os.makedirs(osp.join(ws, 'stopped'))
    shutil.copy(osp.join(ws, 'straight', 'iter_6.pth'), osp.join(ws, 'stopped'))
    with open(osp.join(ws, 'stopped', 'last_checkpoint'), 'w') as f:
        f.write(osp.join(ws, 'stopped', 'iter_6.pth'))
    res = run_tool(['tools/train.py', TINY_CLS, '--work-dir', 'stopped', '--resume'], cwd=ws)
    check_ok(res)
    assert 'resumed epoch: 0, iter: 6' in res.stdout + res.stderr
    assert '[m3i_mm] rank 0/1 finished training at iter 12' in res.stdout
    resumed = read_losses(osp.join(ws, 'stopped'))
    assert sorted(resumed) == list(range(7, 13))
    for it in range(7, 13):
        assert resumed[it] == straight[it], f'iteration {it}: {resumed[it]} != {straight[it]}'
    # an explicit path resumes the same way
    res = run_tool(['tools/train.py', TINY_CLS, '--work-dir', 'again', '--resume',
                    osp.join(ws, 'straight', 'iter_6.pth')], cwd=ws)
    check_ok(res)
    assert read_losses(osp.join(ws, 'again')) == {i: straight[i] for i in range(7, 13)}


@pytest.mark.slow
def test_dist_train_two_cpu_processes(tiny_cls_workspace):
    ws = str(tiny_cls_workspace)
    res = run_tool(['tools/dist_train.sh', TINY_CLS, '2', '--work-dir', 'w', '--cfg-options',
                    'default_hooks.checkpoint.interval=12'], cwd=ws,
                   env=dict(PORT=str(free_port())))
    check_ok(res)
    finished = re.findall(r'\[m3i_mm\] rank (\d)/2 finished training at iter 12, '
                          r'parameter checksum ([-+.0-9e]+)', res.stdout)
    assert sorted(r for r, _ in finished) == ['0', '1'], res.stdout[-3000:]
    # gradients were all-reduced: both replicas end with the same weights although each
    # rank saw different samples.
    assert finished[0][1] == finished[1][1]
    assert [osp.basename(p) for p in glob.glob(osp.join(ws, 'w', '*.pth'))] == ['iter_12.pth']
    assert 'Distributed launcher: pytorch' in res.stdout + res.stderr


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f'tool_{name}', osp.join(REPO, 'tools',
                                                                           f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(name: str, argv, capsys):
    """Run a tool's ``main`` under ``run_cli`` here (imports are already warm)."""
    tool = load_tool(name)
    with pytest.raises(SystemExit) as exit_info:
        tool.run_cli(lambda: tool.main(argv))
    return exit_info.value.code, capsys.readouterr().err


def test_bad_config_path_is_named(tmp_path, capsys):
    code, err = run_in_process('train', ['configs/no_such_config.py'], capsys)
    assert code == 2 and "config file not found: 'configs/no_such_config.py'" in err
    code, err = run_in_process('test', ['missing.py', 'x.pth'], capsys)
    assert code == 2 and "config file not found: 'missing.py'" in err


def test_broken_config_is_named(tmp_path, capsys):
    bad = tmp_path / 'broken.py'
    bad.write_text('model = dict(type=\n')
    code, err = run_in_process('train', [str(bad)], capsys)
    assert code == 2 and f'cannot load config {str(bad)!r}' in err


def test_missing_resume_checkpoint_is_named(capsys):
    code, err = run_in_process('train', [TINY_CLS, '--resume', 'no/such.pth'], capsys)
    assert code == 2 and "--resume checkpoint not found: 'no/such.pth'" in err


@pytest.mark.parametrize('bad_type', ['NoSuchNet', 'm3i_mm.NoSuchNet'])
def test_unknown_type_is_named(tiny_cls_workspace, bad_type, capsys, monkeypatch):
    monkeypatch.chdir(tiny_cls_workspace)
    code, err = run_in_process('train', [
        TINY_CLS, '--work-dir', 'w', '--cfg-options', f'model.backbone.type={bad_type}'
    ], capsys)
    assert code == 2 and f'{bad_type} is not in the mmpretrain::model registry' in err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the no-GPU error path')
def test_amp_without_gpu_is_a_clear_error(capsys):
    tool = load_tool('train')
    with pytest.raises(SystemExit, match='--amp needs a CUDA device'):
        tool.main([TINY_CLS, '--amp'])


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the no-GPU error path')
def test_config_with_amp_wrapper_without_gpu_names_the_fp32_override(tmp_path):
    # the official classification recipes train with AmpOptimWrapper; tiny_cls with the same
    # wrapper stands in for them (no dataset is built before the check)
    tool = load_tool('train')
    with pytest.raises(SystemExit, match=r'mixed precision \(AmpOptimWrapper\).*'
                       r'--cfg-options optim_wrapper\.type=OptimWrapper'):
        tool.main([TINY_CLS, '--work-dir', str(tmp_path),
                   '--cfg-options', 'optim_wrapper.type=AmpOptimWrapper'])


# ------------------------------------------------------------------ issue 13: clear errors
def error_line(err: str) -> str:
    """The tool's one-line error: stderr ends with it and the hint to see a traceback.
    (Earlier in-process runs may leave logging noise before it, from loggers bound to
    streams pytest has closed.)"""
    last = err.rstrip().splitlines()[-2:]
    assert len(last) == 2 and last[0].startswith('error: ') and 'M3I_MM_TRACEBACK' in last[1], err
    return last[0]


def test_resume_of_an_empty_or_cut_checkpoint_is_one_line(tmp_path, capsys):
    empty = tmp_path / 'iter_4.pth'
    empty.write_bytes(b'')
    code, err = run_in_process('train', [TINY_CLS, '--resume', str(empty)], capsys)
    assert code == 2 and f"--resume checkpoint '{empty}' is empty (0 bytes)" in error_line(err)


def test_launcher_pytorch_outside_torchrun_is_one_line(monkeypatch, capsys):
    """It ended in KeyError: 'RANK'."""
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    code, err = run_in_process('train', [TINY_CLS, '--launcher', 'pytorch'], capsys)
    line = error_line(err)
    assert code == 2 and '--launcher pytorch: the environment lacks RANK' in line
    assert 'tools/dist_train.sh' in line


def test_zoo_name_typo_in_init_cfg_is_one_line(tiny_cls_workspace, monkeypatch, capsys):
    """An m3i:// typo in init_cfg ended in a full traceback."""
    monkeypatch.chdir(tiny_cls_workspace)
    code, err = run_in_process('train', [
        TINY_CLS, '--work-dir', 'w', '--cfg-options', 'model.backbone.init_cfg.type=Pretrained',
        'model.backbone.init_cfg.checkpoint=m3i://internimage_t_1k_22'], capsys)
    line = error_line(err)
    assert code == 2 and "no model-zoo entry named 'internimage_t_1k_22'" in line
    assert 'Did you mean: internimage_t_1k_224' in line


def test_test_tool_refuses_a_checkpoint_that_does_not_cover_the_model(trained, tmp_path,
                                                                     capsys, monkeypatch):
    """mmengine loads with strict=False: a checkpoint of another model was scored, exit 0."""
    ws, _ = trained
    monkeypatch.chdir(ws)
    ckpt = torch.load(osp.join(ws, 'straight', 'iter_12.pth'), weights_only=False)
    ckpt['state_dict'] = {k: v for k, v in ckpt['state_dict'].items()
                          if not k.startswith('head.')}
    ckpt['state_dict']['rpn_head.rpn_cls.weight'] = torch.zeros(3, 8, 1, 1)
    partial = str(tmp_path / 'other_model.pth')
    torch.save(ckpt, partial)
    work_dir = str(tmp_path / 'w')
    code, err = run_in_process('test', [TINY_CLS, partial, '--work-dir', work_dir], capsys)
    line = error_line(err)
    assert code == 2, err
    assert (f'the checkpoint {partial} does not cover the model ImageClassifier: 2 of the '
            "model's") in line
    assert 'missing from it (e.g. head.fc.bias, head.fc.weight)' in line
    assert 'are not in the model (e.g. rpn_head.rpn_cls.weight)' in line
    assert '--allow-partial-checkpoint' in line
    load_tool('test').main([TINY_CLS, partial, '--work-dir', work_dir,
                            '--allow-partial-checkpoint'])
    assert '[m3i_mm] test metrics:' in capsys.readouterr().out
