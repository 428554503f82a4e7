# ADE20k with 896 x 896 crops (H/G), as the official segmentation configs
# (segmentation/configs/ade20k/upernet_internimage_*_896_160k_ade20k.py): random rescale of
# (3584, 896) by 0.5..2, crop (at most 75% of one class), flip, photometric distortion.
# Test: resize to (3584, 896) keeping the ratio, then to the nearest multiple of 32
# (ResizeToMultiple, as the official test pipeline; no padding).
# `tta_pipeline`: the multi-scale + flip test of the official README "ms" numbers: the
# official ratios 0.5..1.75 of (3584, 896) (mmcv MultiScaleFlipAug semantics), each
# resized to a multiple of 32, with and without horizontal flip.
_base_ = 'mmseg::_base_/datasets/ade20k.py'

crop_size = (896, 896)
test_scale = (3584, 896)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=test_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(test_scale[0] * r), int(test_scale[1] * r)),
                  keep_ratio=True) for r in img_ratios],
            [dict(type='ResizeToMultiple', size_divisor=32)],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
