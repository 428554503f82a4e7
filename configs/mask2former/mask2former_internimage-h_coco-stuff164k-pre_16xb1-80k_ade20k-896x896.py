# Mask2Former-H, stage 2 of the official two-stage ADE20k recipe: the whole COCO-Stuff164k
# segmenter of stage 1 (its 171-class classifier dropped) fine-tuned on ADE20k, 896 x 896
# crops, 80k iterations at batch 16, AdamW lr 1e-5, weight decay 0.05, layer-wise lr decay
# 0.95 (official segmentation numbering), gradient clipping at 0.1, poly decay with 1500
# warm-up iterations; single-scale test: the official recipe
# (segmentation/configs/ade20k/mask2former_internimage_h_896_80k_cocostuff2ade20k_ss.py;
# official 62.6 mIoU single-scale, 62.9 with the _ms-flip-test variant).
# Starts from the official stage-1 checkpoint (`load_from`); after your own stage 1, use
#   --cfg-options load_from=work_dirs/<stage-1 run>/iter_80000.pth
_base_ = [
    '../_base_/models/mask2former_internimage.py',
    '../_base_/datasets/ade20k_896x896.py',
    '../_base_/schedules/seg_adamw_poly_160k.py',
    'mmseg::_base_/default_runtime.py',
]
pretrained = None  # the whole segmenter starts from stage 1 (load_from)
load_from = 'm3i://mask2former_internimage_h_896_80k_cocostuff164k'
max_iters = 80000

train_dataloader = dict(batch_size=1)
optim_wrapper = dict(
    optimizer=dict(lr=1e-5),
    paramwise_cfg=dict(layer_decay_rate=0.95),
    clip_grad=dict(max_norm=0.1, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters),
]
# official: evaluation every 2000 iterations (best mIoU kept), a checkpoint every 1000 (only
# the newest kept; ../_base_/schedules/seg_adamw_poly_160k.py)
train_cfg = dict(max_iters=max_iters, val_interval=2000)
