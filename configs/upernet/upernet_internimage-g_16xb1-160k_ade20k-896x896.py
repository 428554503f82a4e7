# UperNet with InternImage-G on ADE20k: 896 x 896 crops, 160k iterations at batch 16, AdamW lr
# 2e-5, layer-wise lr decay 0.95, gradient clipping at 0.1, drop path 0.5: the official recipe
# (segmentation/configs/ade20k/upernet_internimage_g_896_160k_ade20k.py; the official README
# publishes no UperNet-G result) from internimage_g_pretrainto22k_384.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/upernet_internimage.py',
    '../_base_/datasets/ade20k_896x896.py',
    '../_base_/schedules/seg_adamw_poly_160k.py',
    'mmseg::_base_/default_runtime.py',
]
pretrained = 'm3i://internimage_g_pretrainto22k_384'
crop_size = (896, 896)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch='g',
        drop_path_rate=0.5,
        layer_scale=None,  # G has no layer scale (official config)
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=[512, 1024, 2048, 4096]),
    auxiliary_head=dict(in_channels=2048))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(
    optimizer=dict(lr=2e-5),
    paramwise_cfg=dict(layer_decay_rate=0.95),
    clip_grad=dict(max_norm=0.1, norm_type=2))
