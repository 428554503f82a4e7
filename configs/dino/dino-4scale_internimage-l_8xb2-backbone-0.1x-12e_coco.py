# DINO (4 scales) with InternImage-L on COCO, 12 epochs at batch 16, AdamW lr 1e-4 with the
# backbone at 0.1x, weight decay 0.05 on every parameter (mmengine's default constructor with
# only `custom_keys`, as the official file with mmcv's), gradient clipping at 0.1, up to 300
# detections: the official recipe
# (detection/configs/coco/dino_4scale_internimage_l_1x_coco_0.1x_backbone_lr.py; official 57.6
# box AP) from the ImageNet-22k internimage_l_22k_192to384.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = './dino-4scale_internimage-l_8xb2-layer-decay-12e_coco.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
