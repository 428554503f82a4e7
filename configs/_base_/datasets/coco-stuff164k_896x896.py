# COCO-Stuff164k (171 classes) with 896 x 896 crops, as the official Mask2Former-H stage 1
# (segmentation/configs/coco_stuff164k/mask2former_internimage_h_896_80k_cocostuff164k.py):
# random rescale of (3584, 896) by 0.5..2, crop (at most 75% of one class), flip, photometric
# distortion; test: resize to (3584, 896) keeping the ratio, then to the nearest multiple of
# 32 (ResizeToMultiple).
_base_ = 'mmseg::_base_/datasets/coco-stuff164k.py'

crop_size = (896, 896)
test_scale = (3584, 896)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
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
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
