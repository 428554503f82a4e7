# Detection 1x (12 epochs, lr x0.1 after epochs 8 and 11, 500 linear warm-up iterations from
# 0.001x) with AdamW, lr 1e-4 at batch 16, weight decay 0.05, the official detection
# optimizer rules (detection/mmcv_custom/custom_layer_decay_optimizer_constructor.py: no
# weight decay on biases, 1-D and norm parameters; detection layer numbering, in which the
# last backbone block trains at rate**1 and the stem at rate**(depth+1)). Layer-wise decay
# is off (rate 1.0) as in the official T/S/B detectors; configs raise it where the official
# recipe does. fp32, as the official detectors (their fp16 line is commented out).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0, layer_decay_numbering='detection'))
