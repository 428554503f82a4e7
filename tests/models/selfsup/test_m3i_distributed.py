"""The full M3I model on 2 gloo ranks: InfoNCE negatives and UniGrad statistics span both.

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
    model = build_tiny(FULL, mix=False)
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
    assert model.caption_head is not None and model.cross_head.unigrad_lambda > 0
    full = _losses(model, inputs, batch, mask)
    local = [_losses(model, inputs[sl], _rows(batch, sl), mask[sl])
             for sl in (slice(0, ROWS), slice(ROWS, 2 * ROWS))]
    print('single process, whole batch:', {k: round(v.item(), 5) for k, v in full.items()})
    print('rank-local only:', [{k: round(v.item(), 5) for k, v in d.items()} for d in local])
    run_distributed(_check_ranks, full, local)
