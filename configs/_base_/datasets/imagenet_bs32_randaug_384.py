# ImageNet-1k at 384 px for fine-tuning (L/XL): random resized crop, flip, RandAugment (m9,
# mstd 0.5, increasing). Evaluation resizes the whole image to 384 x 384 (bicubic).
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_384.py'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=384, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic')),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=32)
test_dataloader = val_dataloader
