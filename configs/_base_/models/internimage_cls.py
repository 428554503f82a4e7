# mmpretrain ImageClassifier with InternImage-T and the official T-XL head:
# 1x1 conv to 1.5x width + BN + GELU + pooling (InternImageConvNeck), then a linear classifier.
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='m3i_mm.InternImage', arch='t', out_indices=(3, )),
    neck=dict(type='m3i_mm.InternImageConvNeck', in_channels=512),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02),
        topk=(1, 5)))
