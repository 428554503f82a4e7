"""Refuse to evaluate a checkpoint that does not hold the model's weights."""
import re
import warnings
from typing import Callable, List, Optional

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from m3i_mm.registry import HOOKS
from m3i_mm.utils.errors import UsageError

__all__ = ['CheckpointCoverageHook', 'CheckpointMismatchError', 'check_checkpoint_coverage']


class CheckpointMismatchError(UsageError):
    """A loaded checkpoint lacks weights of the model, or has them in other shapes."""


def _examples(keys: List[str], limit: int = 5) -> str:
    return ', '.join(keys[:limit]) + (', ...' if len(keys) > limit else '')


def check_checkpoint_coverage(model: nn.Module, checkpoint: dict, name: Optional[str] = None,
                              allow_partial: bool = False, action: str = 'evaluate',
                              warn: Optional[Callable[[str], None]] = None) -> None:
    """Check that a loaded checkpoint covers every weight of ``model``.

    Args:
        model: The model (unwrapped) the checkpoint is loaded into.
        checkpoint: The loaded checkpoint (``state_dict`` inside, or the state dict itself).
        name: The checkpoint's name for the messages.
        allow_partial: Warn instead of raising when weights are missing or mis-shaped.
        action: What the tool does with it, for the messages (``'evaluate'``, ``'run'``).
        warn: Where warnings go (default: :func:`warnings.warn`).

    Raises:
        CheckpointMismatchError: naming the missing keys and shape mismatches (unless
            ``allow_partial``). Keys the model does not have are only warned about.
    """
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    state_dict = checkpoint.get('state_dict', checkpoint)
    # the key revision mmengine's loader applies (DDP/DataParallel prefixes)
    given = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    mismatched = sorted(
        f'{k} (checkpoint {tuple(v.shape)}, model {expected[k]})' for k, v in given.items()
        if k in expected and hasattr(v, 'shape') and tuple(v.shape) != expected[k])
    name = f' {name}' if name else ''
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
        if not allow_partial:
            raise CheckpointMismatchError(
                message + f' Pass --allow-partial-checkpoint to {action} it anyway '
                '(the missing weights keep their initial values).')
        warn(message + ' Going on anyway (--allow-partial-checkpoint).')
    elif unexpected:
        warn(f'the checkpoint{name} covers the model; {extra[2:]}, which are ignored')


@HOOKS.register_module()
class CheckpointCoverageHook(Hook):
    """Check, when a checkpoint is loaded, that it covers every weight of the model.

    mmengine loads checkpoints with ``strict=False``: weights the checkpoint lacks keep
    their initial values, so evaluating a checkpoint of another model "works" and scores
    near chance. This hook (``tools/test.py`` registers it) raises a
    :class:`CheckpointMismatchError` naming the missing keys and shape mismatches instead,
    unless ``allow_partial``; keys the model does not have are only logged
    (:func:`check_checkpoint_coverage`).

    Args:
        allow_partial: Log the problems as a warning instead of raising.
        checkpoint: The checkpoint's name for the message (default: not named).
    """

    priority = 'LOWEST'  # after hooks that rewrite the loaded checkpoint (EMAHook)

    def __init__(self, allow_partial: bool = False, checkpoint: Optional[str] = None) -> None:
        self.allow_partial = allow_partial
        self.checkpoint = checkpoint

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        check_checkpoint_coverage(model, checkpoint, self.checkpoint, self.allow_partial,
                                  warn=runner.logger.warning)
