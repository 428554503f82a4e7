# Tiny COCO detection with DINO and a CB-InternImage for the end-to-end tests: the recipe of
# ../dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py (m3i_mm.CBDINO: losses of
# both backbones, 0.5 x assisting + lead; the official detection optimizer rules with the head
# offsets at 1e-3x; iteration-based schedule) with a tiny CB-InternImage (both backbones from
# the tiny M3I demo checkpoint), fewer queries and smaller images, on the photo set of
# mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py (boxes only). Runs on a CPU from the
# working directory holding data/demo/coco.
_base_ = '../dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py'
pretrained = 'work_dirs/m3i_internimage-tiny_1xb8-300it_photos/backbone.pth'
load_from = None
data_root = 'data/demo/coco/'
classes = ('dark', 'mid-dark', 'mid-light', 'light')

model = dict(
    num_queries=30,
    backbone=dict(
        arch=dict(_delete_=True, channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16]),
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(_delete_=True, type='Pretrained', checkpoint=pretrained,
                      prefix='backbone.')),
    neck=dict(in_channels=[32, 64, 128]),
    bbox_head=dict(num_classes=len(classes)),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=20)),
    test_cfg=dict(max_per_img=20))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=[(160, 96), (160, 128)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=1, save_best=None))
randomness = dict(seed=0)
