"""The MI heads on 2 gloo ranks against single-process references over the global batch.

Definitions checked (W = world size, rank r holds rows ``sl_r`` of the global batch):

* ``average='global'``: ``mean_r loss_r`` equals the single-process loss over the
  concatenated global batch ``L``, and the gradient a rank computes for its own inputs
  equals ``W * dL/d(inputs[sl_r])`` (DDP divides by W when it averages, so the update is
  ``dL/dtheta``); head parameters: ``mean_r grad_r = dL/dparam``.
* ``average='local'``: ``loss_r`` equals the reference restricted to rank r's rows (with
  negatives / ``F`` still from the global batch), and the gradients equal those of
  ``sum_r loss_r``.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from m3i_mm.models.heads import BoltzmannMIHead, GaussianMIHead
from m3i_mm.models.utils import all_gather_with_grad, all_reduce_sum
from tests.models.heads.test_boltzmann_mi_head import clip_infonce_per_row
from tests.models.heads.test_gaussian_mi_head import reference_loss
from tests.models.utils.dist_helpers import run_distributed

ROWS = 4  # samples per rank


def _mean_over_ranks(x: torch.Tensor, world: int) -> torch.Tensor:
    return all_reduce_sum(x) / world


def _check_contrastive(rank, world, valid_all, average):
    gen = torch.Generator().manual_seed(10)
    image_all = torch.randn(world * ROWS, 6, generator=gen, dtype=torch.float64)
    text_all = torch.randn(world * ROWS, 5, generator=gen, dtype=torch.float64)
    torch.manual_seed(0)  # same head initialisation on every rank
    head = BoltzmannMIHead(mode='contrastive', embed_dim=5, in_channels=6,
                           average=average).double()
    sl = slice(rank * ROWS, (rank + 1) * ROWS)
    image = image_all[sl].clone().requires_grad_()
    text = text_all[sl].clone().requires_grad_()
    loss = head.loss(image, text, valid_all[sl])['loss_sem']
    loss.backward()

    # Reference over the concatenated global batch, no communication.
    image_ref = image_all.clone().requires_grad_()
    text_ref = text_all.clone().requires_grad_()
    proj_ref = head.image_proj.weight.detach().clone().requires_grad_()
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    rows = clip_infonce_per_row(image_ref[valid_all] @ proj_ref.t(), text_ref[valid_all],
                                log_scale.exp())
    owner = torch.arange(world * ROWS)[valid_all] // ROWS  # rank that owns each valid row
    if average == 'global':
        if rows.numel():
            rows.mean().backward()
            want_loss = rows.mean().detach()
        else:
            want_loss = torch.zeros((), dtype=torch.float64)
        torch.testing.assert_close(_mean_over_ranks(loss, world), want_loss)
        scale = world
    else:
        per_rank = [rows[owner == r].mean() if (owner == r).any() else rows.sum() * 0
                    for r in range(world)]
        sum(per_rank).backward()
        torch.testing.assert_close(loss.detach(), per_rank[rank].detach())
        scale = 1
        # Negatives must come from both ranks: a rank-local InfoNCE gives another value.
        local_valid = valid_all[sl]
        if local_valid.any() and valid_all.sum() > local_valid.sum():
            local_only = clip_infonce_per_row(image_all[sl][local_valid] @ proj_ref.detach().t(),
                                              text_all[sl][local_valid], 1 / 0.07).mean()
            assert not torch.allclose(loss.detach(), local_only)
    if image_ref.grad is None:  # nothing valid anywhere
        assert loss.item() == 0.0 and torch.count_nonzero(image.grad) == 0
        return
    torch.testing.assert_close(image.grad, scale * image_ref.grad[sl])
    torch.testing.assert_close(text.grad, scale * text_ref.grad[sl])
    torch.testing.assert_close(
        _mean_over_ranks(head.image_proj.weight.grad, world) * world / scale, proj_ref.grad)
    torch.testing.assert_close(
        _mean_over_ranks(head.logit_scale.grad, world) * world / scale, log_scale.grad)


def _check_unigrad(rank, world, average):
    gen = torch.Generator().manual_seed(20)
    pred_all = torch.randn(world * ROWS, 3, 6, generator=gen, dtype=torch.float64)
    target_all = 2 * torch.randn(world * ROWS, 3, 6, generator=gen, dtype=torch.float64) + 1
    weight_all = (torch.rand(world * ROWS, 3, generator=gen) > 0.3).double()
    weight_all[ROWS:ROWS + 3] = 0  # rank 1 counts far fewer positions than rank 0
    sl = slice(rank * ROWS, (rank + 1) * ROWS)
    head = GaussianMIHead(unigrad_lambda=0.5, average=average, loss_name='loss_dense_cross')

    # F is the second moment over the global batch, not the local one.
    corr, count = head.compute_correlation(target_all[sl], weight_all[sl])
    _, corr_ref = reference_loss(pred_all, target_all, weight_all, 0.5)
    torch.testing.assert_close(corr, corr_ref)
    assert count.item() == weight_all.sum().item()
    _, corr_local = reference_loss(pred_all[sl], target_all[sl], weight_all[sl], 0.5)
    assert not torch.allclose(corr, corr_local)

    pred = pred_all[sl].clone().requires_grad_()
    loss = head.loss(pred, target_all[sl], weight_all[sl])['loss_dense_cross']
    loss.backward()
    if average == 'global':
        pred_ref = pred_all.clone().requires_grad_()
        ref, _ = reference_loss(pred_ref, target_all, weight_all, 0.5)
        ref.backward()
        torch.testing.assert_close(_mean_over_ranks(loss, world), ref.detach())
        torch.testing.assert_close(pred.grad, world * pred_ref.grad[sl])
    else:
        pred_ref = pred_all[sl].clone().requires_grad_()
        ref, _ = reference_loss(pred_ref, target_all[sl], weight_all[sl], 0.5, corr=corr_ref)
        ref.backward()
        torch.testing.assert_close(loss.detach(), ref.detach())
        torch.testing.assert_close(pred.grad, pred_ref.grad)

    # A running F stays identical on all ranks (it is built from all-reduced statistics).
    running = GaussianMIHead(unigrad_lambda=0.5, corr_momentum=0.5, feat_dim=6).double()
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed + rank)
        running.loss(torch.randn(ROWS, 3, 6, generator=g, dtype=torch.float64),
                     torch.randn(ROWS, 3, 6, generator=g, dtype=torch.float64))
    both = all_gather_with_grad(running.running_corr[None])
    torch.testing.assert_close(both[0], both[1])


def _check_class(rank, world):
    gen = torch.Generator().manual_seed(30)
    pred_all = torch.randn(world * ROWS, 4, generator=gen, dtype=torch.float64)
    labels_all = torch.tensor([0, 2, -1, 1, -1, -1, 2, -1])
    torch.manual_seed(0)
    head = BoltzmannMIHead(mode='class', embed_dim=4, num_classes=3,
                           label_smoothing=0.1).double()
    sl = slice(rank * ROWS, (rank + 1) * ROWS)
    pred = pred_all[sl].clone().requires_grad_()
    loss = head.loss(pred, labels_all[sl])['loss_sem']
    loss.backward()
    pred_ref = pred_all.clone().requires_grad_()
    table = head.class_embed.detach().clone().requires_grad_()
    keep = labels_all >= 0
    logits = (1 / 0.07) * F.normalize(pred_ref[keep], dim=-1) @ F.normalize(table, dim=-1).t()
    ref = F.cross_entropy(logits, labels_all[keep], label_smoothing=0.1)
    ref.backward()
    torch.testing.assert_close(_mean_over_ranks(loss, world), ref.detach())
    torch.testing.assert_close(pred.grad, world * pred_ref.grad[sl])
    torch.testing.assert_close(_mean_over_ranks(head.class_embed.grad, world), table.grad)


def _check_heads(rank: int, world: int) -> None:
    assert world * ROWS == 8
    uneven = torch.tensor([True, True, False, True, False, True, False, False])
    one_rank_empty = torch.tensor([True, True, False, True, False, False, False, False])
    for valid in (uneven, one_rank_empty, torch.zeros(8, dtype=torch.bool)):
        for average in ('global', 'local'):
            _check_contrastive(rank, world, valid, average)
    for average in ('global', 'local'):
        _check_unigrad(rank, world, average)
    _check_class(rank, world)


@pytest.mark.slow
def test_mi_heads_span_both_ranks():
    run_distributed(_check_heads)

