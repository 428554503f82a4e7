"""m3i_mm.evaluation.feature_probes: the scores of the paradigm comparison."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from m3i_mm.evaluation.feature_probes import (classification_probes, dense_linear_probe,
                                              finetune_classifier, mean_iou, stage_features)


def test_mean_iou_matches_a_per_class_count_and_skips_absent_classes():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(3, 10, 12))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, target.shape))
    miou, ious = mean_iou(pred, target, num_classes=5)  # class 4 appears nowhere
    expected = []
    for c in range(4):
        inter = np.logical_and(pred == c, target == c).sum()
        union = np.logical_or(pred == c, target == c).sum()
        expected.append(inter / union)
    np.testing.assert_allclose(ious[:4], expected, rtol=0, atol=1e-12)
    assert np.isnan(ious[4])
    assert miou == pytest.approx(np.mean(expected), abs=1e-12)
    assert mean_iou(target, target, 4)[0] == 1.0
    with pytest.raises(ValueError, match='sizes differ'):
        mean_iou(pred[:1], target, 4)


def test_classification_probes_separate_clusters_and_not_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 4
    y_train, y_test = rng.integers(0, 4, 200), rng.integers(0, 4, 100)
    x_train = centres[y_train] + rng.normal(size=(200, 16))
    x_test = centres[y_test] + rng.normal(size=(100, 16))
    scores = classification_probes(x_train, y_train, x_test, y_test)
    assert set(scores) == {'linear', 'knn', 'few_shot'}
    assert min(scores.values()) > 0.95, scores
    noise = classification_probes(rng.normal(size=(200, 16)), y_train,
                                  rng.normal(size=(100, 16)), y_test)
    assert max(noise.values()) < 0.5, noise
    # few-shot leaves out classes with fewer than 5 train images, and refuses one class
    y_rare = y_train.copy()
    y_rare[y_rare == 3] = 0
    y_rare[:3] = 3
    few = classification_probes(x_train, y_rare, x_test, y_test)
    assert 0 <= few['few_shot'] <= 1
    with pytest.raises(ValueError, match='two classes'):
        classification_probes(x_train[:6], np.array([0, 0, 0, 0, 0, 1]), x_test, y_test)


def test_dense_linear_probe_reads_classes_encoded_in_the_features():
    rng = np.random.default_rng(1)
    num_classes, n, cells, scale = 3, 12, 6, 4
    grid = rng.integers(0, num_classes, size=(2 * n, cells, cells))
    segs = grid.repeat(scale, 1).repeat(scale, 2)  # each cell covers 4 x 4 pixels
    onehot = np.eye(num_classes)[grid].transpose(0, 3, 1, 2)
    feats = torch.from_numpy(onehot + 0.1 * rng.normal(size=onehot.shape)).float()
    noise = torch.from_numpy(rng.normal(size=onehot.shape)).float()
    good = dense_linear_probe(feats[:n], segs[:n], feats[n:], segs[n:], num_classes)
    bad = dense_linear_probe(noise[:n], segs[:n], noise[n:], segs[n:], num_classes)
    # bilinear upsampling blurs cell borders a little; noise features stay near chance
    assert good > 0.75 and bad < 0.4, (good, bad)
    with pytest.raises(ValueError, match='does not tile'):
        dense_linear_probe(feats[:n, :, :5], segs[:n], feats[n:, :, :5], segs[n:],
                           num_classes)


class TinyBackbone(nn.Module):
    """Two conv stages: enough to learn the colour of an image."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.stage2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x):
        a = torch.relu(self.stage1(x))
        return a, torch.relu(self.stage2(a))


def colour_images(num: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, num)
    images = rng.integers(0, 60, size=(num, 16, 16, 3)).astype(np.uint8)
    images[labels == 1, ..., 0] += 150  # class 1: red
    images[labels == 0, ..., 2] += 150  # class 0: blue
    return images, labels


def test_stage_features_are_the_backbone_outputs_in_eval_mode():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    images, _ = colour_images(5, 0)
    mean, std = torch.tensor([120., 110., 100.]), torch.tensor([50., 60., 70.])
    feats = stage_features(backbone, images, mean, std, batch_size=2)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - mean.view(1, 3, 1, 1)) / \
        std.view(1, 3, 1, 1)
    for got, ref in zip(feats, backbone(x)):
        torch.testing.assert_close(got, ref.detach())
    assert not backbone.training


def test_finetune_classifier_learns_an_easy_task_reproducibly():
    train, train_y = colour_images(40, 1)
    test, test_y = colour_images(30, 2)
    mean, std = torch.full((3, ), 100.), torch.full((3, ), 60.)
    accuracies, weights = [], []
    for _ in range(2):
        torch.manual_seed(0)
        backbone = TinyBackbone()
        before = backbone.stage1.weight.detach().clone()
        accuracies.append(finetune_classifier(backbone, train, train_y, test, test_y, mean, std,
                                              steps=30, batch_size=8, lr=3e-3, max_shift=2,
                                              seed=3))
        assert not torch.equal(backbone.stage1.weight, before)  # the backbone is tuned too
        weights.append(backbone.stage1.weight.detach().clone())
    assert accuracies[0] == accuracies[1] and torch.equal(weights[0], weights[1])
    assert accuracies[0] > 0.9, accuracies
