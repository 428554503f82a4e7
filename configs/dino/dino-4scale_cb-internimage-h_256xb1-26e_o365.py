# Stage 1 of the M3I / InternImage system-level detector: DINO (4 scales) with CB-InternImage-H
# on Objects365 (v2, 365 classes), 26 epochs at batch 256, AdamW lr 2e-4, lr x0.1 after epoch
# 22, short side 600-1200. The official repository has no config for this stage; the values
# above are those of the InternImage paper (system-level detection settings), everything else
# follows the official COCO fine-tuning config of the same detector
# (dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py: weight decay 1e-4, layer-wise decay
# 0.94 with the official detection rule, offsets at 1e-3x, clipping at 0.1, 500 warm-up
# iterations, 1000 denoising queries, long side <= 2000, test at (2000, 1000)). Both backbones
# start from the M3I-pretrained InternImage-H. The COCO stage expects an 80-class head: cut this
# stage's 365-class classifier to the COCO classes before using it as `load_from` there (the
# official repository publishes the cut checkpoint, not the class mapping).
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = './dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py'
pretrained = 'm3i://internimage_h_jointto22k_384'
load_from = None
data_root = 'data/Objects365/Obj365_v2/'
max_epochs = 26

model = dict(
    backbone=dict(init_cfg=dict(
        _delete_=True, type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    bbox_head=dict(num_classes=365))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=[(2000, 600), (2000, 1200)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True),
    dataset=dict(
        _delete_=True,
        type='Objects365V2Dataset',
        data_root=data_root,
        ann_file='annotations/zhiyuan_objv2_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args={{_base_.backend_args}}))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='Objects365V2Dataset',
        data_root=data_root,
        ann_file='annotations/zhiyuan_objv2_val.json',
        data_prefix=dict(img='val/'),
        test_mode=True,
        pipeline={{_base_.test_pipeline}},
        backend_args={{_base_.backend_args}}))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/zhiyuan_objv2_val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[22],
         gamma=0.1),
]
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=1)
default_hooks = dict(
    logger=dict(log_metric_by_epoch=True),
    checkpoint=dict(by_epoch=True, interval=1, max_keep_ckpts=3, save_best=None))
log_processor = dict(by_epoch=True)
auto_scale_lr = dict(base_batch_size=256)
