# Tiny ImageNet-style fine-tuning for `make demo` and the end-to-end tests: the recipe of
# ../internimage/internimage-t_m3i-pre_16xb32-20e_in1k.py (layer-wise lr decay, label
# smoothing, EMA) with a tiny InternImage on 64 px crops of four photos, one class per photo.
# Runs on a CPU from the working directory holding data/demo/cls, which
# m3i_mm.demo.photo_datasets.write_demo_datasets('data/demo') writes.
# The backbone starts from the tiny M3I demo checkpoint (its default path below, or
# --cfg-options model.backbone.init_cfg.checkpoint=PATH).
_base_ = '../internimage/internimage-t_m3i-pre_16xb32-20e_in1k.py'
pretrained = 'work_dirs/m3i_internimage-tiny_1xb8-300it_photos/backbone.pth'
data_root = 'data/demo/cls'
num_classes = 4

data_preprocessor = dict(num_classes=num_classes)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16]),
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=128),
    head=dict(num_classes=num_classes, in_channels=192, topk=(1, )))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0), backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=64, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# A short schedule with a larger lr and a fast EMA, so that five epochs move the weights; fp32
# (the recipe's fp16 AmpOptimWrapper needs a GPU).
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=5, val_interval=5)
custom_hooks = [dict(type='EMAHook', momentum=0.5, update_buffers=True,
                     priority='ABOVE_NORMAL')]
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
