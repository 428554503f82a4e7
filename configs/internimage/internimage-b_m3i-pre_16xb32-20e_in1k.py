# Fine-tune an M3I-pretrained InternImage-B on ImageNet-1k at 224 px: layer-wise lr decay 0.9,
# label smoothing 0.3, 20 epochs at batch 512, EMA, fp16 mixed precision (the official default
# fine-tuning recipe, classification numbering, DCN offsets at 0.1x); evaluation: short side
# 224, central 224 crop.
# The default checkpoint is the official ImageNet-1k InternImage-B (internimage_b_1k_224).
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/internimage_cls.py',
    '../_base_/datasets/imagenet_bs32_randaug_224.py',
    '../_base_/schedules/imagenet_bs512_adamw_layer-decay_20e.py',
    '../_base_/default_runtime_cls.py',
]
pretrained = 'm3i://internimage_b_1k_224'

model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=896),
    head=dict(in_channels=1344, loss=dict(label_smooth_val=0.3)))
