# ImageNet-1k at 224 px for training from scratch (official classification/config.py
# defaults): random resized crop, flip, RandAugment (m9, mstd 0.5, increasing), random
# erasing 0.25 (bicubic everywhere). Evaluation as the official build_transform with
# TEST.CROP: resize the short side to 224, then the central 224 x 224 crop (crop ratio 1.0).
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=224, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
