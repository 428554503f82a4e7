# Linear probing of an M3I-pretrained InternImage-S on ImageNet-1k at 224 px: frozen
# backbone, pooled last-stage features (640-d), BatchNorm without affine, linear classifier.
# The default checkpoint is the zoo entry internimage_s_1k_224.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = [
    '../_base_/models/internimage_linear-probe.py',
    '../_base_/datasets/imagenet_bs256_linear-probe_224.py',
    '../_base_/schedules/imagenet_bs2048_lars_linear-probe_90e.py',
    '../_base_/default_runtime_cls.py',
]
pretrained = 'm3i://internimage_s_1k_224'

model = dict(
    backbone=dict(
        arch='s', init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=[
        dict(type='GlobalAveragePooling'),
        dict(type='ClsBatchNormNeck', input_features=640),
    ],
    head=dict(in_channels=640))
