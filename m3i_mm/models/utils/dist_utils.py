"""Autograd-aware collectives used by the MI heads.

Every function here is a no-op (or the single-process equivalent) when
``torch.distributed`` is not available or not initialised, so the heads run unchanged in a
single process.

Collectives must be called by *every* rank in the same order. The heads therefore run their
collectives unconditionally, even when a rank has nothing to contribute (an empty mask):
callers must call such a head's ``loss`` on every rank at every iteration.

Two flavours of gather are provided:

* :func:`all_gather_with_grad` routes gradients back to the rank that owns each row: the
  backward pass sums the incoming gradient over ranks (``all_reduce``) and returns the
  local slice. Use it when every rank computes a loss on *its own rows* against the global
  set (the contrastive head does this). After DDP averages parameter gradients, the update
  equals the gradient of the mean of the per-rank losses.
* :func:`all_gather_local_grad` keeps the gradient only for the local slice; the rows of
  other ranks are detached copies. It does no communication in backward.
"""
from typing import List, Tuple

import torch
import torch.distributed as dist

__all__ = [
    'is_distributed', 'get_world_size', 'get_rank', 'all_reduce_sum', 'all_gather_with_grad',
    'all_gather_local_grad', 'all_gather_variable'
]


def is_distributed() -> bool:
    """Whether a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """World size of the default group, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    """Rank in the default group, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a statistic over ranks (no gradient).

    Args:
        tensor: Any tensor; it is not modified.

    Returns:
        A new tensor holding the sum over ranks (a detached copy when not distributed).
    """
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _gather_equal(tensor: torch.Tensor) -> List[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return parts


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums gradients over ranks."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rank = get_rank()
        ctx.rows = tensor.shape[0]
        return torch.cat(_gather_equal(tensor), dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows]


def _check_gatherable(tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
        raise ValueError('all_gather expects a tensor with at least one dimension (rows), got '
                         f'{type(tensor).__name__} of shape '
                         f'{tuple(getattr(tensor, "shape", ()))}')


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped tensors of all ranks along dim 0, differentiably.

    The backward pass all-reduces (sums) the gradient of the concatenation and returns the
    rows of this rank, so the owner of each row receives the gradient of every rank's loss
    with respect to it. Every rank must run backward through the result.

    Args:
        tensor: (n, ...) tensor; n and the trailing shape must match on all ranks.

    Returns:
        (world_size * n, ...) tensor, rank r's rows at ``[r * n:(r + 1) * n]``. The input
        itself when not distributed.
    """
    _check_gatherable(tensor)
    if not is_distributed():
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def all_gather_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped tensors of all ranks; only the local rows keep gradients.

    Args:
        tensor: (n, ...) tensor; n and the trailing shape must match on all ranks.

    Returns:
        (world_size * n, ...) tensor; rows of other ranks are detached copies, this rank's
        rows are ``tensor`` itself (gradients flow to it). The input when not distributed.
    """
    _check_gatherable(tensor)
    if not is_distributed():
        return tensor
    parts = _gather_equal(tensor.detach())
    parts[get_rank()] = tensor
    return torch.cat(parts, dim=0)


def all_gather_variable(tensor: torch.Tensor,
                        with_grad: bool = True) -> Tuple[torch.Tensor, List[int]]:
    """Gather tensors whose number of rows differs between ranks.

    Row counts are gathered first, each rank pads its rows to the largest count, the padded
    tensors are gathered, and the padding is stripped again.

    Args:
        tensor: (n_r, ...) tensor; n_r may differ per rank (also 0), the trailing shape and
            dtype must match.
        with_grad: Route gradients back to the owning ranks (:func:`all_gather_with_grad`);
            otherwise only the local rows keep gradients (:func:`all_gather_local_grad`).

    Returns:
        ``(gathered, counts)``: the (sum_r n_r, ...) concatenation in rank order and the list
        of per-rank row counts. ``(tensor, [n])`` when not distributed.
    """
    _check_gatherable(tensor)
    if not is_distributed():
        return tensor, [tensor.shape[0]]
    count = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    counts = [int(c) for c in torch.cat(_gather_equal(count)).tolist()]
    max_rows = max(counts)
    if max_rows == 0:
        return tensor, counts
    padded = tensor
    if tensor.shape[0] < max_rows:
        pad = tensor.new_zeros((max_rows - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad], dim=0)
    gather = all_gather_with_grad if with_grad else all_gather_local_grad
    gathered = gather(padded)
    rows = [gathered[r * max_rows:r * max_rows + n] for r, n in enumerate(counts)]
    return torch.cat(rows, dim=0), counts
