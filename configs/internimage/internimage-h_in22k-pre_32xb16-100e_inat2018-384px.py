# Fine-tune the M3I-pretrained InternImage-H ("Joint 427M -> IN-22K",
# internimage_h_jointto22k_384) on iNaturalist 2018 at 384 px, with each observation's month
# and location: the official recipe
# (classification/configs/inaturalist2018/internimage_h_22ktoinat18_384.yaml, model
# `intern_image_meta_former`; released 92.6 top-1 on val, zoo entry
# internimage_h_22ktoinat18_384). Backbone and CLIP-projector neck from the 22k classifier; a
# fresh 8142-way classifier (RAND_INIT_FT_HEAD: the official initialisation scaled by 1e-3)
# plus the metadata branch (m3i_mm.MetadataLinearClsHead); 100 epochs at batch 512, AdamW
# lr 2e-5, weight decay 0.05, no warm-up, cosine to 0, no layer-wise decay, no EMA, drop path
# 0.6, label smoothing 0.3, RandAugment, no mixup/cutmix/erasing, gradient clipping at 5, fp16
# mixed precision (main.py's --amp-opt-level O1 overrides the yaml's O0), activation
# checkpointing. The yaml names no GPU count: batch 512 (32 x 16) is assumed from its lr
# comment (`BASE_LR: 2e-05 # 512`) and the H ImageNet recipe.
_base_ = [
    '../_base_/models/internimage_cls.py',
    '../_base_/datasets/inat2018_bs16_randaug_384.py',
    '../_base_/schedules/imagenet_bs512_adamw_20e.py',
    '../_base_/default_runtime_cls.py',
]
pretrained = 'm3i://internimage_h_jointto22k_384'

model = dict(
    backbone=dict(
        arch='h',
        out_indices=(2, 3),
        drop_path_rate=0.6,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='m3i_mm.InternImageCLIPNeck',
        in_channels=(1280, 2560),
        embed_dim=1024,
        out_dim=768,
        num_heads=16,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='neck.')),
    head=dict(
        type='m3i_mm.MetadataLinearClsHead',
        num_classes=8142,
        in_channels=768,
        metadata=dict(temporal_info=4, spatial_info=3),
        metadata_channels=64,
        loss=dict(label_smooth_val=0.3),
        # the official initialisation (trunc. normal 0.02 on every Linear) with the classifier
        # scaled by 1e-3 (utils.load_pretrained, RAND_INIT_FT_HEAD: the 21841-way head does
        # not fit and is not loaded)
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02,
                      override=dict(type='TruncNormal', name='fc', std=0.02 * 1e-3))))

param_scheduler = [  # WARMUP_EPOCHS 0: timm's cosine from step 0 to MIN_LR 0
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=0, end=100,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=100)
custom_hooks = []  # TRAIN.EMA.ENABLE: false
