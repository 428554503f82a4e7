"""Random draws of training as a function of (seed, iteration), for bit-exact resume."""
from typing import Optional

from mmengine.hooks import Hook

from m3i_mm.registry import HOOKS
from m3i_mm.utils.randomness import derive_key, seed_all

__all__ = ['IterationSeedHook']

_TAG = 0x17E5  # keeps these keys apart from the data stream's


@HOOKS.register_module()
class IterationSeedHook(Hook):
    """Seed python, numpy and torch (CPU and CUDA) before every training iteration from
    ``(seed, iteration)``.

    The model's random draws (M3I's masks and mixing, dropout, drop path) then depend
    only on the run's seed and the iteration, both of which the checkpoint holds: a
    resumed run draws exactly what the uninterrupted run drew, whatever else consumed
    random numbers in between (building the runner, dataloader iterators, validation).
    With :class:`~m3i_mm.datasets.MultiSourceSampler`, whose draws seed each sample's
    transforms, a resumed run on the CPU ends bit for bit where the uninterrupted one
    does (see README "Reliability").

    The seed is ``runner.seed`` (the ``randomness.seed`` of the config, or the one mmengine
    drew and saved; with ``diff_rank_seed=True`` it differs per rank, so ranks draw
    different masks).

    Args:
        seed: Seed to use instead of ``runner.seed``.
    """

    priority = 'VERY_HIGH'  # before other hooks' ``before_train_iter``

    def __init__(self, seed: Optional[int] = None) -> None:
        self.seed = seed

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        seed = runner.seed if self.seed is None else self.seed
        seed_all(derive_key(_TAG, seed, runner.iter))
