# DINO (4 scales) with InternImage-L on COCO, 12 epochs at batch 16, AdamW lr 1e-4, weight decay
# 1e-4, layer-wise lr decay 0.9 (official detection numbering), gradient clipping at 0.1, up to
# 300 detections: the official recipe
# (detection/configs/coco/dino_4scale_internimage_l_1x_coco_layer_wise_lr.py; official 57.5 box
# AP) from the ImageNet-22k internimage_l_22k_192to384.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = '../_base_/models/dino-4scale_internimage.py'
pretrained = 'm3i://internimage_l_22k_192to384'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.4,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[320, 640, 1280]),
    test_cfg=dict(max_per_img=300))
