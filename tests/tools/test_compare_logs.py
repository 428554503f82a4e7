"""tools/analysis/compare_logs.py: real mmengine logs (written by a toy mmengine Runner) against
official-format mmcv 1.x logs (mmdet 2.x epoch-based, mmseg 0.x iteration-based), local and
through the zoo (loopback server, cache, offline mode)."""
import glob
import importlib.util
import json
import math
import os.path as osp
import re

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from PIL import Image

from m3i_mm.zoo import ZooError
from tests.conftest import REPO, run_tool
from tests.zoo.conftest import model_entry, server, write_index, zoo_home  # noqa: F401

ITERS_PER_EPOCH = 40
EPOCHS = 3


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'compare_logs', osp.join(REPO, 'tools', 'analysis', 'compare_logs.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def designed_loss(iteration: int) -> float:
    """The loss curve both runs share (until the official one is made to part)."""
    return 2.0 * math.exp(-iteration / 60.0) + 0.5


class ScriptedLossModel(BaseModel):
    """A model whose logged loss at global iteration g (1-based) is ``designed_loss(g)``."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            self.calls += 1
            return dict(loss=self.weight.sum() * 0 + designed_loss(self.calls))
        return [dict(index=int(i)) for i in inputs]


class ScriptedMetric(BaseMetric):
    """Returns ``values[k]`` at its k-th evaluation, under ``prefix``."""

    def __init__(self, name, values, prefix=None):
        super().__init__(prefix=prefix)
        self.name, self.values, self.evaluations = name, values, 0

    def process(self, data_batch, data_samples):
        self.results.extend(data_samples)

    def compute_metrics(self, results):
        self.evaluations += 1
        return {self.name: self.values[self.evaluations - 1]}


def run_toy(work_dir: str, by_epoch: bool, metric: ScriptedMetric,
            log_metric_by_epoch: bool = True) -> str:
    """Train the scripted model with mmengine's Runner; returns its vis_data/scalars.json."""
    from mmengine.runner import Runner
    loader = dict(dataset=[dict(inputs=i) for i in range(ITERS_PER_EPOCH)], batch_size=1,
                  num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    if by_epoch:
        train_cfg = dict(by_epoch=True, max_epochs=EPOCHS, val_interval=1)
        schedule = [dict(type='MultiStepLR', by_epoch=True, milestones=[2], gamma=0.1)]
    else:
        train_cfg = dict(by_epoch=False, max_iters=EPOCHS * ITERS_PER_EPOCH,
                         val_interval=ITERS_PER_EPOCH)
        schedule = [dict(type='MultiStepLR', by_epoch=False, milestones=[80], gamma=0.1)]
    runner = Runner(
        model=ScriptedLossModel(), work_dir=work_dir, train_dataloader=loader,
        val_dataloader=dict(loader, dataset=[dict(inputs=0), dict(inputs=1)]),
        val_evaluator=[metric],
        train_cfg=train_cfg, val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)), param_scheduler=schedule,
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1,
                                       log_metric_by_epoch=log_metric_by_epoch),
                           checkpoint=dict(type='CheckpointHook', interval=1000)),
        log_processor=dict(window_size=1, by_epoch=by_epoch),
        default_scope='mmengine', experiment_name=f'toy_{by_epoch}')
    runner.train()
    paths = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert len(paths) == 1, paths
    return paths[0]


def write_lines(path, records):
    with open(path, 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')
    return str(path)


def official_mmdet2_log(path, interval=5, part_from=None, factor=1.0, maps=(0.3, 0.4, 0.45)):
    """An mmdet 2.x (mmcv 1.x, epoch-based) .log.json: header, "train" lines every
    ``interval`` iterations with the iteration inside the epoch, a "val" line per epoch with
    fractions and the copy-paste string."""
    records = [dict(env_info='sys.platform: linux', config='model = dict()', seed=0,
                    exp_name='mask_rcnn_internimage_t_fpn_1x_coco.py')]
    for epoch in range(1, EPOCHS + 1):
        lr = 0.01 if epoch <= 2 else 0.001
        for inner in range(interval, ITERS_PER_EPOCH + 1, interval):
            g = (epoch - 1) * ITERS_PER_EPOCH + inner
            loss = designed_loss(g) * (factor if part_from and g >= part_from else 1.0)
            records.append(dict(mode='train', epoch=epoch, iter=inner, lr=lr, memory=1234,
                                data_time=0.01, loss_cls=loss / 2, loss=loss, time=0.3))
        value = maps[epoch - 1]
        records.append(dict(mode='val', epoch=epoch, iter=ITERS_PER_EPOCH, lr=lr,
                            bbox_mAP=value, bbox_mAP_50=value + 0.2,
                            bbox_mAP_copypaste=f'{value} {value + 0.2} 0 0 0 0'))
    return write_lines(path, records)


def official_mmseg0_log(path, interval=5, mious=(0.30, 0.40, 0.45)):
    """An mmseg 0.x (mmcv 1.x, iteration-based) .log.json: global "iter"; "epoch" is the
    1-based pass over the loader (it advances when the loader is exhausted, so the
    validation after iteration 40 still carries pass 1)."""
    records = [dict(env_info='sys.platform: linux', seed=0)]
    for g in range(interval, EPOCHS * ITERS_PER_EPOCH + 1, interval):
        lr = 0.01 if g <= 80 else 0.001
        epoch = (g - 1) // ITERS_PER_EPOCH + 1
        records.append({'mode': 'train', 'epoch': epoch, 'iter': g, 'lr': lr,
                        'decode.loss_ce': designed_loss(g) * 0.6, 'loss': designed_loss(g),
                        'time': 0.2})
        if g % ITERS_PER_EPOCH == 0:
            records.append({'mode': 'val', 'epoch': epoch, 'iter': g, 'lr': lr,
                            'aAcc': 0.8, 'mIoU': mious[g // ITERS_PER_EPOCH - 1],
                            'mAcc': 0.5, 'IoU.wall': 0.7})
    return write_lines(path, records)


@pytest.fixture(scope='module')
def epoch_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('epoch_run')
    metric = ScriptedMetric('bbox_mAP', [0.30, 0.40, 0.48], prefix='coco')
    return run_toy(str(work_dir), by_epoch=True, metric=metric)


@pytest.fixture(scope='module')
def iter_run(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('iter_run')
    metric = ScriptedMetric('mIoU', [30.0, 40.0, 45.5])  # mmseg 1.x reports percentages
    # mmseg's runtime logs validation metrics at their iteration
    return run_toy(str(work_dir), by_epoch=False, metric=metric, log_metric_by_epoch=False)


def test_iteration_based_run_with_mmengine_default_logger(iter_run, tmp_path):
    """With mmengine's default LoggerHook (log_metric_by_epoch=True) an iteration-based run
    logs its validations at step 0 (the epoch counter); they are placed after the training
    line logged before them."""
    tool = load_tool()
    records = [json.loads(line) for line in open(iter_run)]
    for record in records:
        if 'mIoU' in record:
            record['step'] = 0
    log = tool.read_log(write_lines(tmp_path / 'default.json', records))
    assert (log.by_epoch, list(log.val['mIoU'][0]), list(log.val['mIoU'][2])) == (
        False, [40, 80, 120], [30.0, 40.0, 45.5])


def test_reads_a_real_epoch_based_mmengine_log(epoch_run):
    tool = load_tool()
    log = tool.read_log(epoch_run, 'ours')
    assert (log.fmt, log.by_epoch, log.iters_per_epoch) == ('mmengine', True, ITERS_PER_EPOCH)
    iters, epochs, losses = log.train['loss']
    assert list(iters) == list(range(1, EPOCHS * ITERS_PER_EPOCH + 1))
    np.testing.assert_allclose(epochs, iters / ITERS_PER_EPOCH)
    np.testing.assert_allclose(losses, [designed_loss(int(g)) for g in iters], rtol=1e-4)
    _, _, lrs = log.train['lr']
    np.testing.assert_allclose(lrs, np.where(iters <= 2 * ITERS_PER_EPOCH, 0.01, 0.001))
    # coco/ metrics are fractions in mmengine logs; the tool works in percent
    val_iters, val_epochs, maps = log.val['bbox_mAP']
    assert list(val_epochs) == [1, 2, 3] and list(val_iters) == [40, 80, 120]
    np.testing.assert_allclose(maps, [30.0, 40.0, 48.0])


def test_reads_an_mmdet2_log(tmp_path):
    tool = load_tool()
    log = tool.read_log(official_mmdet2_log(tmp_path / 'off.log.json'), 'official')
    assert (log.fmt, log.by_epoch, log.iters_per_epoch) == ('mmcv', True, ITERS_PER_EPOCH)
    iters, epochs, losses = log.train['loss']
    assert list(iters) == list(range(5, 121, 5))  # iteration inside the epoch -> global
    np.testing.assert_allclose(epochs, iters / ITERS_PER_EPOCH)
    _, val_epochs, maps = log.val['bbox_mAP']
    assert list(val_epochs) == [1, 2, 3]
    np.testing.assert_allclose(maps, [30.0, 40.0, 45.0])
    assert 'bbox_mAP_copypaste' not in log.val and 'memory' not in log.train


def test_epoch_runs_part_where_the_official_log_was_made_to_part(epoch_run, tmp_path, capsys):
    """Same loss until iteration 85 (epoch 2.125), then the official one is 30 % lower; same
    lr; mAP equal for two epochs, then 48.0 vs 45.0."""
    tool = load_tool()
    official = official_mmdet2_log(tmp_path / 'off.log.json', part_from=85, factor=0.7)
    out = str(tmp_path / 'plots' / 'cmp.png')
    assert tool.main([epoch_run, official, '--out', out, '--smooth', '1']) == 0
    text = capsys.readouterr().out
    lines = {line.split(':')[0]: line for line in text.splitlines()}
    assert 'against epochs' in text
    assert lines['loss'].startswith('loss: parts at epoch 2.12'), text  # 85 / 40
    assert '(+42.9%)' in lines['loss']  # 1 / 0.7 - 1
    assert lines['lr'].startswith('lr: agree within 1%'), text
    assert lines['bbox_mAP'].startswith('bbox_mAP: 3 common evaluations; last at epoch 3: '
                                        '48.00 vs 45.00 (+3.00 points); first gap over 1 '
                                        'points at epoch 3'), text
    image = Image.open(out)
    assert image.format == 'PNG' and image.size == (1870, 572)
    assert np.asarray(image.convert('L')).std() > 5  # drawn, not blank


def test_identical_runs_agree_and_a_constant_lr_factor_is_named(epoch_run, tmp_path, capsys):
    tool = load_tool()
    records = [json.loads(line) for line in open(official_mmdet2_log(tmp_path / 'a.json'))]
    for record in records:
        if record.get('mode') == 'train':
            record['lr'] *= 0.94  # e.g. a different first parameter group
    official = write_lines(tmp_path / 'b.log.json', records)
    assert tool.main([epoch_run, official, '--out', str(tmp_path / 'c.png'),
                      '--metric', 'bbox_mAP']) == 0
    lines = {line.split(':')[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines['loss'].startswith('loss: agree within 10%')
    assert lines['lr'].startswith('lr: parts at epoch 0.12')  # the first official point
    assert 'a constant factor 1.064 throughout' in lines['lr']  # 1 / 0.94


def test_iteration_based_mmseg_logs_in_percent(iter_run, tmp_path, capsys):
    """mmseg 0.x logs mIoU as a fraction, mmseg 1.x in percent: compared in percent."""
    tool = load_tool()
    official = official_mmseg0_log(tmp_path / 'seg.log.json')
    log = tool.read_log(official)
    assert (log.by_epoch, list(log.val['mIoU'][0])) == (False, [40, 80, 120])
    assert tool.main([iter_run, official, '--out', str(tmp_path / 'seg.png'), '--smooth',
                      '1']) == 0
    lines = {line.split(':')[0]: line for line in capsys.readouterr().out.splitlines()}
    assert ('ours (mmengine, iteration-based) vs official (mmcv, iteration-based), against '
            'iters') in lines
    assert lines['loss'].startswith('loss: agree within 10% from iter 5 to iter 120')
    assert lines['lr'].startswith('lr: agree within 1%')
    assert lines['mIoU'] == ('mIoU: 3 common evaluations; last at iter 120: 45.50 vs 45.00 '
                             '(+0.50 points); all within 1 points')
    assert tool.main([iter_run, official, '--x', 'epoch']) == 1
    assert 'iteration-based; use --x iter' in capsys.readouterr().err


def test_work_directory_and_unknown_metric(epoch_run, tmp_path, capsys):
    tool = load_tool()
    work_dir = osp.dirname(osp.dirname(osp.dirname(epoch_run)))
    official = official_mmdet2_log(tmp_path / 'off.log.json')
    assert tool.resolve_log(work_dir) == epoch_run
    with pytest.raises(SystemExit, match="metric 'mIoU' is not in ours, official; metrics in "
                                         r"both: \['bbox_mAP'\] \(ours: \['bbox_mAP'\], official: "
                                         r"\['bbox_mAP', 'bbox_mAP_50'\]\)"):
        tool.main([work_dir, official, '--metric', 'mIoU', '--out', str(tmp_path / 'x.png')])


@pytest.mark.parametrize('content, message', [
    ('{"mode": "train", "epoch": 1, "iter": 5, "loss": 1.0}\nnot json\n',
     r'bad.log.json, line 2: not JSON'),
    ('[1, 2]\n', r'bad.log.json, line 1: expected a JSON dict, got list'),
    ('{"a": 1}\n', 'neither an mmcv 1.x log'),
    ('', 'holds no log lines'),
])
def test_bad_logs_are_named(tmp_path, capsys, content, message):
    tool = load_tool()
    bad = tmp_path / 'bad.log.json'
    bad.write_text(content)
    assert tool.main([str(bad), str(bad)]) == 1
    assert re.search(message, capsys.readouterr().err)


def test_official_log_through_the_zoo(epoch_run, server, write_index, zoo_home, tmp_path,
                                      monkeypatch, capsys):
    """m3i://NAME resolves the entry's Training Log, downloads it once into
    $M3I_MM_HOME/logs, and works offline from the cache; the CLI runs as users run it."""
    data = open(official_mmdet2_log(tmp_path / 'served.log.json')).read().encode()
    url = server.serve('/hub/tiny_det.log.json', data)
    entry = model_entry('tiny_det', 'http://127.0.0.1:9/tiny_det.pth', converter=None)
    entry['Training Log'] = url
    write_index([entry, model_entry('tiny_nolog', 'http://127.0.0.1:9/x.pth', converter=None)])
    res = run_tool(['tools/analysis/compare_logs.py', epoch_run, 'm3i://tiny_det', '--out',
                    'cmp.png'], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert 'bbox_mAP: 3 common evaluations' in res.stdout
    cached = zoo_home / 'logs' / 'tiny_det.log.json'
    assert cached.read_bytes() == data
    assert len(server.requests_for('/hub/tiny_det.log.json')) == 1
    tool = load_tool()
    monkeypatch.setenv('M3I_MM_OFFLINE', '1')
    assert tool.main([epoch_run, 'm3i://tiny_det', '--out', str(tmp_path / 'cmp2.png')]) == 0
    assert len(server.requests_for('/hub/tiny_det.log.json')) == 1  # from the cache
    assert tool.main([epoch_run, url.replace('tiny_det', 'other')]) == 1
    assert 'offline mode is on' in capsys.readouterr().err
    with pytest.raises(ZooError, match="'tiny_nolog' .* has no \"Training Log\""):
        tool.resolve_log('m3i://tiny_nolog')


def test_a_diverged_run_is_plotted_with_its_nan_losses_marked(epoch_run, tmp_path, capsys,
                                                              monkeypatch):
    """A run whose loss turned NaN is what one compares most: it was refused with "its
    losses: []" when every loss was NaN, and its NaN points were silently dropped."""
    tool = load_tool()
    official = official_mmdet2_log(tmp_path / 'off.log.json')
    records = [json.loads(line) for line in open(epoch_run)]
    for record in records:
        if 'loss' in record and record['iter'] >= 50:
            record['loss'] = math.nan  # mmengine writes it as NaN
    diverged = tmp_path / 'diverged.json'
    diverged.write_text(''.join(json.dumps(r) + '\n' for r in records))
    assert 'NaN' in diverged.read_text()
    figures = []
    import matplotlib.pyplot as plt
    real_close = plt.close
    monkeypatch.setattr(plt, 'close', lambda fig=None: figures.append(fig) or real_close(fig))
    assert tool.main([str(diverged), official, '--out', str(tmp_path / 'd.png')]) == 0
    lines = {line.split(':')[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines['loss not finite in ours'] == (
        'loss not finite in ours: 71 of 120 logged values are NaN or inf, the first at epoch '
        '1.25 (marked x in the plot); compared where finite')
    assert lines['loss'].startswith('loss: agree within 10% from epoch 0.12 to epoch 1.12')
    loss_axis = figures[0].axes[0]
    marked = [line for line in loss_axis.lines if line.get_marker() == 'x']
    assert len(marked) == 1 and marked[0].get_label() == 'ours: loss NaN/inf'
    np.testing.assert_allclose(marked[0].get_xdata(), np.arange(50, 121) / ITERS_PER_EPOCH)
    # every loss NaN: still plotted and summarised, not refused
    for record in records:
        if 'loss' in record:
            record['loss'] = math.nan
    diverged.write_text(''.join(json.dumps(r) + '\n' for r in records))
    assert tool.main([str(diverged), official, '--out', str(tmp_path / 'e.png')]) == 0
    out = capsys.readouterr().out
    assert 'loss not finite in ours: 120 of 120 logged values are NaN or inf, the first at ' \
           'epoch 0.03 (marked x in the plot)\n' in out
    assert 'loss: no finite value in ours; nothing to compare' in out
