# Tiny ImageNet-22k -> 1k fine-tuning for the end-to-end tests: the recipe of
# ../internimage/internimage-l_in22k-pre_32xb16-20e_in1k-384px.py (the whole 22k classifier
# loaded, its 21841-way head cut to the ImageNet-1k rows, no layer decay, label smoothing 0.3,
# EMA) with a tiny InternImage on 64 px crops of the demo photo set (four classes, labelled
# 0..3 among the 1000). Its default checkpoint is a tiny 22k classifier at the path below
# (backbone, neck and a 21841-way head), which tests write; fp32 (the recipe's fp16
# AmpOptimWrapper needs a GPU).
_base_ = '../internimage/internimage-l_in22k-pre_32xb16-20e_in1k-384px.py'
pretrained = 'work_dirs/internimage-tiny_22k_demo/classifier.pth'
data_root = 'data/demo/cls'

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16]),
        with_cp=False,
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=128, init_cfg=dict(checkpoint=pretrained)),
    head=dict(in_channels=192, topk=(1, ), init_cfg=dict(checkpoint=pretrained)))

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

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=2, val_interval=2)
custom_hooks = [dict(type='EMAHook', momentum=0.5, update_buffers=True,
                     priority='ABOVE_NORMAL')]
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=1))
randomness = dict(seed=0)
