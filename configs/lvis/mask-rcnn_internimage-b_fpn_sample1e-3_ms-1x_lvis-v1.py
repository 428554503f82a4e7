# Mask R-CNN + FPN with InternImage-B on LVIS v1: repeat-factor sampling (threshold 1e-3),
# multi-scale 640-800, 12 epochs at batch 16 (mmdet's LVIS recipe) with the AdamW recipe of the
# COCO detectors; up to 300 detections per image, LVIS metric (bbox, segm).
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/mask-rcnn_internimage_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    '../_base_/schedules/det_adamw_1x.py',
    '../_base_/default_runtime_det.py',
]
pretrained = 'm3i://internimage_b_1k_224'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[112, 224, 448, 896]),
    roi_head=dict(bbox_head=dict(num_classes=1203), mask_head=dict(num_classes=1203)),
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300)))

# m3i_mm's LVISMetric = mmdet's, working with the PyPI lvis package on numpy >= 1.24
val_evaluator = dict(type='m3i_mm.LVISMetric')
test_evaluator = val_evaluator
