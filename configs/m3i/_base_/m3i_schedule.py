# [A] AdamW with SiameseIM/MAE-style betas and weight decay (m3i_method.md section 5), bf16
# autocast, grad clipping. Configs set the lr (scaled to their batch), the warm-up + cosine
# `param_scheduler` and `train_cfg` (iteration-based: the multi-source sampler is infinite).
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05),
    clip_grad=dict(max_norm=3.0),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0,
        custom_keys={'mask_token': dict(decay_mult=0.0), 'image_embed': dict(decay_mult=0.0),
                     'query_token': dict(decay_mult=0.0),
                     'semantic_token': dict(decay_mult=0.0)}))
