# Mask2Former with the M3I-pretrained InternImage-H on ADE20k: 896 x 896 crops, 160k iterations
# at batch 16 (one image per GPU). The head is the official InternImage-H one (1024-wide pixel
# decoder and transformer decoder, 32 heads, 200 queries). The official 62.5 mIoU single-scale
# first trains the whole segmenter on COCO-Stuff and then fine-tunes it on ADE20k at lr 1e-5;
# starting from a backbone checkpoint, the new head trains at mmseg's Mask2Former lr 1e-4 and
# the backbone at 0.1x with layer-wise lr decay 0.95 (1e-5 for its last block).
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = 'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['m3i_mm', 'mmdet.models'], allow_failed_imports=False)
pretrained = 'm3i://internimage_h_jointto22k_384'
crop_size = (896, 896)
width = 1024

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='m3i_mm.InternImage',
        arch='h',
        drop_path_rate=0.5,
        with_cp=True,
        out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(
        in_channels=[320, 640, 1280, 2560],
        feat_channels=width,
        out_channels=width,
        num_queries=200,
        pixel_decoder=dict(
            encoder=dict(layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=width, num_heads=32),
                ffn_cfg=dict(embed_dims=width, feedforward_channels=4 * width))),
            positional_encoding=dict(num_feats=width // 2)),
        positional_encoding=dict(num_feats=width // 2),
        transformer_decoder=dict(layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=width, num_heads=32),
            cross_attn_cfg=dict(embed_dims=width, num_heads=32),
            ffn_cfg=dict(embed_dims=width, feedforward_channels=4 * width)))))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(3584, 896), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(3584, 896), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

no_decay = dict(decay_mult=0.0)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.95,
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'query_embed': no_decay,
            'query_feat': no_decay,
            'level_embed': no_decay,
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
