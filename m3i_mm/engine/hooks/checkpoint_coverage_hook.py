"""Refuse to evaluate a checkpoint that does not hold the model's weights."""
import re
import warnings
from typing import Callable, List, Optional

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from m3i_mm.registry import HOOKS
from m3i_mm.utils.errors import UsageError

__all__ = ['CheckpointCoverageHook', 'CheckpointMismatchError', 'check_checkpoint_coverage']


class CheckpointMismatchError(UsageError):
    """A loaded checkpoint lacks weights of the model, has them in other shapes or dtype
    classes, or holds NaN/Inf weights."""


def _examples(keys: List[str], limit: int = 5) -> str:
    return ', '.join(keys[:limit]) + (', ...' if len(keys) > limit else '')


def _dtype_kind(tensor) -> str:
    """The class of a tensor's dtype: what a load can convert without changing meaning."""
    if tensor.dtype == torch.bool:
        return 'bool'
    if tensor.is_complex():
        return 'complex'
    return 'floating' if tensor.is_floating_point() else 'integer'


def _all_finite(tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex()) or bool(
        torch.isfinite(tensor).all())


def check_checkpoint_coverage(model: nn.Module, checkpoint: dict, name: Optional[str] = None,
                              allow_partial: bool = False, action: str = 'evaluate',
                              warn: Optional[Callable[[str], None]] = None,
                              advice: Optional[str] = None) -> None:
    """Check that a loaded checkpoint holds every weight of ``model``, usable.

    Args:
        model: The model (unwrapped) the checkpoint is loaded into.
        checkpoint: The loaded checkpoint (``state_dict`` inside, or the state dict itself).
        name: The checkpoint's name for the messages.
        allow_partial: Warn instead of raising.
        action: What the tool does with it, for the messages (``'evaluate'``, ``'run'``).
        warn: Where warnings go (default: :func:`warnings.warn`).
        advice: The end of the error message, what to do instead (default: pass
            ``--allow-partial-checkpoint`` to ``action`` it anyway).

    Raises:
        CheckpointMismatchError: naming the missing keys, shape mismatches, weights of
            another dtype class (floating, integer, bool, complex: float16 for float32 is
            fine) and weights holding NaN or Inf where the model's own values are finite
            (unless ``allow_partial``). Keys the model does not have are only warned about.
    """
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    advice = advice or (f'Pass --allow-partial-checkpoint to {action} it anyway (the '
                        'missing weights keep their initial values).')
    state_dict = checkpoint.get('state_dict', checkpoint)
    # the key revision mmengine's loader applies (DDP/DataParallel prefixes)
    given = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()}
    own = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in own.items()}
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    common = [k for k, v in given.items() if k in expected and isinstance(v, torch.Tensor)]
    mismatched = sorted(f'{k} (checkpoint {tuple(given[k].shape)}, model {expected[k]})'
                        for k in common if tuple(given[k].shape) != expected[k])
    other_kind = sorted(f'{k} (checkpoint {given[k].dtype}, model {own[k].dtype})'
                        for k in common if _dtype_kind(given[k]) != _dtype_kind(own[k]))
    non_finite = sorted(k for k in common if not _all_finite(given[k]) and _all_finite(own[k]))
    name = f' {name}' if name else ''
    extra = (f'; {len(unexpected)} of its {len(given)} entries are not in the model '
             f'(e.g. {_examples(unexpected)})') if unexpected else ''
    if missing or mismatched or other_kind or non_finite:
        problems = []
        if missing:
            problems.append(f'{len(missing)} of the model\'s {len(expected)} weights are '
                            f'missing from it (e.g. {_examples(missing)})')
        if mismatched:
            problems.append(f'{len(mismatched)} have other shapes (e.g. '
                            f'{_examples(mismatched, 3)})')
        if other_kind:
            problems.append(f'{len(other_kind)} have a dtype of another kind (e.g. '
                            f'{_examples(other_kind, 3)})')
        if non_finite:
            problems.append(f'{len(non_finite)} hold NaN or Inf values (e.g. '
                            f'{_examples(non_finite)}; a diverged run saves such weights)')
        covers = 'does not cover' if missing or mismatched else 'does not fit'
        message = (f'the checkpoint{name} {covers} the model {type(model).__name__}: '
                   f'{"; ".join(problems)}{extra}.')
        if missing or mismatched or other_kind:
            message += ' Is it a checkpoint of another model or config?'
        if not allow_partial:
            raise CheckpointMismatchError(f'{message} {advice}')
        warn(message + ' Going on anyway (--allow-partial-checkpoint).')
    elif unexpected:
        warn(f'the checkpoint{name} covers the model; {extra[2:]}, which are ignored')


@HOOKS.register_module()
class CheckpointCoverageHook(Hook):
    """Check, when a checkpoint is loaded, that it holds every weight of the model, usable.

    mmengine loads checkpoints with ``strict=False``: weights the checkpoint lacks keep
    their initial values, so evaluating a checkpoint of another model "works" and scores
    near chance; and it copies values into the model's tensors whatever their dtype, so
    integer or boolean weights (a converted or corrupted file) become numbers that score
    near chance too, as do NaN or Inf weights (a diverged run). This hook
    (``tools/test.py`` registers it, and ``tools/train.py`` when it resumes) raises a
    :class:`CheckpointMismatchError` instead (:func:`check_checkpoint_coverage`), unless
    ``allow_partial``; keys the model does not have are only logged.

    Args:
        allow_partial: Log the problems as a warning instead of raising.
        checkpoint: The checkpoint's name for the message (default: not named).
        advice: The end of the error message: what to do instead (default: pass
            ``--allow-partial-checkpoint`` to evaluate it anyway).
    """

    priority = 'LOWEST'  # after hooks that rewrite the loaded checkpoint (EMAHook)

    def __init__(self, allow_partial: bool = False, checkpoint: Optional[str] = None,
                 advice: Optional[str] = None) -> None:
        self.allow_partial = allow_partial
        self.checkpoint = checkpoint
        self.advice = advice

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        check_checkpoint_coverage(model, checkpoint, self.checkpoint, self.allow_partial,
                                  warn=runner.logger.warning, advice=self.advice)
