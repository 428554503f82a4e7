# DINO (4 scales) with the M3I-pretrained InternImage-H on COCO, 12 epochs at batch 16 (one
# image per GPU). mmdet's DINO recipe (multi-scale 480-800 with random crops, lr 1e-4,
# weight decay 1e-4, gradient clipping at 0.1, lr x0.1 after epoch 11) with the backbone
# settings of the official InternImage-H DINO (drop path 0.5, activation checkpointing,
# layer-wise lr decay 0.94) and DCNv3 offsets/masks at 0.1x lr. The paper's 65.0 box AP
# (M3I) adds Objects365 pre-training and a CBNet-style doubled backbone.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)
pretrained = 'm3i://internimage_h_jointto22k_384'

model = dict(
    backbone=dict(
        _delete_=True,
        type='m3i_mm.InternImage',
        arch='h',
        drop_path_rate=0.5,
        with_cp=True,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[640, 1280, 2560]))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(
    constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.94, dcn_lr_mult=0.1))
