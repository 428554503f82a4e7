"""Small promises of the scripts in tools/analysis/ (their measurements are the scripts'
own business; tests/tools/test_gpu_check.py runs them at tiny sizes)."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import REPO

ANALYSIS = osp.join(REPO, 'tools', 'analysis')


@pytest.mark.parametrize('helper, user', [('dcnv3_import.py', 'benchmark_dcnv3.py'),
                                          ('official_internimage.py', 'benchmark_model.py'),
                                          ('timing.py', 'benchmark_m3i.py')])
def test_helper_modules_say_what_they_are(helper, user):
    """They have no command of their own; --help said nothing before."""
    done = subprocess.run([sys.executable, osp.join(ANALYSIS, helper), '--help'],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first_doc_line = open(osp.join(ANALYSIS, helper)).read().split('"""')[1].splitlines()[0]
    assert first_doc_line in done.stdout
    assert 'A helper module of ' in done.stdout and user in done.stdout
    assert 'it has no command of its own' in done.stdout


def test_benchmark_model_prints_its_result_not_the_weight_init(tmp_path):
    """mmengine logs each parameter's initialisation (thousands of lines for
    InternImage-T) when there is no log file; the benchmark keeps only its result."""
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    done = subprocess.run(
        [sys.executable, osp.join(ANALYSIS, 'benchmark_model.py'), '--device', 'cpu', '--arch',
         'tiny', '--size', '32', '--warmup', '1', '--iters', '1'], env=env, cwd=str(tmp_path),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert lines[0].startswith('# InternImage-TINY infer, batch 1, 32 px, fp32: CPU')
    assert lines[1].startswith('m3i_mm (auto)') and 'ms/iter' in lines[1]
    assert len(lines) == 2, lines[:20]
