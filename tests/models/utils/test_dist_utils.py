import pytest
import torch
import torch.distributed as dist

from m3i_mm.models.utils import (all_gather_local_grad, all_gather_variable,
                                 all_gather_with_grad, all_reduce_sum, get_rank, get_world_size,
                                 is_distributed)
from tests.models.utils.dist_helpers import run_distributed


def test_single_process_no_ops():
    assert not is_distributed() and get_world_size() == 1 and get_rank() == 0
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_gather_local_grad(x) is x
    gathered, counts = all_gather_variable(x)
    assert gathered is x and counts == [3]
    stat = torch.tensor([1.0, 2.0])
    summed = all_reduce_sum(stat)
    summed += 1  # must be a copy
    assert torch.equal(stat, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match='at least one dimension'):
        all_gather_with_grad(torch.tensor(1.0))


def _rows(rank: int, num: int) -> torch.Tensor:
    """Deterministic (num, 3) float64 rows that identify their rank."""
    base = torch.arange(num * 3, dtype=torch.float64).view(num, 3)
    return base + 100.0 * (rank + 1)


def _weights(rank: int, shape) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + rank)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _check_collectives(rank: int, world: int) -> None:
    assert is_distributed() and get_world_size() == world and get_rank() == rank
    assert dist.get_backend() == 'gloo'
    # all_reduce_sum: sum of rank-dependent statistics, input untouched.
    stat = torch.tensor([rank + 1.0, 2.0 * rank], dtype=torch.float64)
    total = all_reduce_sum(stat)
    assert torch.equal(total, torch.tensor([3.0, 2.0], dtype=torch.float64))
    assert torch.equal(stat, torch.tensor([rank + 1.0, 2.0 * rank], dtype=torch.float64))

    # all_gather_with_grad: loss_r = <w_r, gathered>; d(sum_r loss_r)/dx_r = sum_r w_r[rows r].
    rows = 2
    x = _rows(rank, rows).requires_grad_()
    gathered = all_gather_with_grad(x)
    expected = torch.cat([_rows(r, rows) for r in range(world)])
    assert torch.equal(gathered.detach(), expected)
    w = _weights(rank, gathered.shape)
    (w * gathered).sum().backward()
    all_w = [_weights(r, gathered.shape) for r in range(world)]
    want = sum(wr[rank * rows:(rank + 1) * rows] for wr in all_w)
    torch.testing.assert_close(x.grad, want)

    # all_gather_local_grad: only this rank's own loss reaches x.
    x = _rows(rank, rows).requires_grad_()
    gathered = all_gather_local_grad(x)
    assert torch.equal(gathered.detach(), expected)
    (w * gathered).sum().backward()
    torch.testing.assert_close(x.grad, w[rank * rows:(rank + 1) * rows])

    # all_gather_variable: 3 rows on rank 0, none on rank 1, then 1 and 2.
    for sizes in ((3, 0), (1, 2), (0, 0)):
        x = _rows(rank, sizes[rank]).requires_grad_()
        gathered, counts = all_gather_variable(x)
        assert counts == list(sizes)
        expected = torch.cat([_rows(r, n) for r, n in enumerate(sizes)])
        assert torch.equal(gathered.detach(), expected)
        w = _weights(rank, gathered.shape)
        (w * gathered).sum().backward()
        offset = sum(sizes[:rank])
        all_w = [_weights(r, gathered.shape) for r in range(world)]
        want = sum(wr[offset:offset + sizes[rank]] for wr in all_w)
        torch.testing.assert_close(x.grad, want)


@pytest.mark.slow
def test_collectives_two_processes():
    run_distributed(_check_collectives)
