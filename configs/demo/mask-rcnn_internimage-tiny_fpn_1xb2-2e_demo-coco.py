# Tiny COCO instance segmentation for `make demo` and the end-to-end tests: the recipe of
# ../mask_rcnn/mask-rcnn_internimage-t_fpn_1x_coco.py with a tiny InternImage on six photos
# (about 128 px) whose regions are the instances and whose classes are the regions' tones.
# Runs on a CPU from the working directory holding data/demo/coco, which
# m3i_mm.demo.photo_datasets.write_demo_datasets('data/demo') writes.
# The backbone starts from the tiny M3I demo checkpoint (its default path below, or
# --cfg-options model.backbone.init_cfg.checkpoint=PATH).
_base_ = '../mask_rcnn/mask-rcnn_internimage-t_fpn_1x_coco.py'
pretrained = 'work_dirs/m3i_internimage-tiny_1xb8-300it_photos/backbone.pth'
data_root = 'data/demo/coco/'
classes = ('dark', 'mid-dark', 'mid-light', 'light')

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16]),
        init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[16, 32, 64, 128]),
    roi_head=dict(bbox_head=dict(num_classes=len(classes)),
                  mask_head=dict(num_classes=len(classes))),
    # A few objects per small image need far fewer proposals and RoIs than COCO's defaults,
    # which keeps the RoI heads cheap on a CPU.
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
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

optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
    dict(type='MultiStepLR', begin=0, end=2, by_epoch=True, milestones=[1], gamma=0.1),
]
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=1))
randomness = dict(seed=0)
