"""M3I on 2 gloo ranks: InfoNCE negatives and UniGrad statistics span both; under FSDP2 the
sharded EMA target encoder stays deterministic with drop path on.

The global batch is six photos; each rank holds three, with the same number of labelled,
captioned and counted positions, so that for every term the mean of the per-rank losses
equals the single-process loss over the whole batch (the heads average per rank; DDP then
averages the ranks). That can only hold if the caption InfoNCE sees the other rank's
captions as negatives and UniGrad's second moment ``F`` is all-reduced: the per-rank losses
must also differ from a rank that computed on its own three samples alone.
"""
import pytest
import torch

from m3i_mm.models.utils import all_reduce_sum
from tests.models.selfsup.m3i_fixtures import build_tiny, photo_batch
from tests.models.utils.dist_helpers import run_distributed

FULL = 'm3i_internimage-t_16xb128-100k_in1k-cc12m.py'
# rank 0: rows 0-2, rank 1: rows 3-5; each: 3 labels, 2 captions
ITEMS = [('astronaut', 0, 'an astronaut in a suit'), ('chelsea', 1, 'a tabby cat'),
         ('rocket', 2, None), ('retina', 3, 'a scan of a retina'),
         ('coffee', 1, 'a cup of coffee'), ('motorcycle_left', 0, None)]
ROWS = 3
TERMS = ('loss_dense_same', 'loss_dense_cross', 'loss_label_a', 'loss_caption_a')


def _model_and_batch():
    # UniGrad weight 0.5 instead of the config's 0.02: the other rank's statistics then
    # move the dense losses by ~1e-3 instead of ~1e-5, far above float32 noise.
    model = build_tiny(FULL, mix=False, dense_head=dict(unigrad_lambda=0.5))
    data = model.data_preprocessor(photo_batch(items=ITEMS), True)
    inputs, batch = data['inputs'], data['batch']
    mask = torch.zeros(len(ITEMS), 4, 4, dtype=torch.bool)
    mask[:, 1:3, 1:3] = True  # the same count of masked positions in every sample
    return model, inputs, batch, mask


def _rows(batch, sl):
    return type(batch)(labels=batch.labels[sl], captions=batch.captions[sl],
                       crop_boxes=batch.crop_boxes[sl], flips=batch.flips[sl],
                       sources=batch.sources[sl])


def _losses(model, inputs, batch, mask):
    losses = model.loss_from_predictions(model.predict(inputs, batch, mask), batch)
    return {k: losses[k].detach() for k in TERMS}


def _check_ranks(rank, world, full, local):
    model, inputs, batch, mask = _model_and_batch()
    sl = slice(rank * ROWS, (rank + 1) * ROWS)
    mine = _losses(model, inputs[sl], _rows(batch, sl), mask[sl])
    for term in TERMS:
        mean = all_reduce_sum(mine[term].clone()) / world
        torch.testing.assert_close(mean, full[term], rtol=1e-4, atol=1e-5,
                                   msg=lambda m: f'{term}: {m}')
    # computed alone, a rank would get other values: the terms really use both ranks
    for term in ('loss_caption_a', 'loss_dense_cross', 'loss_dense_same'):
        assert abs(mine[term] - local[rank][term]) > 1e-4, term


@pytest.mark.slow
def test_m3i_contrastive_negatives_and_unigrad_statistics_span_ranks():
    model, inputs, batch, mask = _model_and_batch()
    assert model.caption_head is not None and model.cross_head.unigrad_lambda == 0.5
    full = _losses(model, inputs, batch, mask)
    local = [_losses(model, inputs[sl], _rows(batch, sl), mask[sl])
             for sl in (slice(0, ROWS), slice(ROWS, 2 * ROWS))]
    print('single process, whole batch:', {k: round(v.item(), 5) for k, v in full.items()})
    print('rank-local only:', [{k: round(v.item(), 5) for k, v in d.items()} for d in local])
    run_distributed(_check_ranks, full, local)


def _fsdp2_targets_are_deterministic(rank, world, out_dir):
    from mmengine.logging import MessageHub

    from tests.engine.fsdp2_helpers import make_strategy
    from tests.models.selfsup.test_m3i_targets import drop_path_model
    MessageHub.get_current_instance().update_info('max_iters', 10)  # cosine EMA schedule
    model, views = drop_path_model()
    data = model.data_preprocessor(photo_batch(), True)
    model = make_strategy(out_dir).prepare(model)
    model.train()
    model(data['inputs'], batch=data['batch'], mode='loss')  # root forward: EMA update
    encoder = model.target_encoder.module
    with torch.no_grad():
        first, second = model.target_tokens(views), model.target_tokens(views)
        plain = [encoder[1](encoder[0](views)) for _ in range(2)]  # drop path active
        online = [model.encode(views)[0] for _ in range(2)]
    from torch.distributed.tensor import DTensor
    assert any(isinstance(p, DTensor) for p in encoder.parameters())
    assert torch.equal(first, second), rank
    assert not torch.equal(plain[0], plain[1]), rank
    assert not torch.equal(online[0], online[1]), rank


@pytest.mark.slow
def test_m3i_targets_are_deterministic_under_fsdp2_with_drop_path(tmp_path):
    """The sharded EMA target encoder (FSDP2, 2 gloo ranks) also runs without its stochastic
    depth and dropout in train mode; the online encoder keeps them."""
    run_distributed(_fsdp2_targets_are_deterministic, str(tmp_path))
