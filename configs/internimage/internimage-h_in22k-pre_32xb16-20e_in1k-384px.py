# Fine-tune the M3I-pretrained InternImage-H ("Joint 427M -> IN-22K",
# internimage_h_jointto22k_384) on ImageNet-1k at 384 px: the whole 22k classifier is loaded
# (backbone, neck and head) and its 21841-way classifier is cut to the 1000 ImageNet-1k rows
# (m3i_mm/zoo/data/imagenet22k_to_1k.txt, the official map22kto1k), as the official fine-tuning
# does; 20 epochs at batch 512 (32 GPUs x 16), AdamW lr 2e-5, layer-wise lr decay 0.9 (official
# classification numbering) and the DCNv3 offset / centre-feature-scale projections at 0.1x lr
# (the official file exists only in this layer-decay form), label smoothing 0.3, RandAugment, no
# mixup/cutmix/erasing, EMA 0.9999, fp16 mixed precision; evaluation: short side 384, central
# 384 crop. The official recipe (classification/configs/internimage_h_22kto1k_384.yaml; no
# released checkpoint).
_base_ = [
    '../_base_/models/internimage_cls.py',
    '../_base_/datasets/imagenet_bs32_randaug_384.py',
    '../_base_/schedules/imagenet_bs512_adamw_layer-decay_20e.py',
    '../_base_/default_runtime_cls.py',
]
pretrained = 'm3i://internimage_h_jointto22k_384'

model = dict(
    backbone=dict(
        arch='h',
        out_indices=(2, 3),
        drop_path_rate=0.2,
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
        in_channels=768,
        loss=dict(label_smooth_val=0.3),
        init_cfg=dict(_delete_=True, type='m3i_mm.PretrainedImageNet22kTo1k',
                      checkpoint=pretrained, prefix='head.')))
train_dataloader = dict(batch_size=16)
val_dataloader = dict(batch_size=16)
test_dataloader = val_dataloader
