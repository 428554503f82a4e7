"""ImageNet-style fine-tuning and linear probing from a tiny M3I backbone, end to end:
tools/train.py for a few iterations, then tools/test.py with mmpretrain's Accuracy."""
import pytest
import torch

from m3i_mm.zoo.scheme import load_checkpoint_file
from tests.e2e.conftest import (assert_scores, last_checkpoint, parse_metrics, run_test_tool,
                                train)

pytestmark = pytest.mark.slow


def backbone_tensors(checkpoint: str) -> dict:
    state = load_checkpoint_file(checkpoint, map_location='cpu')['state_dict']
    return {k: v for k, v in state.items() if k.startswith('backbone.')}


def test_finetune_trains_the_backbone_and_reports_accuracy(demo_workspace, m3i_backbone):
    path, initial = m3i_backbone
    work_dir = train('finetune', demo_workspace, path)
    checkpoint = last_checkpoint(work_dir)
    trained = backbone_tensors(checkpoint)
    assert set(trained) == set(initial)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial), \
        'fine-tuning left every backbone tensor unchanged'
    metrics = parse_metrics(run_test_tool('finetune', demo_workspace, checkpoint))
    assert_scores(metrics, ['accuracy/top1'], 0.0, 100.0)


def test_linear_probe_keeps_the_backbone_frozen(demo_workspace, m3i_backbone):
    path, initial = m3i_backbone
    work_dir = train('linear', demo_workspace, path)
    checkpoint = last_checkpoint(work_dir)
    trained = backbone_tensors(checkpoint)
    for key, value in initial.items():
        assert torch.equal(trained[key], value), f'{key} changed during linear probing'
    head = load_checkpoint_file(checkpoint, map_location='cpu')['state_dict']['head.fc.weight']
    assert head.shape == (4, 128)
    metrics = parse_metrics(run_test_tool('linear', demo_workspace, checkpoint))
    assert_scores(metrics, ['accuracy/top1'], 0.0, 100.0)
