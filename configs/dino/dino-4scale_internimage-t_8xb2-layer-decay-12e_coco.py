# DINO (4 scales) with InternImage-T on COCO, 12 epochs at batch 16, AdamW lr 1e-4, weight decay
# 1e-4, layer-wise lr decay 0.9 (official detection numbering), gradient clipping at 0.1: the
# official recipe (detection/configs/coco/dino_4scale_internimage_t_1x_coco_layer_wise_lr.py;
# official 53.9 box AP) from the ImageNet-1k internimage_t_1k_224.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = '../_base_/models/dino-4scale_internimage.py'
pretrained = 'm3i://internimage_t_1k_224'

model = dict(
    backbone=dict(
        arch='t',
        drop_path_rate=0.2,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512]))
