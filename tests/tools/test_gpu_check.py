"""tools/analysis/gpu_check.py: the one-shot GPU check, exercised on the CPU (--dry-run).

The GPU machine has torch and triton but no OpenMMLab packages, so the op parts must run
with mmengine/mmcv/mmdet/mmseg/mmpretrain unimportable: ``test_op_parts_run_without_openmmlab``
hides them (a ``sitecustomize`` that refuses the imports, inherited by every child process).
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'tools', 'analysis'))
import gpu_check  # noqa: E402

SCRIPT = os.path.join(REPO, 'tools', 'analysis', 'gpu_check.py')
HIDDEN = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmpretrain')


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env.update(OMP_NUM_THREADS='1', **extra)
    return env


def test_plan_drops_the_slowest_optional_parts_first():
    names = [p.name for p in gpu_check.PARTS]
    everything = gpu_check.plan(names, 1e9, official=False)
    assert set(everything.values()) == {'run'}
    essential = sum(p.estimate_s for p in gpu_check.PARTS if p.essential)
    decision = gpu_check.plan(names, essential + 100, official=False)
    kept = [n for n in names if decision[n] == 'run']
    dropped = [n for n in names if decision[n] != 'run']
    assert {'env', 'tests', 'op'} <= set(kept)
    assert sum(gpu_check.PART_BY_NAME[n].estimate_s for n in kept) <= essential + 100
    slowest_kept = max(gpu_check.PART_BY_NAME[n].estimate_s for n in kept
                       if not gpu_check.PART_BY_NAME[n].essential)
    assert all(gpu_check.PART_BY_NAME[n].estimate_s >= slowest_kept for n in dropped)
    assert 'does not fit the budget' in decision[dropped[0]]
    # essential parts stay even when nothing fits
    tight = gpu_check.plan(names, 1, official=True)
    assert [n for n in names if tight[n] == 'run'] == ['env', 'tests', 'op']


def test_a_part_over_its_time_is_stopped_and_keeps_what_it_wrote(tmp_path):
    args = argparse.Namespace(out=str(tmp_path), dry_run=True, official=None, wheels=None)
    outcome = gpu_check._run_child('op', args, _env(TRITON_INTERPRET='1'), timeout=2)
    assert outcome['status'] == 'timed out' and 'budget' in outcome['reason']
    assert (tmp_path / 'part-op.log').exists()


@pytest.mark.slow
def test_op_parts_run_without_openmmlab(tmp_path):
    """env, tests (collection), op and configs in a process where mmengine & co cannot be
    imported; a model part is skipped with the reason and what to do; JSON and markdown."""
    blocker = tmp_path / 'blocker'
    blocker.mkdir()
    (blocker / 'sitecustomize.py').write_text(textwrap.dedent(f'''
        import importlib.abc, sys
        class _Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {HIDDEN!r}:
                    raise ImportError(f'{{name}} is hidden for this test')
        sys.meta_path.insert(0, _Hide())
    '''))
    env = _env(PYTHONPATH=str(blocker))
    probe = subprocess.run([sys.executable, '-c', 'import mmengine'], env=env,
                           capture_output=True, text=True)
    assert probe.returncode != 0, 'the blocker does not hide mmengine'
    out = tmp_path / 'out'
    done = subprocess.run(
        [sys.executable, SCRIPT, '--dry-run', '--out', str(out), '--parts', 'env', 'tests',
         'op', 'configs', 't-train', '--archive', str(tmp_path / 'all.tar.gz')], env=env,
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    state = json.loads((out / 'gpu_check.json').read_text())
    parts = state['parts']
    for name in ('env', 'tests', 'op', 'configs'):
        assert parts[name]['status'] == 'ok', (name, parts[name],
                                               (out / f'part-{name}.log').read_text()[-3000:])
    assert parts['t-train']['status'] == 'skipped'
    assert '--wheels' in parts['t-train']['reason']
    assert done.returncode == 0, done.stdout[-3000:]
    assert parts['env']['data']['info']['openmmlab'] is False
    rows = parts['op']['data']['rows']
    assert {r['backend'] for r in rows} >= {'pytorch', 'triton'}
    for r in rows:
        assert 'error' not in r, r
        assert r['rel_err_vs_pytorch_fp32'] < 1e-5 and r['fwd_ms'] > 0 and r['fwd_bwd_ms'] > 0
    assert 'collected' in parts['tests']['data']['rows'][0]['summary']
    assert {r['kernel'] for r in parts['configs']['data']['rows']} == {'forward', 'backward'}
    report = (out / 'gpu_check.md').read_text()
    assert '## DCNv3 op' in report and '| tiny | fp32 | triton |' in report
    import tarfile
    with tarfile.open(tmp_path / 'all.tar.gz') as tar:
        names = tar.getnames()
    assert 'out/gpu_check.json' in names and 'out/part-op.log' in names


@pytest.mark.slow
def test_model_parts_dry_run_with_openmmlab(tmp_path):
    """The model parts (benchmark_model.py / benchmark_m3i.py with --json) at tiny sizes."""
    pytest.importorskip('mmpretrain', reason='needs the OpenMMLab stack (make install)')
    out = tmp_path / 'out'
    done = subprocess.run(
        [sys.executable, SCRIPT, '--dry-run', '--out', str(out), '--parts', 't-train',
         't-infer', 'h-train', 'm3i'], env=_env(), capture_output=True, text=True,
        timeout=900, cwd=str(tmp_path))
    state = json.loads((out / 'gpu_check.json').read_text())
    for name in ('t-train', 't-infer', 'h-train', 'm3i'):
        part = state['parts'][name]
        assert part['status'] == 'ok', (name, (out / f'part-{name}.log').read_text()[-3000:])
    assert done.returncode == 0
    train = state['parts']['t-train']['data']['rows'][0]
    assert train['settings']['mode'] == 'train' and train['settings']['arch'] == 'tiny'
    assert all(m['ms'] > 0 for m in train['models'].values())
    assert state['parts']['h-train']['data']['rows'][0]['settings']['with_cp'] is True
    assert state['parts']['m3i']['data']['rows'][0]['ratio'] > 0
    assert '## Models' in (out / 'gpu_check.md').read_text()


def test_refuses_to_run_for_real_without_a_gpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU: the real run would start')
    done = subprocess.run([sys.executable, SCRIPT, '--out', str(tmp_path)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and '--dry-run' in done.stderr


def test_default_output_goes_under_work_dirs(tmp_path):
    """Without --out the results go to work_dirs/ of the current directory (as
    tools/train.py's), not into the directory itself."""
    done = subprocess.run([sys.executable, SCRIPT, '--dry-run', '--parts', 'env'], env=_env(),
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = tmp_path / 'work_dirs' / 'gpu_check_dry_run'
    assert json.loads((out / 'gpu_check.json').read_text())['parts']['env']['status'] == 'ok'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['work_dirs']
