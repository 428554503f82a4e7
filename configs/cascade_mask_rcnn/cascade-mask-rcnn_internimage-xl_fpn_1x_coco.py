# Cascade Mask R-CNN + FPN with InternImage-XL, COCO 1x (12 epochs, single scale), batch 16,
# layer-wise lr decay 0.94 (official detection numbering): the official recipe (box / mask AP
# 55.3 / 48.1 from the ImageNet-22k internimage_xl_22k_192to384).
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/cascade-mask-rcnn_internimage_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/det_adamw_1x.py',
    '../_base_/default_runtime_det.py',
]
pretrained = 'm3i://internimage_xl_22k_192to384'

model = dict(
    backbone=dict(
        arch='xl',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.94))
