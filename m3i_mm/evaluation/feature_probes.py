"""Small-scale evaluations of a pre-trained backbone: frozen-feature probes (linear, kNN,
few-shot), a per-pixel linear probe scored by mIoU, and a short full fine-tuning.

They are the scores of ``tools/analysis/compare_paradigms.py`` and work on in-memory
arrays, so any backbone that maps ``(N, 3, H, W)`` images to a tuple of NCHW stage
features can be scored in seconds on a CPU.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['classification_probes', 'mean_iou', 'dense_linear_probe', 'finetune_classifier',
           'stage_features']


def stage_features(backbone: nn.Module, images: np.ndarray, mean: torch.Tensor,
                   std: torch.Tensor, batch_size: int = 128) -> Tuple[torch.Tensor, ...]:
    """Outputs of ``backbone`` (eval mode, no gradient) for RGB uint8 ``(N, H, W, 3)``
    images normalised by ``mean`` / ``std`` (``(3,)``): one float32 CPU tensor per stage
    it returns."""
    device = mean.device
    mean, std = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)
    backbone.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
            x = (x.to(device).permute(0, 3, 1, 2).float() - mean) / std
            outs.append([f.float().cpu() for f in backbone(x)])
    return tuple(torch.cat(parts) for parts in zip(*outs))


def classification_probes(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                          test_y: np.ndarray, seed: int = 0, knn_k: int = 20,
                          shots: int = 5, draws: int = 5, C: float = 0.5) -> Dict[str, float]:
    """Test accuracies of frozen features.

    ``linear``: logistic regression (L2, ``C``) on standardised features of the whole train
    split. ``knn``: k nearest neighbours by cosine similarity (majority vote). ``few_shot``:
    the linear probe fitted on ``shots`` random train images per class, mean over ``draws``
    draws; classes with fewer than ``shots`` train images, and their test images, are left
    out of it.

    Raises:
        ValueError: If fewer than two classes have ``shots`` train images.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    def linear(x, y, tx, ty):
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(x), y)
        return float(clf.score(scaler.transform(tx), ty))

    classes, counts = np.unique(train_y, return_counts=True)
    kept = classes[counts >= shots]
    if len(kept) < 2:
        raise ValueError(f'{shots}-shot evaluation needs two classes with at least {shots} '
                         f'train images each; class counts: {dict(zip(classes, counts))}')
    rng = np.random.default_rng(seed)
    in_test = np.isin(test_y, kept)
    few = []
    for _ in range(draws):
        keep = np.concatenate([rng.choice(np.flatnonzero(train_y == c), shots, replace=False)
                               for c in kept])
        few.append(linear(train_x[keep], train_y[keep], test_x[in_test], test_y[in_test]))
    knn = KNeighborsClassifier(n_neighbors=min(knn_k, len(train_y)), metric='cosine')
    return dict(linear=linear(train_x, train_y, test_x, test_y),
                knn=float(knn.fit(train_x, train_y).score(test_x, test_y)),
                few_shot=float(np.mean(few)))


def mean_iou(pred: np.ndarray, target: np.ndarray, num_classes: int) -> Tuple[float, np.ndarray]:
    """Mean intersection over union of integer label maps (any equal shapes).

    Returns:
        ``(mIoU, IoU per class)``; a class absent from both ``pred`` and ``target`` has IoU
        NaN and is left out of the mean (mmseg's convention).
    """
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f'pred and target sizes differ: {pred.size} vs {target.size}')
    confusion = np.bincount(target * num_classes + pred,
                            minlength=num_classes * num_classes).reshape(num_classes,
                                                                         num_classes)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        ious = inter / union
    return float(np.nanmean(ious)), ious


def dense_linear_probe(train_feats: torch.Tensor, train_segs: np.ndarray,
                       test_feats: torch.Tensor, test_segs: np.ndarray, num_classes: int,
                       max_iter: int = 100, weight_decay: float = 1e-4) -> float:
    """mIoU of a per-pixel linear classifier on frozen dense features.

    The classifier (standardised features, multinomial logistic regression, L2
    ``weight_decay``, L-BFGS) is fitted on the feature grid's cells, each labelled with the
    class at its centre pixel; its logits on the test features are upsampled bilinearly to
    the label maps' size and scored by :func:`mean_iou` against every pixel.

    Args:
        train_feats: ``(N, C, h, w)`` features whose grid tiles the ``(H, W)`` label maps.
        train_segs: ``(N, H, W)`` integer label maps.
        test_feats: Test features, same layout.
        test_segs: Test label maps.
        num_classes: Number of classes.
    """
    n, channels, h, w = train_feats.shape
    height, width = train_segs.shape[1:]
    if height % h or width % w:
        raise ValueError(f'feature grid {(h, w)} does not tile the label maps {(height, width)}')
    sh, sw = height // h, width // w
    labels = torch.from_numpy(np.ascontiguousarray(
        train_segs[:, sh // 2::sh, sw // 2::sw])).long().reshape(-1)
    x = train_feats.permute(0, 2, 3, 1).reshape(-1, channels).float()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = ((x - mean) / std).contiguous()
    weight = torch.zeros(channels, num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, history_size=20,
                                  line_search_fn='strong_wolfe')

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, labels) + weight_decay * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    preds = []
    with torch.no_grad():
        for start in range(0, len(test_feats), 64):
            f = test_feats[start:start + 64].float()
            f = (f.permute(0, 2, 3, 1) - mean) / std
            logits = (f @ weight + bias).permute(0, 3, 1, 2)
            logits = F.interpolate(logits, size=(height, width), mode='bilinear',
                                   align_corners=False)
            preds.append(logits.argmax(1).numpy())
    return mean_iou(np.concatenate(preds), test_segs, num_classes)[0]


def finetune_classifier(backbone: nn.Module, train_images: np.ndarray, train_labels: np.ndarray,
                        test_images: np.ndarray, test_labels: np.ndarray, mean: torch.Tensor,
                        std: torch.Tensor, steps: int = 100, batch_size: int = 30,
                        lr: float = 5e-4, weight_decay: float = 0.05, warmup: float = 0.1,
                        max_shift: int = 8, seed: int = 0,
                        num_classes: Optional[int] = None) -> float:
    """Test accuracy after fine-tuning all of ``backbone`` with a linear head.

    The head reads the global average of the last stage through a LayerNorm. AdamW (betas
    0.9/0.999), linear warm-up over the first ``warmup`` of the steps, then cosine to 0;
    each step draws ``batch_size`` train images at random and shifts each by up to
    ``max_shift`` pixels (reflection padding). ``backbone`` is changed in place.
    """
    device = mean.device
    generator = torch.Generator().manual_seed(seed)
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    mean, std = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)
    with torch.no_grad():
        probe = backbone(torch.zeros(1, 3, *train_images.shape[1:3], device=device))[-1]
    torch.manual_seed(seed)
    head = nn.Sequential(nn.LayerNorm(probe.shape[1]), nn.Linear(probe.shape[1],
                                                                 num_classes)).to(device)
    params = [p for p in backbone.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, round(warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warm if s < warm
                                                 else 0.5 * (1 + math.cos(math.pi * (s - warm) /
                                                                          max(1, steps - warm))))
    images = torch.from_numpy(np.ascontiguousarray(train_images)).permute(0, 3, 1, 2)
    labels = torch.from_numpy(np.asarray(train_labels)).long()
    size = images.shape[-2:]
    backbone.train()
    head.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size, ), generator=generator)
        x = ((images[idx].to(device).float() - mean) / std)
        if max_shift:
            x = F.pad(x, [max_shift] * 4, mode='reflect')
            shifts = torch.randint(2 * max_shift + 1, (batch_size, 2), generator=generator)
            x = torch.stack([x[i, :, dy:dy + size[0], dx:dx + size[1]]
                             for i, (dy, dx) in enumerate(shifts.tolist())])
        logits = head(backbone(x)[-1].mean(dim=(2, 3)))
        loss = F.cross_entropy(logits, labels[idx].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    backbone.eval()
    head.eval()
    feats = stage_features(backbone, test_images, mean.view(3), std.view(3))[-1]
    with torch.no_grad():
        pred = head(feats.to(device).mean(dim=(2, 3))).argmax(1).cpu().numpy()
    return float((pred == np.asarray(test_labels)).mean())
