# A seconds-long mmpretrain classification job for tests of the tools (train/test/resume/dist).
# Run it from a directory holding data/tiny_cls (an ImageNet-style class folder).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)
data_root = 'data/tiny_cls'
num_classes = 4

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(
        num_classes=num_classes, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(type='ResNet', depth=18, num_stages=2, strides=(1, 2), dilations=(1, 1),
                  out_indices=(1, ), base_channels=8,
                  stem_channels=8, norm_cfg=dict(type='BN')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=16,
              loss=dict(type='CrossEntropyLoss'), topk=(1, )))

pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(type='CustomDataset', data_root=data_root, pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(type='CustomDataset', data_root=data_root, pipeline=pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=12)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=12, val_interval=1000)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=6, by_epoch=False, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_processor = dict(window_size=1, by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
