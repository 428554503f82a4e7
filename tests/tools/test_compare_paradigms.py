"""tools/analysis/compare_paradigms.py: M3I and its special cases pre-trained on the same
data and compared on frozen features; its --quick mode end to end, on the default digits and
on folders of a user's own, and the pieces that decide what is compared."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config

from tests.conftest import REPO, run_tool

TOOL = 'tools/analysis/compare_paradigms.py'
PARADIGMS = ('supervised', 'clip', 'siameseim', 'mae', 'm3i')


def load_tool():
    spec = importlib.util.spec_from_file_location('compare_paradigms', osp.join(REPO, TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_terms(paradigm: str) -> set:
    """The loss terms each paradigm's config switches on (written out from the configs)."""
    return dict(supervised={'label'}, clip={'caption'}, siameseim={'dense_cross'},
                mae={'dense_same'},
                m3i={'dense_same', 'dense_cross', 'label', 'caption'})[paradigm]


def test_each_paradigm_takes_its_algorithm_from_its_config_and_the_rest_from_the_base():
    tool = load_tool()
    base = Config.fromfile(osp.join(REPO, tool.DEFAULT_CONFIG)).to_dict()['model']
    for paradigm, (config, _, _) in tool.PARADIGMS.items():
        own = Config.fromfile(osp.join(REPO, config)).to_dict()['model']
        model = tool.paradigm_model(base, own)
        for key in ('mix', 'mask_ratio', 'loss_weights', 'same_view_target'):
            assert model.get(key) == own.get(key, base.get(key)), (paradigm, key)
        assert model['dense_head']['unigrad_lambda'] == own['dense_head']['unigrad_lambda']
        for part in ('label_head', 'caption_head', 'text_encoder'):
            assert (model[part] is None) == (own.get(part) is None), (paradigm, part)
        # architecture: the tiny config's, whatever the paradigm's config says
        for key in ('backbone', 'neck', 'decoder'):
            assert model[key] == base[key], (paradigm, key)


def test_bad_arguments_and_evaluation_sets_are_named(tmp_path):
    tool = load_tool()
    with pytest.raises(SystemExit):
        tool.parse_args(['--unlabelled', str(tmp_path)])  # no evaluation sets
    with pytest.raises(SystemExit):
        tool.parse_args(['--labelled', str(tmp_path / 'missing'), '--eval-train',
                         str(tmp_path), '--eval-test', str(tmp_path)])
    with pytest.raises(SystemExit):
        tool.parse_args(['--iters', '10', '--eval-iters', '0', '20'])
    (tmp_path / 'cls' / 'a').mkdir(parents=True)
    with pytest.raises(ValueError, match="class 'a' .* has 0 images; every class needs at "
                                         'least 5'):
        tool.load_class_folders(str(tmp_path / 'cls'), 32)
    with pytest.raises(ValueError, match='no class sub-folders'):
        tool.load_class_folders(str(tmp_path / 'cls' / 'a'), 32)
    cls_config = osp.join(REPO, 'configs/demo/internimage-tiny_m3i-pre_1xb4-5e_demo-cls.py')
    with pytest.raises(ValueError, match='not an M3I pre-training config'):
        tool.views_of(Config.fromfile(cls_config))


def check_outputs(out: str, paradigms, seeds, eval_sets, iters: int) -> dict:
    with open(osp.join(out, 'results.json')) as f:
        results = json.load(f)
    runs = results['runs']
    assert sorted((r['paradigm'], r['seed']) for r in runs) == sorted(
        (p, s) for p in paradigms for s in seeds)
    for run in runs:
        terms = {t.split(' ')[0] for t in run['active_terms'] if not t.startswith('input')}
        assert terms == expected_terms(run['paradigm']), run['active_terms']
        for it in ('0', str(iters)):
            for set_name in eval_sets:
                scores = run['metrics'][it][set_name]
                assert set(scores) == {'linear', 'knn', 'five_shot'}
                assert all(0.0 <= v <= 1.0 for v in scores.values())
        # every paradigm of a seed started from one backbone; training changed it
        same_seed = [r for r in runs if r['seed'] == run['seed']]
        assert {r['backbone_hash']['0'] for r in same_seed} == {run['backbone_hash']['0']}
        assert run['backbone_hash'][str(iters)] != run['backbone_hash']['0']
    assert len({r['backbone_hash']['0'] for r in runs}) == len(seeds)
    # the summary: mean and sample std over seeds, recomputed here
    summary = results['summary']
    table = open(osp.join(out, 'results.md')).read()
    for paradigm in paradigms:
        for set_name in eval_sets:
            values = [r['metrics'][str(iters)][set_name]['knn'] for r in runs
                      if r['paradigm'] == paradigm]
            stats = summary[paradigm][str(iters)][set_name]['knn']
            assert stats['mean'] == pytest.approx(np.mean(values))
            assert stats['std'] == pytest.approx(np.std(values, ddof=1))
            assert f'{100 * stats["mean"]:.1f} ± {100 * stats["std"]:.1f}' in table
    tool = load_tool()
    names = [tool.PARADIGMS[p][2] for p in paradigms] + ['random init']
    assert all(f'| {name} |' in table for name in names)
    with open(osp.join(out, 'probe_accuracy.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    import matplotlib.image
    height, width = matplotlib.image.imread(osp.join(out, 'probe_accuracy.png')).shape[:2]
    assert height > 300 and width > 1000  # rows of panels: evaluation sets x 3 metrics
    return results


@pytest.mark.slow
def test_quick_comparison_on_digits_writes_json_table_and_plot(tmp_path):
    out = str(tmp_path / 'out')
    res = run_tool([TOOL, '--quick', '--out', out], cwd=str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'pre-training' in res.stderr and 'evaluations' in res.stderr  # progress bars
    assert '| M3I | all sources, all targets |' in res.stdout
    results = check_outputs(out, PARADIGMS, (0, 1), ('digits', 'photos'), iters=4)
    assert results['settings']['quick'] and results['settings']['batch_size'] == 8
    # a rerun with the same settings reuses every finished run
    res = run_tool([TOOL, '--quick', '--out', out], cwd=str(tmp_path), timeout=600)
    assert res.returncode == 0 and '0 runs to do (10 reused)' in res.stdout, res.stdout[-2000:]


@pytest.mark.slow
def test_quick_comparison_on_your_own_folders(tmp_path):
    from m3i_mm.demo.photo_datasets import (COLOR_PHOTOS, write_classification_folder,
                                             write_m3i_demo_sources)
    sources = write_m3i_demo_sources(str(tmp_path / 'mine'), size=48)
    write_classification_folder(str(tmp_path / 'eval' / 'train'), COLOR_PHOTOS[:3],
                                per_class=6, size=40, seed=5)
    write_classification_folder(str(tmp_path / 'eval' / 'test'), COLOR_PHOTOS[:3],
                                per_class=5, size=40, seed=6)
    out = str(tmp_path / 'out')
    res = run_tool([TOOL, '--quick', '--out', out, '--paradigms', 'supervised', 'clip', 'm3i',
                    '--labelled', sources['labelled'], '--captions', sources['captions'],
                    '--eval-train', str(tmp_path / 'eval' / 'train'),
                    '--eval-test', str(tmp_path / 'eval' / 'test'), '--no-photo-eval',
                    '--image-size', '32'], cwd=str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'your sources: labelled' in res.stdout
    check_outputs(out, ('supervised', 'clip', 'm3i'), (0, 1), ('yours', ), iters=4)
