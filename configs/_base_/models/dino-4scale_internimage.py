# The official InternImage DINO recipe on COCO (detection/configs/coco/
# dino_4scale_internimage_{t,l}_1x_coco_*.py) on top of mmdet's DINO 4-scale 12e config, which
# shares the model (900 queries, 100 dynamic denoising queries with label/box noise 0.5/1.0,
# 6+6 layers, FFN 2048, focal/L1/GIoU losses 1/5/2), the multi-scale + crop pipeline and the
# 12-epoch schedule with the official file. Changed to the official values: InternImage
# backbone (T here; stages 1-3 into the channel mapper), padding to multiples of 32 (mmdet's
# DINO pads to 1), `allow_negative_crop=False`, images without boxes left out of training
# (mmdet 2.x default), 500 linear warm-up iterations (0.001x), weight decay 1e-4, and the
# official detection optimizer rules: layer-wise lr decay 0.9 with the detection numbering
# (mmdet's DINO trains the backbone at 0.1x instead), gradient clipping at 0.1. fp32.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='m3i_mm.InternImage',
        arch='t',
        layer_scale=1.0,
        drop_path_rate=0.2,
        with_cp=True,
        out_indices=(1, 2, 3)),
    neck=dict(in_channels=[128, 256, 512]),
    test_cfg=dict(max_per_img=100))

multi_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333),
                (672, 1333), (704, 1333), (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(400, 4200), (500, 4200), (600, 4200)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=False),
                dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    dataset=dict(filter_cfg=dict(filter_empty_gt=True), pipeline=train_pipeline))

optim_wrapper = dict(
    optimizer=dict(weight_decay=1e-4),
    constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.9, layer_decay_numbering='detection'))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[11], gamma=0.1),
]
# The official checkpoint retention (dino_4scale_internimage_{t,l}_1x_coco_*.py), as in
# ../default_runtime_det.py (mmdet's DINO config brings mmdet's runtime, so it is set here):
# a checkpoint after every epoch, the newest 3 kept, the best box mAP kept apart.
default_hooks = dict(
    checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='auto', rule='greater'))
