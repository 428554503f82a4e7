# Tiny ADE20k semantic segmentation for `make demo` and the end-to-end tests: the recipe of
# ../upernet/upernet_internimage-t_8xb2-160k_ade20k-512x512.py with a tiny InternImage on 64 x 64
# crops of six photos (about 128 px) labelled with their regions' tones (ADE label maps, 0 =
# ignore). Runs on a CPU from the working directory holding data/demo/ade, which
# m3i_mm.demo.photo_datasets.write_demo_datasets('data/demo') writes.
# The backbone starts from the tiny M3I demo checkpoint (its default path below, or
# --cfg-options model.backbone.init_cfg.checkpoint=PATH).
_base_ = '../upernet/upernet_internimage-t_8xb2-160k_ade20k-512x512.py'
pretrained = 'work_dirs/m3i_internimage-tiny_1xb8-300it_photos/backbone.pth'
data_root = 'data/demo/ade'
crop_size = (64, 64)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16]),
        init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[16, 32, 64, 128]),
    auxiliary_head=dict(in_channels=64))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# BatchNorm in the UperNet pooling branch needs at least two images per batch.
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=5, end=20),
]
train_cfg = dict(max_iters=20, val_interval=20)
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=20, max_keep_ckpts=1))
randomness = dict(seed=0)
