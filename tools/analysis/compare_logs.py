#!/usr/bin/env python
"""Compare a training run with an official one: loss, learning rate and the validation metric
on one PNG, and a short text summary of where the curves part.

Examples::

    # our run (mmengine) against the official Mask R-CNN T 1x log, fetched through the zoo
    python tools/analysis/compare_logs.py work_dirs/mask-rcnn_internimage-t_fpn_1x_coco \\
        m3i://mask_rcnn_internimage_t_fpn_1x_coco --out mask-rcnn-t.png
    # two local files, against iterations, one loss component
    python tools/analysis/compare_logs.py RUN/vis_data/scalars.json official.log.json \\
        --x iter --loss loss_cls --metric bbox_mAP

Each log is one of:

- an mmengine run (mmdet 3.x, mmseg 1.x, mmpretrain): ``vis_data/scalars.json`` (or the
  ``vis_data/<timestamp>.json`` next to it), or a work/run directory holding one (the newest
  is taken). One JSON dict per line: training lines with ``lr``, ``loss*``, ``iter``
  (global) and ``step`` (+ ``epoch`` for epoch-based runs), validation lines with the
  metrics and ``step`` (the epoch, or the iteration for iteration-based runs);
- an mmcv 1.x run (mmdet 2.x, mmseg 0.x: the official InternImage logs, ``*.log.json``): a
  header line without ``mode``, then dicts with ``mode`` (``train``/``val``), ``epoch``,
  ``iter`` (within the epoch for epoch-based runs, global for iteration-based ones), ``lr``,
  the losses, and the metrics on ``val`` lines;
- ``m3i://NAME``: the ``Training Log`` of a model-zoo entry, or an ``http(s)://`` URL. Both
  are downloaded once through the zoo's download code into ``$M3I_MM_HOME/logs``
  (``M3I_MM_OFFLINE=1`` uses the cache only; ``M3I_MM_ZOO_MIRROR`` applies).

Units: metrics are shown in percent. mmcv 1.x logs and mmdet 3.x's ``coco/``/``lvis/``
metrics are fractions and are multiplied by 100; mmseg 1.x and mmpretrain metrics already
are percentages. Metric names are compared without their ``coco/``/``lvis/`` prefix
(``coco/bbox_mAP`` is ``bbox_mAP``). The learning rate is what each log records: the first
parameter group's.
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

# Keys of log lines that are bookkeeping, not scalars to compare.
_BOOKKEEPING = {'mode', 'epoch', 'iter', 'step', 'lr', 'base_lr', 'memory', 'time',
                'data_time', 'eta', 'momentum'}
# Metrics tried in this order when --metric is not given.
_METRIC_PRIORITY = ('bbox_mAP', 'segm_mAP', 'bbox_AP', 'segm_AP', 'mIoU', 'accuracy/top1',
                    'accuracy_top-1')
# mmengine metric prefixes whose values are fractions (mmdet's CocoMetric and LVISMetric).
_FRACTION_PREFIXES = ('coco/', 'lvis/')


class LogFormatError(ValueError):
    """A log file is not in a format this tool reads; the message names the file and line."""


# name -> (global iterations, epoch positions or None, values)
Series = Dict[str, Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]]


@dataclass
class TrainingLog:
    """Scalars of one run, on a global-iteration axis (and an epoch axis when epoch-based).

    Attributes:
        label: Name shown in the plot and the summary.
        source: The file read.
        fmt: ``'mmengine'`` or ``'mmcv'`` (mmdet 2.x / mmseg 0.x).
        by_epoch: Whether the run counted epochs (its validation runs after epochs).
        iters_per_epoch: Training iterations per epoch (epoch-based runs; for mmengine runs
            estimated from the logged iterations, exact to within one logging interval).
        train: Training scalars (losses, ``lr``): name -> (iterations, epochs, values).
        val: Validation metrics in percent: name -> (iterations, epochs, values).
    """
    label: str
    source: str
    fmt: str
    by_epoch: bool
    iters_per_epoch: Optional[float]
    train: Series = field(default_factory=dict)
    val: Series = field(default_factory=dict)

    def curve(self, name: str, axis: str, kind: str = 'train'
              ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """``(x, y)`` of the finite values of a training scalar or (``kind='val'``) a metric
        against ``'iter'`` or ``'epoch'`` (empty arrays if none is finite); ``(None, None)``
        if the log lacks it or has no epoch positions."""
        series = self.train if kind == 'train' else self.val
        if name not in series:
            return None, None
        iters, epochs, values = series[name]
        x = epochs if axis == 'epoch' else iters
        if x is None:
            return None, None
        finite = np.isfinite(values)
        return x[finite], values[finite]

    def non_finite(self, name: str, axis: str, kind: str = 'train') -> np.ndarray:
        """Positions (against ``axis``) where the scalar was logged as NaN or +-inf (a
        diverged run logs its loss as NaN); empty if none or if the log lacks it."""
        series = self.train if kind == 'train' else self.val
        if name not in series:
            return np.zeros(0)
        iters, epochs, values = series[name]
        x = epochs if axis == 'epoch' else iters
        return np.zeros(0) if x is None else x[~np.isfinite(values)]


def read_json_lines(path: str) -> List[dict]:
    """The dicts of a JSON-lines file (blank lines skipped); errors name the file and line."""
    records = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise LogFormatError(f'{path}, line {number}: not JSON ({e.msg}); expected one '
                                     'JSON dict per line (an mmengine vis_data/*.json or an '
                                     'mmcv *.log.json)') from None
            if not isinstance(record, dict):
                raise LogFormatError(f'{path}, line {number}: expected a JSON dict, got '
                                     f'{type(record).__name__}')
            records.append(record)
    if not records:
        raise LogFormatError(f'{path} holds no log lines')
    return records


def _numbers(record: dict) -> Dict[str, float]:
    """The scalars of a log line, NaN and inf included (JSON ``NaN``/``Infinity``, as
    mmengine and mmcv write a diverged loss): plots and summaries show where they are."""
    return {k: float(v) for k, v in record.items()
            if k not in _BOOKKEEPING and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _canonical_metric(name: str) -> str:
    for prefix in _FRACTION_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _collect(lines: Sequence[Tuple[float, Optional[float], Dict[str, float]]]) -> Series:
    """Per-name series from ``(iteration, epoch or None, scalars)`` lines, in logging order."""
    per_name: Dict[str, Tuple[list, list, list]] = {}
    for it, epoch, scalars in lines:
        for name, value in scalars.items():
            its, eps, vals = per_name.setdefault(name, ([], [], []))
            its.append(it)
            eps.append(epoch)
            vals.append(value)
    return {name: (np.asarray(its, dtype=float),
                   None if None in eps else np.asarray(eps, dtype=float),
                   np.asarray(vals, dtype=float))
            for name, (its, eps, vals) in per_name.items()}


def parse_mmcv_log(records: List[dict], path: str, label: str) -> TrainingLog:
    """An mmcv 1.x ``.log.json`` (mmdet 2.x epoch-based, mmseg 0.x iteration-based)."""
    train = [r for r in records if r.get('mode') == 'train']
    val = [r for r in records if r.get('mode') == 'val']
    if not train:
        raise LogFormatError(f'{path}: no "mode": "train" lines; not an mmcv training log')
    for r in train + val:
        if not isinstance(r.get('iter'), int) or not isinstance(r.get('epoch'), int):
            raise LogFormatError(f'{path}: a "{r["mode"]}" line lacks integer "epoch"/"iter": '
                                 f'{json.dumps(r)[:200]}')
    # Epoch-based runners restart "iter" at every epoch; iteration-based ones count on.
    iters = [r['iter'] for r in train]
    # A run of a single epoch never restarts its count; it is taken as epoch-based if it
    # validated at its last iteration (for an iteration-based run of less than one pass over
    # the data the positions come out the same either way).
    by_epoch = any(b < a for a, b in zip(iters, iters[1:])) or (
        len({r['epoch'] for r in train}) == 1 and bool(val) and
        all(v['epoch'] >= 1 and v['iter'] >= max(iters) for v in val))
    per_epoch = float(max([r['iter'] for r in train + val])) if by_epoch else None

    def position(record: dict, after_epoch: bool) -> Tuple[float, Optional[float]]:
        if not by_epoch:
            return float(record['iter']), None
        epoch_done = record['epoch'] if after_epoch else record['epoch'] - 1 + (
            record['iter'] / per_epoch)
        return epoch_done * per_epoch, epoch_done

    train_lines = []
    for r in train:
        it, ep = position(r, after_epoch=False)
        scalars = _numbers(r)
        if isinstance(r.get('lr'), (int, float)):
            scalars['lr'] = float(r['lr'])
        train_lines.append((it, ep, scalars))
    val_lines = []
    for r in val:
        it, ep = position(r, after_epoch=True)
        metrics = {k: v if k.startswith('accuracy') else 100.0 * v
                   for k, v in _numbers(r).items()}
        val_lines.append((it, ep, metrics))
    return TrainingLog(label, path, 'mmcv', by_epoch, per_epoch, _collect(train_lines),
                       _collect(val_lines))


def parse_mmengine_log(records: List[dict], path: str, label: str) -> TrainingLog:
    """An mmengine ``vis_data`` scalars file."""
    is_train = ['lr' in r or any(k.startswith('loss') for k in r) for r in records]
    train = [r for r, flag in zip(records, is_train) if flag]
    if not train:
        raise LogFormatError(f'{path}: no training lines (with "lr" or "loss"); not an mmengine '
                             'training log')
    for r in train:
        if not isinstance(r.get('iter', r.get('step')), int):
            raise LogFormatError(f'{path}: a training line lacks an integer "iter"/"step": '
                                 f'{json.dumps(r)[:200]}')
    by_epoch = any('epoch' in r for r in train)
    per_epoch = None
    if by_epoch:
        # The last logged iteration of epoch e is at most e * N: N >= iter / epoch.
        per_epoch = max(r.get('iter', r['step']) / r['epoch'] for r in train)
    train_lines = []
    for r in train:
        it = float(r.get('iter', r['step']))
        scalars = _numbers(r)
        if isinstance(r.get('lr'), (int, float)):
            scalars['lr'] = float(r['lr'])
        train_lines.append((it, it / per_epoch if by_epoch else None, scalars))
    val_lines = []
    last_train_iter = 0.0
    for r, flag in zip(records, is_train):
        if flag:
            last_train_iter = float(r.get('iter', r['step']))
            continue
        if not _numbers(r):
            continue
        step = float(r['step'])
        metrics = {_canonical_metric(k): (100.0 * v if k.startswith(_FRACTION_PREFIXES) else v)
                   for k, v in _numbers(r).items()}
        if by_epoch:
            val_lines.append((step * per_epoch, step, metrics))
        else:
            # mmseg logs validation at the iteration (LoggerHook log_metric_by_epoch=False);
            # with mmengine's default the step is the epoch counter, useless here: the
            # validation then sits after the last training line logged before it.
            val_lines.append((step if step >= last_train_iter else last_train_iter, None,
                              metrics))
    return TrainingLog(label, path, 'mmengine', by_epoch, per_epoch, _collect(train_lines),
                       _collect(val_lines))


def read_log(path: str, label: Optional[str] = None) -> TrainingLog:
    """Read an mmengine or mmcv 1.x JSON log (the format is detected from its lines)."""
    records = read_json_lines(path)
    label = label or osp.basename(path)
    if any('mode' in r for r in records):
        return parse_mmcv_log(records, path, label)
    if any('step' in r for r in records):
        return parse_mmengine_log(records, path, label)
    raise LogFormatError(f'{path}: neither an mmcv 1.x log (lines with "mode") nor an mmengine '
                         'one (lines with "step")')


def resolve_log(spec: str, cache_dir: Optional[str] = None) -> str:
    """A local JSON log for ``spec``: a file, a run/work directory, ``m3i://NAME`` or a URL.

    Raises:
        FileNotFoundError: A path that does not exist, or a directory without a run log.
        m3i_mm.zoo.ZooError: Unknown entry, no published log, offline without cache, failed
            download.
    """
    if spec.startswith(('m3i://', 'http://', 'https://')):
        from m3i_mm.zoo import ZooEntry, download_checkpoint, get_entry, zoo_home
        if spec.startswith('m3i://'):
            entry = get_entry(spec[len('m3i://'):]).log_entry()
        else:
            stem = re.sub(r'[^A-Za-z0-9._-]', '_', osp.basename(spec.split('?')[0]))
            stem = re.sub(r'\.json$', '', stem) or 'log'
            entry = ZooEntry(name=f'url_{stem}', url=spec, source='command line',
                             is_checkpoint=False)
        return download_checkpoint(entry, cache_dir=cache_dir or osp.join(zoo_home(), 'logs'))
    if osp.isdir(spec):
        candidates = glob.glob(osp.join(spec, '**', 'vis_data', 'scalars.json'), recursive=True)
        if not candidates:
            raise FileNotFoundError(f'no vis_data/scalars.json under {spec}: pass the JSON log '
                                    'of the run (work_dir/<timestamp>/vis_data/scalars.json)')
        return max(candidates, key=osp.getmtime)
    if not osp.isfile(spec):
        raise FileNotFoundError(f'log not found: {spec!r} (a JSON log file, a run directory, '
                                'm3i://NAME or an http(s) URL)')
    return spec


def smooth(x: np.ndarray, y: np.ndarray, width: float) -> np.ndarray:
    """Trailing moving average of ``y`` over the window ``(x - width, x]`` (in x units, so
    that logs written at different intervals are smoothed alike); ``width <= 0`` keeps y."""
    if width <= 0 or len(y) == 0:
        return y
    order = np.argsort(x, kind='stable')
    xs, ys = x[order], y[order]
    cumsum = np.concatenate([[0.0], np.cumsum(ys)])
    start = np.searchsorted(xs, xs - width, side='right')
    out = np.empty_like(ys)
    out[order] = (cumsum[1:] - cumsum[start]) / (np.arange(1, len(ys) + 1) - start)
    return out


def smoothing_width(curves: Sequence[Tuple[np.ndarray, np.ndarray]], points: int) -> float:
    """``points`` logging intervals of the more coarsely logged curve, in x units."""
    if points <= 1:
        return 0.0
    steps = [float(np.median(np.diff(np.sort(x)))) for x, _ in curves if len(x) > 1]
    return points * max(steps) if steps else 0.0


@dataclass
class Parting:
    """Where two curves stop agreeing (None: they agree on the compared range)."""
    name: str
    compared: int
    x_range: Tuple[float, float]
    at: Optional[float] = None
    ours: Optional[float] = None
    official: Optional[float] = None
    max_rel: float = 0.0
    constant_ratio: Optional[float] = None


def part_point(name: str, x_ours: np.ndarray, y_ours: np.ndarray, x_ref: np.ndarray,
               y_ref: np.ndarray, rel_tol: float, patience: int) -> Optional[Parting]:
    """First x (on the reference's points inside the common range) from which ``patience``
    consecutive points differ by more than ``rel_tol`` relative to the reference.

    Returns None when the curves have no x range in common.
    """
    order = np.argsort(x_ours, kind='stable')
    x_ours, y_ours = x_ours[order], y_ours[order]
    lo, hi = max(x_ours.min(), x_ref.min()), min(x_ours.max(), x_ref.max())
    keep = (x_ref >= lo) & (x_ref <= hi)
    if hi < lo or not keep.any():
        return None
    xs, ref = x_ref[keep], y_ref[keep]
    ours = np.interp(xs, x_ours, y_ours)
    rel = np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-12)
    result = Parting(name, int(keep.sum()), (float(xs[0]), float(xs[-1])),
                     max_rel=float(rel.max()))
    over = rel > rel_tol
    run = 0
    for i, flag in enumerate(over):
        run = run + 1 if flag else 0
        if run >= patience:
            first = i - patience + 1
            result.at, result.ours, result.official = float(xs[first]), float(ours[first]), \
                float(ref[first])
            break
    ratio = ours / np.where(ref == 0, np.nan, ref)
    ratio = ratio[np.isfinite(ratio)]
    if len(ratio) and np.all(np.abs(ratio / np.median(ratio) - 1) < 0.01):
        result.constant_ratio = float(np.median(ratio))
    return result


def choose_metric(ours: TrainingLog, official: TrainingLog, wanted: Optional[str]
                  ) -> Optional[str]:
    """The metric to compare: ``wanted``, else the first of a priority list both logs have."""
    common = [m for m in official.val if m in ours.val]
    if wanted is not None:
        missing = [log.label for log in (ours, official) if wanted not in log.val]
        if missing:
            raise SystemExit(
                f'error: metric {wanted!r} is not in {", ".join(missing)}; metrics in both: '
                f'{common or "none"} (ours: {sorted(ours.val)}, official: {sorted(official.val)})')
        return wanted
    for name in _METRIC_PRIORITY:
        if name in common:
            return name
    return common[0] if common else None


def _fmt_x(x: float, axis: str) -> str:
    return f'epoch {x:.2f}'.rstrip('0').rstrip('.') if axis == 'epoch' else f'iter {x:.0f}'


def summarize(ours: TrainingLog, official: TrainingLog, axis: str, loss: str,
              metric: Optional[str], loss_tol: float, lr_tol: float, metric_tol: float,
              smooth_window: int, patience: int) -> List[str]:
    """Lines of text: for loss, lr and the metric, whether and where the curves part."""
    lines = [f'{ours.label} ({ours.fmt}, {"epoch" if ours.by_epoch else "iteration"}-based) vs '
             f'{official.label} ({official.fmt}, '
             f'{"epoch" if official.by_epoch else "iteration"}-based), against {axis}s']
    for name, tol, points in ((loss, loss_tol, smooth_window), ('lr', lr_tol, 1)):
        x_o, y_o = ours.curve(name, axis)
        x_r, y_r = official.curve(name, axis)
        if x_o is None or x_r is None:
            lines.append(f'{name}: not in both logs')
            continue
        for log, x in ((ours, x_o), (official, x_r)):
            bad = log.non_finite(name, axis)
            if len(bad):
                lines.append(f'{name} not finite in {log.label}: {len(bad)} of '
                             f'{len(bad) + len(x)} logged values are NaN or inf, the first at '
                             f'{_fmt_x(bad.min(), axis)} (marked x in the plot)'
                             + ('; compared where finite' if len(x) else ''))
        empty = [log.label for log, x in ((ours, x_o), (official, x_r)) if not len(x)]
        if empty:
            lines.append(f'{name}: no finite value in {", ".join(empty)}; nothing to compare')
            continue
        width = smoothing_width([(x_o, y_o), (x_r, y_r)], points)
        parting = part_point(name, x_o, smooth(x_o, y_o, width), x_r, smooth(x_r, y_r, width),
                             tol, patience if name != 'lr' else 1)
        if parting is None:
            lines.append(f'{name}: no {axis} range in common')
            continue
        span = f'{_fmt_x(parting.x_range[0], axis)} to {_fmt_x(parting.x_range[1], axis)}'
        if parting.at is None:
            lines.append(f'{name}: agree within {tol:.0%} from {span} '
                         f'(largest gap {parting.max_rel:.1%}, {parting.compared} points)')
        else:
            text = (f'{name}: parts at {_fmt_x(parting.at, axis)}: {parting.ours:.4g} vs '
                    f'{parting.official:.4g} ({parting.ours / parting.official - 1:+.1%}); '
                    f'compared {span}')
            if parting.constant_ratio is not None:
                text += f'; a constant factor {parting.constant_ratio:.4g} throughout'
            lines.append(text)
    if metric is None:
        lines.append('metric: no validation metric in both logs')
        return lines
    x_o, y_o = ours.curve(metric, axis, 'val')
    x_r, y_r = official.curve(metric, axis, 'val')
    if x_o is None or x_r is None:
        lines.append(f'{metric}: no {axis} positions for the evaluations of both logs')
        return lines
    pairs = []
    for x, ref in zip(x_r, y_r):
        close = np.abs(x_o - x) <= 1e-6 * max(1.0, abs(x)) + (0.01 if axis == 'epoch' else 0.5)
        if close.any():
            pairs.append((x, float(y_o[np.argmax(close)]), float(ref)))
    if not pairs:
        lines.append(f'{metric}: no evaluation at the same {axis} in both logs (ours at '
                     f'{_positions(x_o, axis)}, official at {_positions(x_r, axis)})')
        return lines
    first_gap = next(((x, o, r) for x, o, r in pairs if abs(o - r) > metric_tol), None)
    x_last, o_last, r_last = pairs[-1]
    text = (f'{metric}: {len(pairs)} common evaluations; last at {_fmt_x(x_last, axis)}: '
            f'{o_last:.2f} vs {r_last:.2f} ({o_last - r_last:+.2f} points)')
    if first_gap is None:
        text += f'; all within {metric_tol:g} points'
    else:
        x, o, r = first_gap
        text += (f'; first gap over {metric_tol:g} points at {_fmt_x(x, axis)}: {o:.2f} vs '
                 f'{r:.2f}')
    lines.append(text)
    final_ours, final_ref = float(y_o[np.argmax(x_o)]), float(y_r[np.argmax(x_r)])
    lines.append(f'{metric} final: {final_ours:.2f} ({ours.label}, {_fmt_x(x_o.max(), axis)}) '
                 f'vs {final_ref:.2f} ({official.label}, {_fmt_x(x_r.max(), axis)})')
    return lines


def _positions(xs: np.ndarray, axis: str) -> str:
    return ', '.join(_fmt_x(x, axis) for x in xs[:6]) + (' ...' if len(xs) > 6 else '')


def plot(ours: TrainingLog, official: TrainingLog, axis: str, loss: str,
         metric: Optional[str], smooth_window: int, out: str, summary: Sequence[str]) -> None:
    """Loss, learning rate and the metric of both runs on one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    styles = ((ours, dict(color='tab:blue')), (official, dict(color='tab:orange')))
    panels = ((loss, f'{loss} (moving average over {smooth_window} logging intervals)'
               if smooth_window > 1 else loss), ('lr', 'learning rate (first parameter group)'))
    for ax, (name, title) in zip(axes[:2], panels):
        curves = [(log, *log.curve(name, axis)) for log, _ in styles]
        width = smoothing_width([(x, y) for _, x, y in curves if x is not None],
                                smooth_window if name != 'lr' else 1)
        for (log, x, y), (_, style) in zip(curves, styles):
            if x is not None:
                ax.plot(x, smooth(x, y, width), label=log.label, linewidth=1.2, **style)
            bad = log.non_finite(name, axis)
            if len(bad):  # a diverged run: where its values were NaN/inf, at the top
                ax.plot(bad, np.full(len(bad), 0.97), linestyle='none', marker='x',
                        markersize=5, transform=ax.get_xaxis_transform(),
                        label=f'{log.label}: {name} NaN/inf', **style)
        ax.set_title(title)
    axes[1].set_yscale('log')
    ax = axes[2]
    if metric is not None:
        for log, style in styles:
            x, y = log.curve(metric, axis, 'val')
            if x is not None:
                ax.plot(x, y, marker='o', markersize=3, label=log.label, **style)
        ax.set_title(f'{metric} (%)')
    else:
        ax.set_title('no validation metric in both logs')
    for ax in axes:
        ax.set_xlabel(axis)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle('\n'.join(summary[1:4]), fontsize=8, x=0.01, ha='left')
    fig.tight_layout(rect=(0, 0, 1, 0.86))
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Plot a run against an official training log and say where they part.',
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 2)[1])
    parser.add_argument('run', help='our log: vis_data/scalars.json, a run or work directory, '
                        'or any log the official argument accepts')
    parser.add_argument('official', help='the reference log: m3i://NAME (its Training Log), an '
                        'http(s) URL, or a local .log.json / vis_data json')
    parser.add_argument('--out', default='compare_logs.png', help='PNG to write')
    parser.add_argument('--labels', nargs=2, metavar=('RUN', 'OFFICIAL'),
                        default=('ours', 'official'), help='legend names of the two logs')
    parser.add_argument('--x', choices=('auto', 'iter', 'epoch'), default='auto',
                        help='x axis; auto: epochs when both runs are epoch-based')
    parser.add_argument('--loss', default='loss', help='training scalar to compare (default: '
                        'the total loss)')
    parser.add_argument('--metric', help='validation metric (without coco/ or lvis/); default: '
                        f'the first of {", ".join(_METRIC_PRIORITY)} both logs have')
    parser.add_argument('--smooth', type=int, default=5,
                        help='moving-average window of the loss, in logging intervals of the '
                        'more coarsely logged run (default 5; 1: none)')
    parser.add_argument('--loss-tol', type=float, default=0.1,
                        help='relative loss gap that counts as parting (default 0.1)')
    parser.add_argument('--lr-tol', type=float, default=0.01,
                        help='relative lr gap that counts as parting (default 0.01)')
    parser.add_argument('--metric-tol', type=float, default=1.0,
                        help='metric gap in points that counts as parting (default 1.0)')
    parser.add_argument('--patience', type=int, default=3,
                        help='consecutive loss points beyond the tolerance before the curves '
                        'count as parted (default 3)')
    parser.add_argument('--cache-dir', help='where downloaded logs go (default: '
                        '$M3I_MM_HOME/logs)')
    args = parser.parse_args(argv)
    if args.smooth < 1 or args.patience < 1:
        parser.error('--smooth and --patience must be at least 1')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from m3i_mm.zoo import ZooError
    try:
        ours = read_log(resolve_log(args.run, args.cache_dir), args.labels[0])
        official = read_log(resolve_log(args.official, args.cache_dir), args.labels[1])
    except (FileNotFoundError, LogFormatError, ZooError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    axis = args.x
    if axis == 'auto':
        axis = 'epoch' if ours.by_epoch and official.by_epoch else 'iter'
    elif axis == 'epoch':
        iteration_based = [log.label for log in (ours, official) if not log.by_epoch]
        if iteration_based:
            print(f'error: --x epoch, but {", ".join(iteration_based)} is iteration-based; use '
                  '--x iter', file=sys.stderr)
            return 1
    for log in (ours, official):
        if args.loss not in log.train:
            losses = sorted(k for k in log.train if 'loss' in k)
            print(f'error: {args.loss!r} is not in {log.label} ({log.source}); its losses: '
                  f'{losses}', file=sys.stderr)
            return 1
    metric = choose_metric(ours, official, args.metric)
    summary = summarize(ours, official, axis, args.loss, metric, args.loss_tol, args.lr_tol,
                        args.metric_tol, args.smooth, args.patience)
    plot(ours, official, axis, args.loss, metric, args.smooth, args.out, summary)
    print('\n'.join(summary))
    print(f'plot: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
