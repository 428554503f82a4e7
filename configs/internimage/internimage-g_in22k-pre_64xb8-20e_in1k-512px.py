# Fine-tune the ImageNet-22k InternImage-G (internimage_g_pretrainto22k_384) on ImageNet-1k at
# 512 px: the whole 22k classifier is loaded (backbone, neck and head) and its 21841-way
# classifier is cut to the 1000 ImageNet-1k rows (m3i_mm/zoo/data/imagenet22k_to_1k.txt, the
# official map22kto1k), as the official fine-tuning does; 20 epochs at batch 512 (64 GPUs x 8),
# AdamW lr 2e-5, no layer-wise decay (the without_lr_decay recipe, which produced the released
# numbers), label smoothing 0.3, RandAugment, no mixup/cutmix/erasing, EMA 0.9999, fp16 mixed
# precision; evaluation: short side 512, central 512 crop. The official recipe
# (classification/configs/without_lr_decay/internimage_g_22kto1k_512.yaml; released 90.1 top-1).
_base_ = [
    '../_base_/models/internimage_cls.py',
    '../_base_/datasets/imagenet_bs8_randaug_512.py',
    '../_base_/schedules/imagenet_bs512_adamw_20e.py',
    '../_base_/default_runtime_cls.py',
]
pretrained = 'm3i://internimage_g_pretrainto22k_384'

model = dict(
    backbone=dict(
        arch='g',
        out_indices=(2, 3),
        drop_path_rate=0.4,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='m3i_mm.InternImageCLIPNeck',
        in_channels=(2048, 4096),
        embed_dim=1024,
        out_dim=768,
        num_heads=16,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='neck.')),
    head=dict(
        in_channels=768,
        loss=dict(label_smooth_val=0.3),
        init_cfg=dict(_delete_=True, type='m3i_mm.PretrainedImageNet22kTo1k',
                      checkpoint=pretrained, prefix='head.')))
