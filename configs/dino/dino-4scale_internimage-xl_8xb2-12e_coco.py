# DINO (4 scales) with InternImage-XL on COCO, 12 epochs at batch 16 (mmdet's DINO recipe:
# multi-scale 480-800 with random crops, lr 1e-4 with the backbone at 0.1x, gradient clipping
# at 0.1, lr x0.1 after epoch 11). Backbone settings and weight decay 0.05 follow the
# official InternImage DINO detectors. The paper's 64.2 box AP adds Objects365 pre-training.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)
pretrained = 'm3i://internimage_xl_22k_192to384'

model = dict(
    backbone=dict(
        _delete_=True,
        type='m3i_mm.InternImage',
        arch='xl',
        layer_scale=1.0,
        drop_path_rate=0.4,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[384, 768, 1536]))
optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
