"""Report the training data's bad samples per source, and keep the counts in checkpoints."""
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook
from mmengine.hooks import Hook
from mmengine.logging import print_log

from m3i_mm.registry import HOOKS

__all__ = ['BadSampleReportHook']

#: Message-hub key of the counts (so they are saved in, and resumed from, checkpoints).
COUNTS_KEY = 'm3i_mm_sample_counts'


def counting_dataset(dataset):
    """The dataset (possibly inside wrappers with ``.dataset``) that counts its samples."""
    while dataset is not None and not hasattr(dataset, 'counter_totals'):
        dataset = getattr(dataset, 'dataset', None)
    return dataset


@HOOKS.register_module()
class BadSampleReportHook(Hook):
    """Log how many samples each source delivered and how many were bad, by kind.

    For a training dataset that counts its samples
    (:class:`~m3i_mm.datasets.MultiSourceDataset`): every ``interval`` iterations, at the
    end of each epoch and of training, and at every iteration a ``CheckpointHook`` saves,
    the counts of all ranks and dataloader workers are summed and logged, one entry per
    source (``read / bad / replaced``, then the bad ones by kind), and stored in the
    message hub, hence in the checkpoint. A resumed run continues from the counts of its
    checkpoint, so the numbers always cover the whole training.

    With :class:`~m3i_mm.datasets.MultiSourceSampler` and ``m3i_mm.SamplerStateHook`` the
    counts are those of the batches training consumed, exactly (batches the dataloader
    workers fetched ahead are counted when they are consumed), so a resumed run reports
    what an uninterrupted one does. With other samplers they include the batches fetched
    ahead.

    Args:
        interval: Iterations between reports (0: only at epoch ends, checkpoints and the
            end of training).
    """

    priority = 'LOW'  # before CheckpointHook (VERY_LOW), so a checkpoint has fresh counts

    def __init__(self, interval: int = 1000) -> None:
        if not isinstance(interval, int) or interval < 0:
            raise ValueError(f'BadSampleReportHook: interval must be an integer >= 0, got '
                             f'{interval!r}')
        self.interval = interval
        self._dataset = None
        self._sampler = None
        self._resumed: Optional[Dict[str, dict]] = None
        self._consumed = None
        self._taken_steps = 0
        self._reported = -1

    def before_train(self, runner) -> None:
        loader = runner.train_dataloader
        self._dataset = counting_dataset(loader.dataset)
        if self._dataset is None:
            print_log('BadSampleReportHook: the training dataset '
                      f'({type(loader.dataset).__name__}) does not count its samples (use '
                      'm3i_mm.MultiSourceDataset); nothing will be reported',
                      logger='current', level='WARNING')
            return
        self._consumed = torch.zeros(len(self._dataset.names), len(
            self._dataset.counter_columns), dtype=torch.int64)
        self._sampler = next((s for s in (loader.sampler, getattr(
            loader.batch_sampler, 'sampler', None)) if hasattr(s, 'consumed_steps')), None)
        # SamplerStateHook (priority NORMAL) has set the sampler's position by now
        self._taken_steps = self._sampler.consumed_steps if self._sampler else 0
        self._resumed = runner.message_hub.get_info(COUNTS_KEY)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._dataset is None:
            return
        steps = None  # without a step-keeping sampler: everything read so far
        if self._sampler is not None:  # steps consumed up to this batch (marked already)
            steps = range(self._taken_steps, self._sampler.consumed_steps)
            self._taken_steps = self._sampler.consumed_steps
        self._consumed += self._dataset.take_counts(steps)

    def _checkpoint_due(self, runner) -> bool:
        for hook in runner.hooks:
            if isinstance(hook, MMEngineCheckpointHook) and not hook.by_epoch and (
                    hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                    or (hook.save_last and hook.is_last_train_iter(runner))):
                return True
        return False

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if (self.interval and self.every_n_train_iters(runner, self.interval)) \
                or self._checkpoint_due(runner):
            self.report(runner, runner.iter + 1)

    def after_train_epoch(self, runner) -> None:
        self.report(runner, runner.iter)

    def after_train(self, runner) -> None:
        self.report(runner, runner.iter)

    def report(self, runner, iterations: int) -> None:
        """Sum the counts over ranks, log them and store them in the message hub, once per
        number of completed ``iterations``.

        Every rank must call this at the same point (the counts are all-reduced).
        """
        if self._dataset is None or self._reported == iterations:
            return
        self._reported = iterations
        totals = self._consumed.clone()
        all_reduce(totals, op='sum')
        names = list(self._dataset.names)
        counts = {}
        columns = self._dataset.counter_columns
        for name, row in zip(names, totals.tolist()):
            previous = (self._resumed or {}).get(name, {})
            counts[name] = {column: n + int(previous.get(column, 0))
                            for column, n in zip(columns, row)}
        runner.message_hub.update_info(COUNTS_KEY, counts)
        runner.logger.info(format_counts(counts))


def format_counts(counts: Dict[str, dict]) -> str:
    """One log line: per source ``read / bad / replaced`` and the bad ones by kind."""
    parts = []
    for name, row in counts.items():
        kinds = ', '.join(f'{kind} {n}' for kind, n in row.items()
                          if kind not in ('read', 'bad', 'replaced') and n)
        parts.append(f'{name} {row["read"]} / {row["bad"]} / {row["replaced"]}'
                     + (f' ({kinds})' if kinds else ''))
    return 'samples read / bad / replaced per source: ' + '; '.join(parts)
