# iNaturalist 2018 (8142 species) at 384 px with each observation's month and location: the
# official transforms (classification/dataset/build.py: the same as for ImageNet at 384 px,
# imagenet_bs32_randaug_384.py: random resized crop, flip, RandAugment m9 mstd 0.5, no random
# erasing, bicubic; evaluation: short side 384, central 384 crop), and the metadata of
# classification/dataset/cached_image_folder.py (INat18ParserCephImage) packed for
# m3i_mm.MetadataLinearClsHead.
# data/inat2018 holds train2018.json, val2018.json, their *_locations.json and the image
# folders, as released (https://github.com/visipedia/inat_comp/tree/master/2018).
_base_ = './imagenet_bs32_randaug_384.py'

metadata_keys = ('temporal_info', 'spatial_info')
data_preprocessor = dict(num_classes=8142)
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
    dict(type='PackInputs', algorithm_keys=metadata_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=384, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=384),
    dict(type='PackInputs', algorithm_keys=metadata_keys),
]
train_dataloader = dict(
    batch_size=16,
    dataset=dict(_delete_=True, type='m3i_mm.INaturalist2018', data_root='data/inat2018',
                 split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    dataset=dict(_delete_=True, type='m3i_mm.INaturalist2018', data_root='data/inat2018',
                 split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
