# Segmentation: 160k iterations with AdamW, lr 6e-5 at batch 16 (T/S/B; configs of bigger
# models lower it), weight decay 0.05, polynomial decay (power 1) to 0 over the whole run with
# a linear warm-up factor (1e-6 -> 1) over the first 1500 iterations multiplied in, as mmcv's
# poly policy with linear warm-up computes it; the official segmentation optimizer rules
# (segmentation/mmcv_custom/custom_layer_decay_optimizer_constructor.py: no weight decay on
# biases, 1-D and norm parameters; segmentation layer numbering). Layer-wise decay off (rate
# 1.0) as in the official T/S/B segmenters. fp32, as the official segmenters.
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0, layer_decay_numbering='segmentation'))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=160000),
]
# The official checkpoint retention of the segmenters (segmentation/configs/ade20k/
# upernet_internimage_*_160k_ade20k.py: `checkpoint_config = dict(by_epoch=False,
# interval=1000, max_keep_ckpts=1)`, `evaluation = dict(interval=16000, metric='mIoU',
# save_best='mIoU')`): a checkpoint every 1000 iterations, only the newest kept, evaluation
# every 16000 iterations (mmseg's schedule_160k), the best mIoU kept apart.
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=1000, max_keep_ckpts=1, save_best='mIoU'))
