# Tiny ADE20k Mask2Former for the end-to-end tests: the recipe of
# ../mask2former/mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896.py
# (official segmentation optimizer rules: layer-wise decay with Mask2Former's embeddings at
# the stem's rate, clipping at 0.1) with a tiny InternImage and a narrow head (64 channels,
# 4 heads, 20 queries) on 64 x 64 crops of the photo set of
# upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py. The backbone starts from the tiny M3I
# demo checkpoint instead of a COCO-Stuff segmenter.
_base_ = '../mask2former/mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896.py'
pretrained = 'work_dirs/m3i_internimage-tiny_1xb8-300it_photos/backbone.pth'
load_from = None
data_root = 'data/demo/ade'
crop_size = (64, 64)
width = 64

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16]),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(
        in_channels=[16, 32, 64, 128],
        feat_channels=width,
        out_channels=width,
        num_queries=20,
        pixel_decoder=dict(
            encoder=dict(layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=width, num_heads=4),
                ffn_cfg=dict(embed_dims=width, feedforward_channels=4 * width))),
            positional_encoding=dict(num_feats=width // 2)),
        positional_encoding=dict(num_feats=width // 2),
        transformer_decoder=dict(layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=width, num_heads=4),
            cross_attn_cfg=dict(embed_dims=width, num_heads=4),
            ffn_cfg=dict(embed_dims=width, feedforward_channels=4 * width))),
        train_cfg=dict(num_points=256)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
train_cfg = dict(max_iters=2, val_interval=2)
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=1))
randomness = dict(seed=0)
