"""Refuse to evaluate a checkpoint that does not hold the model's weights."""
import re
from typing import List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from m3i_mm.registry import HOOKS
from m3i_mm.utils.errors import UsageError

__all__ = ['CheckpointCoverageHook', 'CheckpointMismatchError']


class CheckpointMismatchError(UsageError):
    """A loaded checkpoint lacks weights of the model, or has them in other shapes."""


def _examples(keys: List[str], limit: int = 5) -> str:
    return ', '.join(keys[:limit]) + (', ...' if len(keys) > limit else '')


@HOOKS.register_module()
class CheckpointCoverageHook(Hook):
    """Check, when a checkpoint is loaded, that it covers every weight of the model.

    mmengine loads checkpoints with ``strict=False``: weights the checkpoint lacks keep
    their initial values, so evaluating a checkpoint of another model "works" and scores
    near chance. This hook (``tools/test.py`` registers it) raises a
    :class:`CheckpointMismatchError` naming the missing keys and shape mismatches instead,
    unless ``allow_partial``; keys the model does not have are only logged.

    Args:
        allow_partial: Log the problems as a warning instead of raising.
        checkpoint: The checkpoint's name for the message (default: not named).
    """

    priority = 'LOWEST'  # after hooks that rewrite the loaded checkpoint (EMAHook)

    def __init__(self, allow_partial: bool = False, checkpoint: Optional[str] = None) -> None:
        self.allow_partial = allow_partial
        self.checkpoint = checkpoint

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state_dict = checkpoint.get('state_dict', checkpoint)
        # the key revision mmengine's loader applies (DDP/DataParallel prefixes)
        given = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        missing = sorted(k for k in expected if k not in given)
        unexpected = sorted(k for k in given if k not in expected)
        mismatched = sorted(
            f'{k} (checkpoint {tuple(v.shape)}, model {expected[k]})' for k, v in given.items()
            if k in expected and hasattr(v, 'shape') and tuple(v.shape) != expected[k])
        name = f' {self.checkpoint}' if self.checkpoint else ''
        extra = (f'; {len(unexpected)} of its {len(given)} entries are not in the model '
                 f'(e.g. {_examples(unexpected)})') if unexpected else ''
        if missing or mismatched:
            problems = []
            if missing:
                problems.append(f'{len(missing)} of the model\'s {len(expected)} weights are '
                                f'missing from it (e.g. {_examples(missing)})')
            if mismatched:
                problems.append(f'{len(mismatched)} have other shapes (e.g. '
                                f'{_examples(mismatched, 3)})')
            message = (f'the checkpoint{name} does not cover the model '
                       f'{type(model).__name__}: {"; ".join(problems)}{extra}. Is it a '
                       'checkpoint of another model or config?')
            if not self.allow_partial:
                raise CheckpointMismatchError(
                    message + ' Pass --allow-partial-checkpoint to evaluate it anyway '
                    '(the missing weights keep their initial values).')
            runner.logger.warning(message + ' Evaluating anyway (--allow-partial-checkpoint).')
        elif unexpected:
            runner.logger.warning(f'the checkpoint{name} covers the model; '
                                  f'{extra[2:]}, which are ignored')
