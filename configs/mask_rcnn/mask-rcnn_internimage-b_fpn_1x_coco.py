# Mask R-CNN + FPN with InternImage-B, COCO 1x (12 epochs, single scale 1333 x 800), batch 16:
# the official recipe (box / mask AP 48.8 / 44.0 from the ImageNet-1k internimage_b_1k_224).
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/mask-rcnn_internimage_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/det_adamw_1x.py',
    '../_base_/default_runtime_det.py',
]
pretrained = 'm3i://internimage_b_1k_224'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[112, 224, 448, 896]))
