# InternImage-B trained from scratch on ImageNet-1k at 224 px: the official recipe
# (classification/configs/without_lr_decay/internimage_b_1k_224.yaml, identical to the default
# config) of the zoo entry internimage_b_1k_224 (84.9 top-1). Mixup 0.8, CutMix 1.0, label
# smoothing 0.1. 20 warm-up epochs, fp16 mixed precision; evaluation: short side 224, central
# 224 crop.
_base_ = [
    '../_base_/models/internimage_cls.py',
    '../_base_/datasets/imagenet_bs128_randaug-erase_224.py',
    '../_base_/schedules/imagenet_bs4096_adamw_300e.py',
    '../_base_/default_runtime_cls.py',
]
pretrained = None  # trained from scratch

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.5),
    neck=dict(in_channels=896),
    head=dict(in_channels=1344),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
