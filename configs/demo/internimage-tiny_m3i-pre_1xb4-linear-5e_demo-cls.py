# Tiny linear probing for `make demo` and the end-to-end tests: the recipe of
# ../internimage/internimage-t_m3i-pre_8xb256-linear-coslr-90e_in1k.py (frozen backbone,
# pooled features, BatchNorm, linear classifier, LARS) on the tiny photo set of
# internimage-tiny_m3i-pre_1xb4-5e_demo-cls.py.
_base_ = '../internimage/internimage-t_m3i-pre_8xb256-linear-coslr-90e_in1k.py'
pretrained = 'work_dirs/m3i_internimage-tiny_1xb8-300it_photos/backbone.pth'
data_root = 'data/demo/cls'
num_classes = 4

data_preprocessor = dict(num_classes=num_classes)
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16]),
        init_cfg=dict(checkpoint=pretrained)),
    neck=[
        dict(type='GlobalAveragePooling'),
        dict(type='ClsBatchNormNeck', input_features=128),
    ],
    head=dict(num_classes=num_classes, in_channels=128, topk=(1, )))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0), backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=64, backend='pillow'),
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

optim_wrapper = dict(optimizer=dict(lr=0.1))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=1, end=5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=5, val_interval=5)
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=5, max_keep_ckpts=1))
randomness = dict(seed=0)
