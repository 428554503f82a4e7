# Mask2Former-H trained on ADE20k alone from a backbone checkpoint (no COCO-Stuff stage): not
# an official recipe (the official 62.6 mIoU goes through COCO-Stuff164k first: see
# mask2former_internimage-h_16xb1-80k_coco-stuff164k-896x896.py and its stage 2). It combines
# the official H settings: the head and optimizer rules of the official Mask2Former-H (lr 2e-5
# and layer-wise lr decay 0.95 with the segmentation numbering, as the stage that starts from
# a backbone checkpoint; gradient clipping at 0.1, as the ADE20k stage) with the UperNet-H
# schedule (160k iterations at batch 16, poly decay, 1500 warm-up iterations).
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/mask2former_internimage.py',
    '../_base_/datasets/ade20k_896x896.py',
    '../_base_/schedules/seg_adamw_poly_160k.py',
    'mmseg::_base_/default_runtime.py',
]
pretrained = 'm3i://internimage_h_jointto22k_384'

model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(
    optimizer=dict(lr=2e-5),
    paramwise_cfg=dict(layer_decay_rate=0.95),
    clip_grad=dict(max_norm=0.1, norm_type=2))
