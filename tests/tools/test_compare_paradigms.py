"""tools/analysis/compare_paradigms.py: M3I, its special cases, fairness controls and
ablations pre-trained on the shapes testbed and scored by fine-tuning, mIoU and frozen
probes; the pieces that decide what is compared, the statistics, and ``--quick`` end to end
on the testbed and on folders of a user's own."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO, run_tool

TOOL = 'tools/analysis/compare_paradigms.py'


def load_tool():
    spec = importlib.util.spec_from_file_location('compare_paradigms', osp.join(REPO, TOOL))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_terms(row: str) -> set:
    """The loss terms of each row (written out from the configs and the ablations)."""
    dense, semantic = {'dense_same', 'dense_cross'}, {'label', 'caption'}
    return dict(supervised={'label'}, clip={'caption'}, siameseim={'dense_cross'},
                mae={'dense_same'}, m3i=dense | semantic, supervised_exposure={'label'},
                clip_exposure={'caption'}, m3i_no_mix=dense | semantic,
                m3i_mix_025=dense | semantic, m3i_semantic=semantic, m3i_dense=dense,
                random_init=set())[row]


def fake_sources(tmp_path) -> dict:
    labelled = tmp_path / 'labelled'
    for cls in ('circle', 'square', 'star'):
        (labelled / cls).mkdir(parents=True)
    return dict(labelled=str(labelled), captions=str(tmp_path / 'c' / 'manifest.jsonl'),
                unlabelled=str(tmp_path / 'u'))


def test_each_row_takes_its_algorithm_and_recipe_from_its_config(tmp_path):
    tool = load_tool()
    args = tool.parse_args(['--out', str(tmp_path)])
    assert (args.image_size, args.batch_size, args.lr) == (96, 30, 1e-3)
    base = Config.fromfile(osp.join(REPO, tool.DEFAULT_CONFIG)).to_dict()['model']
    sources = fake_sources(tmp_path)
    for row_key, row in tool.ROWS.items():
        own_cfg = Config.fromfile(osp.join(REPO, tool.PARADIGMS[row.paradigm][0]))
        own = own_cfg.to_dict()['model']
        cfg = tool.run_config(args, row_key, 0, sources, str(tmp_path / row_key))
        model = cfg.model.to_dict()
        for key in ('mix', 'mask_ratio', 'loss_weights', 'same_view_target', 'freeze_stem'):
            expected = row.model.get(key, own.get(key, base.get(key)))
            assert model.get(key) == expected, (row_key, key)
        assert model['dense_head']['unigrad_lambda'] == own['dense_head']['unigrad_lambda']
        for part in ('label_head', 'caption_head', 'text_encoder'):
            gone = own.get(part) is None or (part in row.model and row.model[part] is None)
            assert (model[part] is None) == gone, (row_key, part)
        # architecture: the tiny config's, whatever the paradigm's config says
        for key in ('neck', 'decoder'):
            assert model[key] == base[key], (row_key, key)
        assert model['backbone']['arch'] == base['backbone']['arch']
        assert model['backbone']['drop_path_rate'] == own['backbone'].get('drop_path_rate', 0)
        # recipe: lr per 256 relative to M3I's, scaled by the batch; clipping and warm-up
        # from the paradigm's config
        lr_per_256 = own_cfg.optim_wrapper.optimizer.lr / 2048 * 256
        batch = round(30 * row.batch_factor)
        assert cfg.train_dataloader.batch_size == batch
        assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1e-3 * lr_per_256 / 1.5e-4 *
                                                               batch / 30)
        clip = own_cfg.optim_wrapper.get('clip_grad')
        assert cfg.optim_wrapper.clip_grad == (None if clip is None else
                                               dict(max_norm=clip['max_norm']))
        warmup = own_cfg.param_scheduler[0]['end'] / own_cfg.train_cfg.max_iters
        assert cfg.param_scheduler[0]['end'] == round(warmup * args.iters)
        # views: SiameseIM's, without what would change labels and captions
        views = tool.views_of(cfg)
        assert views['size'] == 96 and views['flip_prob'] == 0 and views['scale'] == (0.5, 1)
        steps = [s['type'] for s in views['view1_pipeline'] + views['view2_pipeline']]
        assert not any('Grayscale' in s for s in steps) and 'mmpretrain.Solarize' in steps
        jitter = views['view1_pipeline'][0]['transforms'][0]
        assert jitter['hue'] == 0 and jitter['brightness'] == 0.4
    # the references' values, written out
    recipes = {r: tool.row_recipe(args, tool.ROWS[r]) for r in tool.ROWS}
    assert recipes['siameseim']['lr'] == pytest.approx(1e-3 * 6.25e-5 / 1.5e-4)
    assert recipes['siameseim']['clip_grad'] == 1.0 and recipes['mae']['clip_grad'] is None
    assert recipes['siameseim']['warmup_iters'] == round(0.025 * 300)
    assert recipes['supervised_exposure']['batch_size'] == 10
    siameseim = tool.run_config(args, 'siameseim', 0, sources, str(tmp_path / 's')).model
    mae = tool.run_config(args, 'mae', 0, sources, str(tmp_path / 'm')).model
    m3i = tool.run_config(args, 'm3i', 0, sources, str(tmp_path / 'x')).model
    assert siameseim.freeze_stem and siameseim.backbone.drop_path_rate == 0
    # 6 x 6 patches: BEiT's smallest block of 16 / 196 patches becomes 3; MAE keeps 1
    assert siameseim.mask_cfg == dict(min_num_patches=3) == m3i.mask_cfg
    assert mae.mask_cfg == dict(min_num_patches=1, max_num_patches=1, min_aspect=1.0)


def test_bad_arguments_and_evaluation_sets_are_named(tmp_path):
    tool = load_tool()
    with pytest.raises(SystemExit):
        tool.parse_args(['--unlabelled', str(tmp_path)])  # no evaluation sets
    with pytest.raises(SystemExit):
        tool.parse_args(['--labelled', str(tmp_path / 'missing'), '--eval-train',
                         str(tmp_path), '--eval-test', str(tmp_path)])
    with pytest.raises(SystemExit):
        tool.parse_args(['--iters', '10', '--eval-iters', '20'])
    with pytest.raises(SystemExit):
        tool.parse_args(['--image-size', '100'])
    (tmp_path / 'cls' / 'a').mkdir(parents=True)
    with pytest.raises(ValueError, match="class 'a' .* has 0 images; every class needs at "
                                         'least 5'):
        tool.load_class_folders(str(tmp_path / 'cls'), 32)
    with pytest.raises(ValueError, match='no class sub-folders'):
        tool.load_class_folders(str(tmp_path / 'cls' / 'a'), 32)
    cls_config = osp.join(REPO, 'configs/demo/internimage-tiny_m3i-pre_1xb4-5e_demo-cls.py')
    with pytest.raises(ValueError, match='not an M3I pre-training config'):
        tool.views_of(Config.fromfile(cls_config))


def test_aggregates_and_welch_tests_with_holm_correction():
    from scipy import stats
    tool = load_tool()
    values = {'m3i': [0.60, 0.62, 0.61], 'clip': [0.50, 0.52, 0.49],
              'mae': [0.58, 0.64, 0.60], 'random_init': [0.30, 0.31, 0.29]}
    runs = [dict(row=row, seed=s, scores={'0' if row == 'random_init' else '100':
                                          {'finetune/shape': v}})
            for row, vals in values.items() for s, v in enumerate(vals)]
    summary = tool.aggregate(runs)
    for row, vals in values.items():
        got = tool.final_scores(summary, row)['finetune/shape']
        assert got['mean'] == pytest.approx(np.mean(vals))
        assert got['std'] == pytest.approx(np.std(vals, ddof=1)) and got['n'] == 3
    tests = tool.significance(summary, list(values))['finetune/shape']
    assert set(tests) == {'clip', 'mae', 'random_init'}
    raw = {}
    for row in tests:  # Welch's t from its formula, two-sided p from the t distribution
        a, b = np.asarray(values['m3i']), np.asarray(values[row])
        va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
        t = (a.mean() - b.mean()) / np.sqrt(va + vb)
        df = (va + vb)**2 / (va**2 / 2 + vb**2 / 2)
        raw[row] = 2 * stats.t.sf(abs(t), df)
        assert tests[row]['p'] == pytest.approx(raw[row], rel=1e-9)
    order = sorted(raw, key=raw.get)  # Holm: step-down, monotone
    adjusted = np.maximum.accumulate([min(1, (3 - i) * raw[r]) for i, r in enumerate(order)])
    for row, p_holm in zip(order, adjusted):
        assert tests[row]['p_holm'] == pytest.approx(p_holm)
        assert tests[row]['significant'] == (p_holm < 0.05)
    assert not tests['mae']['significant'] and tests['random_init']['significant']
    table = tool.markdown_table(summary, ['random_init', 'clip', 'mae', 'm3i'],
                                ['finetune/shape'], {'finetune/shape': tests})
    assert '| M3I | **61.0 ± 1.0** |' in table and '| random init | 30.0 ± 1.0 † |' in table
    # a run that did not start from its seed's random-init backbone is refused
    hashed = [dict(r, backbone_hash={'0': 'a' if r['row'] != 'clip' else 'b'}) for r in runs]
    with pytest.raises(RuntimeError, match='did not start from the random-init backbone'):
        tool.check_common_start(hashed)


def test_the_caption_table_gives_what_the_frozen_text_encoder_gives(tmp_path):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from m3i_mm.demo.photo_datasets import photo_caption_pairs, write_caption_manifest
    tool = load_tool()
    args = tool.parse_args(['--out', str(tmp_path)])
    manifest = write_caption_manifest(str(tmp_path / 'c'), photo_caption_pairs(20, size=16))
    path = tool.caption_table(args, manifest, str(tmp_path))
    assert path is not None and tool.caption_table(args, manifest, str(tmp_path)) == path
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(REPO, tool.DEFAULT_CONFIG)).model.text_encoder.to_dict()
    encoder = MODELS.build(dict(cfg, model_name_or_path=tool.text_encoder_path(args),
                                local_files_only=True))
    from m3i_mm.datasets.image_text import read_manifest
    captions = read_manifest(manifest).captions
    batch = [captions[3], None, captions[0], captions[7] + ' ', None]
    expected = encoder(batch)
    tool.use_caption_table(encoder, path)
    torch.testing.assert_close(encoder(batch), expected, rtol=1e-4, atol=1e-5)
    assert not encoder(batch)[1].any()
    # a caption the table does not hold goes through the encoder
    other = ['a caption that is not in the manifest', captions[1]]
    assert encoder(other).shape == (2, expected.shape[1]) and encoder(other)[0].abs().sum() > 0
    # a trainable text encoder gets no table
    args.config = str(tmp_path / 'trainable.py')
    with open(args.config, 'w') as f:
        f.write(f"_base_ = '{osp.join(REPO, tool.DEFAULT_CONFIG)}'\n"
                'model = dict(text_encoder=dict(frozen=False))\n')
    assert tool.caption_table(args, manifest, str(tmp_path)) is None


def check_outputs(out: str, rows, seeds, attributes, finetune: str, dense: bool,
                  iters: int) -> dict:
    tool = load_tool()
    with open(osp.join(out, 'results.json')) as f:
        results = json.load(f)
    runs = results['runs']
    assert sorted((r['row'], r['seed']) for r in runs) == sorted(
        (r, s) for r in list(rows) + ['random_init'] for s in seeds)
    scores_expected = {f'{p}/{s}/{a}' for p in ('linear', 'knn', 'few_shot')
                       for s in ('s3', 's4') for a in attributes}
    scores_expected |= {f'finetune/{finetune}'} | ({'miou/all', 'miou/s34'} if dense else set())
    for run in runs:
        terms = {t.split(' ')[0] for t in run['active_terms'] if not t.startswith('input')}
        assert terms == expected_terms(run['row']), run['active_terms']
        final = '0' if run['row'] == 'random_init' else str(iters)
        assert set(run['scores']) == {final}
        assert set(run['scores'][final]) == scores_expected
        assert all(0.0 <= v <= 1.0 for v in run['scores'][final].values())
        # every row of a seed started from one backbone; training changed it
        start = [r for r in runs if r['seed'] == run['seed'] and r['row'] == 'random_init']
        assert run['backbone_hash']['0'] == start[0]['backbone_hash']['0']
        if run['row'] != 'random_init':
            assert run['backbone_hash'][final] != run['backbone_hash']['0']
    assert len({r['backbone_hash']['0'] for r in runs}) == len(seeds)
    # settings: each row's recipe; the summary: mean and sample std over seeds
    assert set(results['settings']['rows']) == set(rows)
    summary = results['summary']
    table = open(osp.join(out, 'results.md')).read()
    key = f'finetune/{finetune}'
    for row in rows:
        values = [r['scores'][str(iters)][key] for r in runs if r['row'] == row]
        stats = summary[row][str(iters)][key]
        assert stats['mean'] == pytest.approx(np.mean(values))
        assert stats['std'] == pytest.approx(np.std(values, ddof=1))
        assert f'{100 * stats["mean"]:.1f} ± {100 * stats["std"]:.1f}' in table
        assert f'| {tool.ROWS[row].name} |' in table
    assert '| random init |' in table
    import matplotlib.image
    height, width = matplotlib.image.imread(osp.join(out, 'scores.png')).shape[:2]
    assert height > 300 and width > 1000  # panels of scores, a bar per row
    return results


@pytest.mark.slow
def test_quick_comparison_on_the_testbed_writes_json_tables_and_plot(tmp_path):
    tool = load_tool()
    out = str(tmp_path / 'out')
    res = run_tool([TOOL, '--quick', '--out', out], cwd=str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'pre-training' in res.stderr and 'evaluations' in res.stderr  # progress bars
    assert '### Ablations of M3I' in res.stdout
    from m3i_mm.demo.shapes_testbed import ATTRIBUTES
    results = check_outputs(out, list(tool.ROWS), (0, 1), list(ATTRIBUTES), 'shape', True,
                            iters=3)
    settings = results['settings']
    assert settings['quick'] and settings['image_size'] == 64 and settings['batch_size'] == 6
    assert settings['rows']['clip_exposure']['batch_size'] == 2
    # a rerun with the same settings reuses every finished run
    res = run_tool([TOOL, '--quick', '--out', out], cwd=str(tmp_path), timeout=600)
    assert res.returncode == 0 and '0 runs to do (24 reused)' in res.stdout, res.stdout[-2000:]


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
    rows = ('supervised', 'clip', 'm3i', 'clip_exposure', 'm3i_semantic')
    res = run_tool([TOOL, '--quick', '--out', out, '--rows', *rows,
                    '--labelled', sources['labelled'], '--captions', sources['captions'],
                    '--eval-train', str(tmp_path / 'eval' / 'train'),
                    '--eval-test', str(tmp_path / 'eval' / 'test'), '--image-size', '32'],
                   cwd=str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'your sources: labelled' in res.stdout
    check_outputs(out, rows, (0, 1), ['class'], 'class', False, iters=3)
