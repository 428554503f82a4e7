# DINO (4 scales) with the M3I-pretrained InternImage-H trained on COCO alone from a backbone
# checkpoint, 12 epochs at batch 16 (one image per GPU). Not an official recipe: the official
# InternImage-H DINO fine-tunes an Objects365 detector
# (dino-4scale_internimage-h_o365-pre_64xb1-20k_coco.py), and the paper's 65.0 box AP (M3I) adds
# the CB-InternImage-H backbone (dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py). It
# uses the official InternImage DINO 1x recipe
# (dino-4scale_internimage-t_8xb2-layer-decay-12e_coco.py: multi-scale 480-800 with random
# crops, 500 warm-up iterations, lr x0.1 after epoch 11, clipping at 0.1) with the settings of
# the official H detector: drop path 0.5, activation checkpointing, weight decay 1e-4,
# layer-wise lr decay 0.94 (official detection numbering), the head's sampling offsets and
# reference points at 1e-3x lr, 1000 denoising queries, up to 300 detections.
# Point the backbone at your M3I checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/<m3i run>/backbone.pth
# (`pretrained=...` alone does not reach init_cfg: see configs/README.md).
_base_ = '../_base_/models/dino-4scale_internimage.py'
pretrained = 'm3i://internimage_h_jointto22k_384'

model = dict(
    backbone=dict(
        arch='h',
        layer_scale=None,
        drop_path_rate=0.5,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[640, 1280, 2560]),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=1000)),
    test_cfg=dict(max_per_img=300))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.94, offset_lr_scale=1e-3))
auto_scale_lr = dict(base_batch_size=16)
