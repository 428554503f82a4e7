# Cascade Mask R-CNN + FPN with InternImage-L, COCO 3x (36 epochs, multi-scale 480-800 with
# random crops) at batch 64 and lr 2e-4, layer-wise lr decay 0.9 (official detection
# numbering), EMA of the weights: the official recipe (box / mask AP 56.1 / 48.5 from the
# ImageNet-22k internimage_l_22k_192to384).
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/cascade-mask-rcnn_internimage_fpn.py',
    '../_base_/datasets/coco_instance_ms-crop.py',
    '../_base_/schedules/det_adamw_3x.py',
    '../_base_/default_runtime_det.py',
]
pretrained = 'm3i://internimage_l_22k_192to384'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[160, 320, 640, 1280]))
# offset_lr_scale=0.01 as in the official file; it scales only deformable-attention
# sampling_offsets/reference_points, which this model does not have (the official rule never
# touches the DCNv3 offsets of the backbone), so it changes nothing.
optim_wrapper = dict(
    optimizer=dict(lr=2e-4), paramwise_cfg=dict(layer_decay_rate=0.9, offset_lr_scale=0.01))
auto_scale_lr = dict(base_batch_size=64)
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=1e-4, update_buffers=True,
         priority=49)
]
