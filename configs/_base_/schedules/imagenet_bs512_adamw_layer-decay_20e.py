# ImageNet-1k fine-tuning, the official default L/XL/H/G recipe (configs/internimage_*_22kto1k
# _*.yaml; used here for every size): AdamW, lr 2e-5 at batch 512, weight decay 0.05 (none on
# biases and 1-D parameters), layer-wise lr decay 0.9 with the official classification
# numbering, DCNv3 offset and centre-feature-scale projections at 0.1x lr (DCN_LR_MUL; not the
# mask projection), 2 linear warm-up epochs from 0, cosine to 0 over 20 epochs, gradient
# clipping at 5, EMA 0.9999 of weights and BatchNorm statistics.
# The lr follows timm's CosineLRScheduler as the official lr_scheduler.py builds it: the
# cosine runs from step 0 over all 20 epochs and the warm-up replaces it for the first 2. Here
# both schedulers start at step 0 and multiply: after the warm-up the lr equals timm's (to
# 1e-13: with MIN_LR 0 the product is exact); during it, it is the warm-up ramp times the
# cosine (at most 2.4 % lower), and the ramp starts at 1e-3 x lr, not 0 (mmengine's LinearLR
# needs a start factor > 0) (tests/configs/test_timm_fidelity.py).
# Mixed precision (fp16 autocast, dynamic loss scale) as the official default: main.py's
# --amp-opt-level defaults to O1 and overrides the YAML's AMP_OPT_LEVEL: O0. AmpOptimWrapper
# needs a GPU; for fp32 (or a CPU) use --cfg-options optim_wrapper.type=OptimWrapper.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9, layer_decay_numbering='classification',
                       dcn_lr_mult=0.1),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0., by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=512)
# timm's ModelEma (the official EMA) averages every entry of the state dict, BatchNorm
# running statistics included: update_buffers=True.
custom_hooks = [dict(type='EMAHook', momentum=1e-4, update_buffers=True,
                     priority='ABOVE_NORMAL')]
