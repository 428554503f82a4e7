# Mask2Former-H, stage 1 of the official two-stage ADE20k recipe: COCO-Stuff164k (171 classes),
# 896 x 896 crops, 80k iterations at batch 16 (one image per GPU), AdamW lr 2e-5, weight decay
# 0.05, layer-wise lr decay 0.95 (official segmentation numbering: Mask2Former's query, level
# and class/mask embeddings at the stem's rate), no gradient clipping, poly decay with 1500
# warm-up iterations: the official recipe
# (segmentation/configs/coco_stuff164k/mask2former_internimage_h_896_80k_cocostuff164k.py;
# official 52.6 / 52.8 mIoU single / multi-scale) from the M3I-pretrained
# internimage_h_jointto22k_384. Stage 2:
# mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896.py.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/mask2former_internimage.py',
    '../_base_/datasets/coco-stuff164k_896x896.py',
    '../_base_/schedules/seg_adamw_poly_160k.py',
    'mmseg::_base_/default_runtime.py',
]
pretrained = 'm3i://internimage_h_jointto22k_384'
num_classes = 171
max_iters = 80000

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(
        num_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=2e-5), paramwise_cfg=dict(layer_decay_rate=0.95))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters),
]
# official: evaluation every 8000 iterations (best mIoU kept), a checkpoint every 1000 (only
# the newest kept; ../_base_/schedules/seg_adamw_poly_160k.py)
train_cfg = dict(max_iters=max_iters, val_interval=8000)
