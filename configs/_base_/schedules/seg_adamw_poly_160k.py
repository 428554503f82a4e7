# Segmentation: 160k iterations with AdamW, lr 6e-5 at batch 16 (T/S/B; configs of bigger models
# lower it), weight decay 0.05 (none on biases and 1-D parameters), 1500 linear warm-up
# iterations, then polynomial decay (power 1) to 0. Layer-wise decay off (rate 1.0) as in
# the official T/S/B segmenters.
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]
