# M3I pre-training of InternImage-H as in the paper: 427M public image-text pairs
# (LAION-400M + YFCC-15M + CC12M), 30 epochs, captions as the only annotation [V,
# m3i_method.md section 1]. Everything else is an assumption of this project [A]
# (m3i_mm/models/selfsup/m3i.py):
# [A] data: source ratios proportional to the source sizes (400 : 15 : 12), mixed batches,
#     224 px SiameseIM views; batch 4096 (64 GPUs x 64).
# [A] mixing: two images per input canvas (the paper's [V]); image b of canvas i is sample
#     (i + 1) % N of the batch (pairing rule); 0.5 of the 16-pixel patches show b (mixing
#     ratio), in BEiT/SiameseIM blocks of >= 16 patches, aspect 0.3-3.3 (block shape).
# [A] model: the official H classifier's stage-3/4 fusion (dcnv3_head_x3/x4: stride-16 tokens
#     of width 1024; very likely the pre-training interface, not stated); decoder 6 x 768
#     (12 heads) over encoder tokens plus dense queries (a's same view, b's other view at
#     SiameseIM relative positions) and one semantic query per image.
# [A] targets: dense = EMA copy of backbone + fusion (same_view_target='feature'), EMA
#     momentum cosine 0.995 -> 1 (SiameseIM's schedule, ema_momentum 0.005).
# [A] loss: w_same * L_dense(a) + w_cross * L_dense(b) + w_sem * (L_sem(a) + L_sem(b)), weights
#     1 / 1 / 1, the semantic term counted for both images; dense terms MSE + UniGrad
#     (weight 0.02, SiameseIM's neg_weight); captions: symmetric InfoNCE over the global batch.
# [A] text encoder: the CLIP ViT-B/32 text tower (openai/clip-vit-base-patch32), loaded with
#     OpenAI's pretrained weights and trained (HFTextEncoder frozen=False), max 77 tokens. The
#     caption target is then partly distilled from CLIP, not learnt from the captions alone;
#     for a text encoder trained from scratch, use
#     text_encoder=dict(type='m3i_mm.HFTextEncoder', ..., from_scratch=True)
#     (HFTextEncoder(from_scratch=True): the same architecture, randomly initialised).
# [A] optimisation: AdamW betas (0.9, 0.95), weight decay 0.05, lr 1.5e-4 per 256 images,
#     gradient clipping at 3.0, linear warm-up over 10000 iterations from 1e-4 x lr, then
#     cosine to 1e-6 over the 30 epochs; drop path 0.2.
# 1.08B parameters: FlexibleRunner with FSDP (FSDP2 via m3i_mm.FSDP2Strategy), bf16
# parameters/compute with fp32 gradient reduction, activation checkpointing per block.
_base_ = ['./_base_/m3i_runtime.py', './_base_/m3i_views.py']

samples_per_epoch = 427_000_000
batch_size = 64 * 64
epochs = 30
total_iters = samples_per_epoch * epochs // batch_size   # 3.13M iterations
warmup_iters = 10000

model = dict(
    type='m3i_mm.M3I',
    backbone=dict(type='m3i_mm.InternImage', arch='h', drop_path_rate=0.2, with_cp=True,
                  out_indices=(2, 3)),
    # the official H/G fusion (dcnv3_head_x3/x4): stride-16 tokens of width 1024
    neck=dict(type='m3i_mm.Stride16Fusion', in_channels=(1280, 2560), embed_dim=1024),
    decoder=dict(embed_dim=768, depth=6, num_heads=12),
    mix=True,
    mask_ratio=0.5,
    loss_weights=dict(same=1.0, cross=1.0, sem=1.0),
    dense_head=dict(unigrad_lambda=0.02),
    caption_head=dict(embed_dim=768),  # the paper's H run used captions only
    text_encoder=dict(type='m3i_mm.HFTextEncoder',
                      model_name_or_path='openai/clip-vit-base-patch32', max_length=77),
    ema_momentum=0.005)

_shards = dict(type='ImageTextDataset')
train_dataloader = dict(
    batch_size=64,
    num_workers=12,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='m3i_mm.MultiSourceDataset',
        sources=[
            dict(_shards, name='laion400m', data_root='data/laion400m',
                 shards='{00000..41407}.tar'),
            dict(_shards, name='yfcc15m', data_root='data/yfcc15m', shards='{0000..1499}.tar'),
            dict(_shards, name='cc12m', data_root='data/cc12m', shards='{00000..01242}.tar'),
        ],
        pipeline={{_base_.train_pipeline}}),
    sampler=dict(type='m3i_mm.MultiSourceSampler', batch_size=64,
                 ratios=[400 / 427, 15 / 427, 12 / 427], mode='mixed', infinite=True))

runner_type = 'FlexibleRunner'
strategy = dict(
    type='m3i_mm.FSDP2Strategy',
    mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32'))
optim_wrapper = dict(
    type='OptimWrapper',  # precision is the strategy's (FSDP mixed precision)
    optimizer=dict(type='AdamW', lr=1.5e-4 * batch_size / 256, betas=(0.9, 0.95),
                   weight_decay=0.05),
    clip_grad=dict(max_norm=3.0),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0,
        custom_keys={'image_embed': dict(decay_mult=0.0), 'query_token': dict(decay_mult=0.0),
                     'semantic_token': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False, begin=warmup_iters,
         end=total_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=total_iters)
