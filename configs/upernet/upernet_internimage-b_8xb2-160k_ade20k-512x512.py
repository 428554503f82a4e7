# UperNet with InternImage-B on ADE20k: 512 x 512 crops, 160k iterations at batch 16, AdamW lr
# 6e-5, drop path 0.4: the official recipe
# (segmentation/configs/ade20k/upernet_internimage_b_512_160k_ade20k.py; official 50.8 / 51.3
# mIoU single / multi-scale (the multi-scale test: the _ms-flip-test variant)) from the
# ImageNet-1k internimage_b_1k_224.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/upernet_internimage.py',
    '../_base_/datasets/ade20k_512x512.py',
    '../_base_/schedules/seg_adamw_poly_160k.py',
    'mmseg::_base_/default_runtime.py',
]
pretrained = 'm3i://internimage_b_1k_224'
crop_size = (512, 512)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=[112, 224, 448, 896]),
    auxiliary_head=dict(in_channels=448))
train_dataloader = dict(batch_size=2)
