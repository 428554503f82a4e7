# Linear probing: frozen InternImage-T (stem and all stages), global average pooling of the
# last stage, a BatchNorm without affine parameters (MAE's linear-probe recipe) and a linear
# classifier. Only the classifier is trained.
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='m3i_mm.InternImage', arch='t', out_indices=(3, ), frozen_stages=3),
    neck=[
        dict(type='GlobalAveragePooling'),
        dict(type='ClsBatchNormNeck', input_features=512),
    ],
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.01),
        topk=(1, 5)))
