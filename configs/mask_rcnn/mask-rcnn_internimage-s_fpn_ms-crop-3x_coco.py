# Mask R-CNN + FPN with InternImage-S, COCO 3x (36 epochs, multi-scale 480-800 with random
# crops), batch 16: the official recipe (box / mask AP 49.7 / 44.5 from the
# ImageNet-1k internimage_s_1k_224).
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/mask-rcnn_internimage_fpn.py',
    '../_base_/datasets/coco_instance_ms-crop.py',
    '../_base_/schedules/det_adamw_3x.py',
    '../_base_/default_runtime_det.py',
]
pretrained = 'm3i://internimage_s_1k_224'

model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[80, 160, 320, 640]))
