# DINO (4 scales) with InternImage-H, COCO fine-tuning of a detector pre-trained on Objects365:
# 20k iterations at batch 64 (one image per GPU; the paper's fine-tuning batch), AdamW lr 1e-4,
# weight decay 1e-4, layer-wise lr decay 0.94 (official detection numbering), the head's
# deformable-attention sampling offsets and reference points at 1e-3x lr, gradient clipping at
# 0.1, 500 warm-up iterations then a constant lr; 1000 denoising queries; train scales: short
# side 600-1800 (long side <= 2000); test at (2000, 1000); up to 300 detections: the official
# recipe (detection/configs/coco/dino_4scale_internimage_h_objects365_coco_ss.py; official 63.4
# box AP, detection/README.md). The Objects365 detector this stage starts from is not published:
# set `load_from` to yours (its classifier cut to the 80 COCO classes), e.g. --cfg-options
# load_from=PATH.
_base_ = '../_base_/models/dino-4scale_internimage.py'
pretrained = None  # the whole detector starts from load_from
load_from = None
max_iters = 20000

model = dict(
    backbone=dict(
        arch='h',
        layer_scale=None,
        drop_path_rate=0.5,
        with_cp=True,
        init_cfg=None),
    neck=dict(in_channels=[640, 1280, 2560]),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=1000)),
    test_cfg=dict(max_per_img=300))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=[(2000, 600), (2000, 1800)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=(2000, 1000), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=1,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    paramwise_cfg=dict(layer_decay_rate=0.94, offset_lr_scale=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=200)
default_hooks = dict(
    logger=dict(log_metric_by_epoch=False),
    checkpoint=dict(by_epoch=False, interval=200, max_keep_ckpts=3, save_best='auto'))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(base_batch_size=64)
