# DINO (4 scales) with InternImage-XL on COCO, 12 epochs at batch 16. The official repository
# has no DINO-XL config (the paper's 64.2 box AP adds Objects365 pre-training); this is the
# official DINO-L "0.1x backbone lr" recipe
# (dino-4scale_internimage-l_8xb2-backbone-0.1x-12e_coco.py: lr 1e-4, backbone at 0.1x, weight
# decay 0.05, clipping at 0.1, 500 warm-up iterations, padding to 32, no negative crops) with
# the InternImage-XL backbone settings of the official XL detectors (drop path 0.4, layer scale
# 1.0), from the ImageNet-22k internimage_xl_22k_192to384.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = './dino-4scale_internimage-l_8xb2-backbone-0.1x-12e_coco.py'
pretrained = 'm3i://internimage_xl_22k_192to384'

model = dict(
    backbone=dict(
        arch='xl',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[384, 768, 1536]))
