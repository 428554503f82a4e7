# Fine-tune an M3I-pretrained InternImage-XL backbone on ImageNet-1k at 384 px with the official
# default fine-tuning recipe (classification/configs/internimage_xl_22kto1k_384.yaml):
# layer-wise lr decay 0.9 (official classification numbering), DCNv3 offset /
# centre-feature-scale projections at 0.1x lr, label smoothing 0.3, 20 epochs at batch 512, EMA
# 0.9999, fp16 mixed precision; evaluation: short side 384, central 384 crop. Only the backbone
# is loaded; neck and classifier start fresh. The default checkpoint is
# internimage_xl_22k_192to384; to fine-tune that official classifier as the official run does
# (whole checkpoint, 22k head cut to the ImageNet-1k rows) use
# internimage-xl_in22k-pre_32xb16-20e_in1k-384px.py.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/internimage_cls.py',
    '../_base_/datasets/imagenet_bs32_randaug_384.py',
    '../_base_/schedules/imagenet_bs512_adamw_layer-decay_20e.py',
    '../_base_/default_runtime_cls.py',
]
pretrained = 'm3i://internimage_xl_22k_192to384'

model = dict(
    backbone=dict(
        arch='xl',
        drop_path_rate=0.2,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=1536),
    head=dict(in_channels=2304, loss=dict(label_smooth_val=0.3)))
