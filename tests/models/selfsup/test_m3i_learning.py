"""M3I learns on real images: the loss falls on photos, and digits features get better."""
import json
import os.path as osp
from typing import Optional

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO
from tests.models.selfsup.m3i_fixtures import minilm_path

TINY_CONFIG = osp.join(REPO, 'configs', 'm3i', 'm3i_internimage-tiny_1xb8-300it_photos.py')


def tiny_config(work_dir: str, iters: int) -> Config:
    cfg = Config.fromfile(TINY_CONFIG)
    cfg.work_dir = work_dir
    cfg.model.text_encoder.update(model_name_or_path=minilm_path(), local_files_only=True)
    cfg.train_cfg.max_iters = iters
    cfg.param_scheduler[1].end = iters
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = iters
    cfg.log_processor.window_size = 1
    return cfg


def train(cfg: Config):
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def losses_of(work_dir: str) -> list:
    path = next(p for p in __import__('glob').glob(osp.join(work_dir, '*', 'vis_data',
                                                             'scalars.json')))
    return [json.loads(line)['loss'] for line in open(path) if '"loss"' in line]


@pytest.mark.slow
def test_tiny_m3i_loss_falls_on_photos(tmp_path, monkeypatch):
    from m3i_mm.demo.photo_datasets import write_m3i_demo_sources
    monkeypatch.chdir(tmp_path)
    write_m3i_demo_sources()
    cfg = tiny_config(str(tmp_path / 'work'), iters=200)
    train(cfg)
    losses = losses_of(str(tmp_path / 'work'))
    assert len(losses) == 200
    first, last = np.mean(losses[:25]), np.mean(losses[-25:])
    print(f'M3I tiny on photos: mean loss of iterations 1-25 {first:.3f}, 176-200 {last:.3f}')
    assert last < 0.8 * first


def backbone_features(backbone, images: np.ndarray) -> np.ndarray:
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    feats = []
    backbone.eval()
    with torch.no_grad():
        for start in range(0, len(images), 128):
            x = torch.from_numpy(images[start:start + 128]).permute(0, 3, 1, 2).float()
            outs = backbone((x - mean) / std)
            feats.append(torch.cat([o.mean(dim=(2, 3)) for o in outs], dim=1))
    return torch.cat(feats).numpy()


def linear_probe(backbone, data: dict, shots: Optional[int] = None, seed: int = 0) -> float:
    """Test accuracy of a logistic regression on frozen, pooled backbone features.

    ``shots``: train the probe on that many images per class (None: the whole train split).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    train_x = backbone_features(backbone, data['train_images'])
    test_x = backbone_features(backbone, data['test_images'])
    train_y = data['train_labels']
    if shots is not None:
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.choice(np.flatnonzero(train_y == c), shots, replace=False)
                               for c in np.unique(train_y)])
        train_x, train_y = train_x[keep], train_y[keep]
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=3000, C=0.5).fit(scaler.transform(train_x), train_y)
    return float(clf.score(scaler.transform(test_x), data['test_labels']))


def probes(backbone, data: dict) -> dict:
    return dict(full=linear_probe(backbone, data),
                five_shot=float(np.mean([linear_probe(backbone, data, 5, seed)
                                         for seed in range(5)])))


@pytest.mark.slow
def test_m3i_on_digits_beats_random_init_in_a_linear_probe(tmp_path, monkeypatch):
    """Digits train split (upsampled to 32 px): a third labelled, a third captioned ("a
    handwritten seven"), a third unlabelled; 2000 iterations of the tiny M3I config. The probe
    is fitted on the whole train split and, few-shot, on 5 images per class (mean of 5
    draws); both are scored on the held-out split."""
    from m3i_mm.demo.photo_datasets import write_digits_sources
    from mmpretrain.registry import MODELS
    monkeypatch.chdir(tmp_path)
    size, iters = 32, 2000
    data = write_digits_sources(str(tmp_path / 'digits'), size=size)
    cfg = tiny_config(str(tmp_path / 'work'), iters=iters)
    cfg.default_hooks.logger.interval = 100
    cfg.model.label_head.num_classes = 10
    sources = cfg.train_dataloader.dataset.sources
    sources[0].update(data_root=osp.dirname(data['captions']))
    sources[1].dataset.data_root = data['labelled']
    sources[2].data_root = data['unlabelled']
    views = cfg.train_dataloader.dataset.pipeline[0]
    views.update(size=size, scale=(0.5, 1.0), flip_prob=0.0)  # digits are not symmetric

    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    random_model = MODELS.build(cfg.model)
    random_model.init_weights()
    random_acc = probes(random_model.backbone, data)

    runner = train(cfg)
    trained_acc = probes(runner.model.backbone, data)
    print(f'digits linear probe on held-out digits, random init -> after M3I ({iters} it): '
          f'full train split {random_acc["full"]:.3f} -> {trained_acc["full"]:.3f}, '
          f'5 per class {random_acc["five_shot"]:.3f} -> {trained_acc["five_shot"]:.3f}')
    assert trained_acc['full'] > random_acc['full']
    assert trained_acc['five_shot'] > random_acc['five_shot']
