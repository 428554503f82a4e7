# Detection 1x (12 epochs, lr x0.1 after epochs 8 and 11, 500 warm-up iterations) with AdamW,
# lr 1e-4 at batch 16, weight decay 0.05 (none on biases and 1-D parameters). Layer-wise lr
# decay is off (rate 1.0) as in the official T/S/B detectors; configs raise it where the
# official recipe does.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0))
