"""M3IDataPreprocessor: normalised two-view inputs and the batch of labels, captions and
view geometry, from packed photo samples."""
import numpy as np
import pytest
import torch

from m3i_mm.models import M3IDataPreprocessor
from tests.models.selfsup.m3i_fixtures import photo_batch


def test_inputs_are_normalised_rgb_and_the_batch_matches_the_samples():
    data = photo_batch(size=32)
    pre = M3IDataPreprocessor()
    out = pre(data, True)
    inputs, batch = out['inputs'], out['batch']
    assert inputs.shape == (6, 2, 3, 32, 32) and inputs.dtype == torch.float32
    raw = torch.stack(data['inputs']).float()  # BGR uint8 as decoded
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(inputs, (raw.flip(2) - mean) / std)
    # PHOTOS: labels 0, 1, -1, 2, -1, 3; captions on 0, 1, 2, 5
    assert batch.labels.tolist() == [0, 1, -1, 2, -1, 3]
    assert [c is not None for c in batch.captions] == [True, True, True, False, False, True]
    assert batch.crop_boxes.shape == (6, 2, 4) and batch.flips.shape == (6, 2)
    for i, sample in enumerate(data['data_samples']):
        np.testing.assert_allclose(batch.crop_boxes[i].numpy(), sample.crop_boxes)
        assert batch.flips[i].tolist() == list(sample.flips)


def test_bad_batches_are_named():
    data = photo_batch(size=32)
    pre = M3IDataPreprocessor()
    with pytest.raises(ValueError, match='share one size'):
        pre(dict(inputs=[data['inputs'][0], data['inputs'][1][..., :16, :16]],
                 data_samples=data['data_samples'][:2]))
    with pytest.raises(ValueError, match=r'\(N, 2, 3, S, S\)'):
        pre(dict(inputs=torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
                 data_samples=data['data_samples'][:2]))
    with pytest.raises(ValueError, match='6 inputs but 2 data samples'):
        pre(dict(inputs=data['inputs'], data_samples=data['data_samples'][:2]))
