# UperNet with InternImage-L on ADE20k: 640 x 640 crops, 160k iterations at batch 16, AdamW lr
# 2e-5, layer-wise lr decay 0.94, gradient clipping at 0.1, drop path 0.4: the official recipe
# (segmentation/configs/ade20k/upernet_internimage_l_640_160k_ade20k.py; official 53.9 / 54.1
# mIoU single / multi-scale (the multi-scale test: the _ms-flip-test variant)) from the
# ImageNet-22k internimage_l_22k_192to384.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/upernet_internimage.py',
    '../_base_/datasets/ade20k_640x640.py',
    '../_base_/schedules/seg_adamw_poly_160k.py',
    'mmseg::_base_/default_runtime.py',
]
pretrained = 'm3i://internimage_l_22k_192to384'
crop_size = (640, 640)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='l',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=[160, 320, 640, 1280]),
    auxiliary_head=dict(in_channels=640))
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    optimizer=dict(lr=2e-5),
    paramwise_cfg=dict(layer_decay_rate=0.94),
    clip_grad=dict(max_norm=0.1, norm_type=2))
