# ImageNet-1k from scratch, the official T/S/B recipe (classification/config.py defaults with
# configs/internimage_{t,s,b}_1k_224.yaml, identical to their without_lr_decay versions):
# AdamW, lr 5e-4 per 512 images (4e-3 at batch 4096), weight decay 0.05 (none on biases and
# 1-D parameters), 20 linear warm-up epochs from 5e-7 per 512, cosine to 5e-6 per 512 over
# 300 epochs, gradient clipping at 5, EMA 0.9999 of weights and BatchNorm statistics, no
# layer-wise decay.
# The lr follows timm's CosineLRScheduler as the official lr_scheduler.py builds it
# (t_initial = all steps, warmup_t = the warm-up steps, warmup_prefix False): the cosine runs
# from step 0 over the whole run and the linear warm-up replaces it for the first 20 epochs.
# Here both schedulers start at step 0 and multiply: after the warm-up the lr equals timm's to
# 0.011 %; during it, it is the warm-up ramp times the cosine (at most 1.1 % lower)
# (tests/configs/test_timm_fidelity.py).
# Mixed precision (fp16 autocast, dynamic loss scale) as the official default: main.py's
# --amp-opt-level defaults to O1 and overrides the YAML. AmpOptimWrapper needs a GPU; for
# fp32 (or a CPU) use --cfg-options optim_wrapper.type=OptimWrapper.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=1.0, layer_decay_numbering='classification'),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=4e-5, by_epoch=True, begin=0, end=300,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=4096)
# timm's ModelEma (the official EMA) averages every entry of the state dict, BatchNorm
# running statistics included: update_buffers=True.
custom_hooks = [dict(type='EMAHook', momentum=1e-4, update_buffers=True,
                     priority='ABOVE_NORMAL')]
