"""Keep the training sampler's stream position in checkpoints and resume it exactly."""
import logging
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from m3i_mm.registry import HOOKS

from .bad_sample_report_hook import counting_dataset

__all__ = ['SamplerStateHook']

CHECKPOINT_KEY = 'sampler'


class _AnswerSkipsWithoutReading:
    """Stand-in for ``IterBasedTrainLoop.dataloader_iterator`` after a resume.

    That loop discards ``iter`` batches of a fresh iterator to get past the data it has
    trained on. The sampler already continues after them, so those calls are answered
    with None, without reading or decoding anything; later calls go to ``iterator``.
    """

    def __init__(self, iterator, num_skips: int) -> None:
        self._iterator = iterator
        self._skips_left = num_skips

    def __iter__(self):
        return self

    def __next__(self):
        if self._skips_left > 0:
            self._skips_left -= 1
            return None
        return next(self._iterator)


@HOOKS.register_module()
class SamplerStateHook(Hook):
    """Save the train sampler's state in checkpoints; restore it when a run resumes.

    For samplers with ``state_dict``/``load_state_dict``/``mark_consumed``/``seek``
    (:class:`~m3i_mm.datasets.MultiSourceSampler`):

    * every iteration, the batch handed to the training step is marked consumed (with
      ``num_workers > 0`` the loader fetches ahead; prefetched batches do not count);
    * ``before_save_checkpoint`` stores ``sampler.state_dict()`` under
      ``checkpoint['sampler']`` (plain ints/strings/lists, loadable with
      ``torch.load(weights_only=True)``);
    * on resume (``runner.iter > 0`` after loading), the sampler continues right after the
      consumed batches (from the checkpoint's state, or at ``runner.iter`` for checkpoints
      without one). ``IterBasedTrainLoop`` would then skip ``iter`` more batches of a
      fresh iterator, decoding them; its iterator is replaced by one that answers those
      skips without reading data, so resuming costs no decoding and nothing is skipped
      twice. A checkpoint used only as ``load_from`` (not resumed) leaves the sampler at
      step 0.

    Use it with ``custom_hooks=[dict(type='m3i_mm.SamplerStateHook')]``.
    """

    def __init__(self) -> None:
        self._loaded_state: Optional[dict] = None

    @staticmethod
    def _sampler(runner):
        loader = runner.train_dataloader
        sampler = loader.sampler
        batch_sampler = getattr(loader, 'batch_sampler', None)
        if not hasattr(sampler, 'state_dict') and hasattr(batch_sampler, 'sampler'):
            sampler = batch_sampler.sampler
        missing = [m for m in ('state_dict', 'load_state_dict', 'mark_consumed', 'seek')
                   if not hasattr(sampler, m)]
        if missing:
            raise TypeError(f'SamplerStateHook needs a resumable sampler such as '
                            f'm3i_mm.MultiSourceSampler; {type(sampler).__name__} lacks '
                            f'{", ".join(missing)}')
        return sampler

    def before_train(self, runner) -> None:
        sampler = self._sampler(runner)
        loader = runner.train_dataloader
        loader_batch = loader.batch_size if loader.batch_size is not None else \
            getattr(loader.batch_sampler, 'batch_size', None)
        if getattr(sampler, 'batch_size', loader_batch) != loader_batch:
            raise ValueError(f'the sampler composes batches of {sampler.batch_size} samples '
                             f'but the dataloader batch_size is {loader_batch}; set both to '
                             'the same value')
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop) and not getattr(sampler, 'infinite', True):
            print_log('SamplerStateHook: with IterBasedTrainLoop, set infinite=True on the '
                      'sampler (mmengine restarts a finite dataloader every epoch with a '
                      '2 s pause)', logger='current', level=logging.WARNING)
        if runner.iter == 0:
            if self._loaded_state is not None:
                print_log('SamplerStateHook: the loaded checkpoint has a sampler state, but '
                          'this run starts at iteration 0 (load_from without resume): the '
                          'data stream starts from the beginning', logger='current')
            return
        if self._loaded_state is not None:
            sampler.load_state_dict(self._loaded_state)
            print_log(f'SamplerStateHook: data stream resumed after the '
                      f'{sampler.consumed_steps} batches consumed before the checkpoint',
                      logger='current')
        else:
            sampler.seek(runner.iter)
            print_log(f'SamplerStateHook: the checkpoint has no sampler state; the data '
                      f'stream continues at step {runner.iter} (exact if the data '
                      'configuration is unchanged)', logger='current',
                      level=logging.WARNING)
        if isinstance(loop, IterBasedTrainLoop):
            if type(loop).run is not IterBasedTrainLoop.run:
                raise NotImplementedError(
                    f'{type(loop).__name__} overrides IterBasedTrainLoop.run; '
                    'SamplerStateHook cannot tell whether it skips consumed batches on '
                    'resume')
            # The loop's first iterator started at step 0 when the loop was built: stop its
            # workers before the new ones start (persistent ones too: the loader then makes
            # new ones), and drop the sample counts of what they read ahead, which is never
            # trained on.
            first = loop.dataloader_iterator
            iterator_type = type(first)
            loop.dataloader_iterator = None
            shutdown = getattr(getattr(first, '_iterator', None), '_shutdown_workers', None)
            if shutdown is not None:
                shutdown()
                if getattr(loop.dataloader, '_iterator', None) is first._iterator:
                    loop.dataloader._iterator = None  # persistent_workers keeps it here
            del first
            dataset = counting_dataset(loop.dataloader.dataset)  # (inside any wrappers)
            if dataset is not None:
                dataset.take_counts()
            fresh = iterator_type(loop.dataloader)
            loop.dataloader_iterator = _AnswerSkipsWithoutReading(fresh, loop.iter)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._sampler(runner).mark_consumed()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self._sampler(runner).state_dict()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded_state = checkpoint.get(CHECKPOINT_KEY)
