# M3I pre-training of InternImage-T on ImageNet-1k labels + CC12M captions.
# The paper states the InternImage-H recipe only (m3i_internimage-h_*); everything here is
# this project's documented default, each assumption marked [A] (m3i_mm/models/selfsup/m3i.py
# lists them all):
# [A] data: ImageNet-1k labels and CC12M captions, half of each batch from each source
#     (mixed batches), 224 px SiameseIM views; batch 2048 (16 GPUs x 128).
# [A] mixing: two images per input canvas (the paper's [V]); image b of canvas i is sample
#     (i + 1) % N of the batch (pairing rule); 0.5 of the 16-pixel patches show b (mixing
#     ratio), in BEiT/SiameseIM blocks of >= 16 patches, aspect 0.3-3.3 (block shape).
# [A] model: stride-16 fusion of stages 3 and 4 at the width below; decoder (depth, width,
#     heads below) over encoder tokens plus dense queries (a's same view, b's other view at
#     SiameseIM relative positions) and one semantic query per image.
# [A] targets: dense = EMA copy of backbone + fusion (same_view_target='feature'), EMA
#     momentum cosine 0.995 -> 1 (SiameseIM's schedule, ema_momentum 0.005).
# [A] loss: w_same * L_dense(a) + w_cross * L_dense(b) + w_sem * (L_sem(a) + L_sem(b)), weights
#     1 / 1 / 1, the semantic term counted for both images; dense terms MSE + UniGrad
#     (weight 0.02, SiameseIM's neg_weight); captions: symmetric InfoNCE over the global batch.
# [A] class table: a learnable ImageNet-1k class-embedding table, cosine logits at a
#     learnable temperature starting at 0.2.
# [A] text encoder: the CLIP ViT-B/32 text tower (openai/clip-vit-base-patch32), loaded with
#     OpenAI's pretrained weights and trained (HFTextEncoder frozen=False), max 77 tokens. The
#     caption target is then partly distilled from CLIP, not learnt from the captions alone;
#     for a text encoder trained from scratch, use
#     text_encoder=dict(type='m3i_mm.HFTextEncoder', ..., from_scratch=True)
#     (HFTextEncoder(from_scratch=True): the same architecture, randomly initialised).
# [A] optimisation: AdamW betas (0.9, 0.95), weight decay 0.05 (SiameseIM/MAE), lr 1.5e-4
#     per 256 images, bf16 autocast, gradient clipping at 3.0, linear warm-up over 5000
#     iterations from 1e-4 x lr, then cosine to 1e-6; 100k iterations.
_base_ = ['./_base_/m3i_runtime.py', './_base_/m3i_views.py', './_base_/m3i_schedule.py']

total_iters = 100000          # ~160 ImageNet epochs worth of samples at batch 2048
warmup_iters = 5000

model = dict(
    type='m3i_mm.M3I',
    backbone=dict(type='m3i_mm.InternImage', arch='t', drop_path_rate=0.1, out_indices=(2, 3)),
    # [A] stride-16 fusion of stages 3 and 4 at the stage-4 width (InternImage-H: 1024)
    neck=dict(type='m3i_mm.Stride16Fusion', in_channels=(256, 512), embed_dim=512),
    decoder=dict(embed_dim=512, depth=4, num_heads=8),
    mix=True,
    mask_ratio=0.5,
    same_view_target='feature',
    loss_weights=dict(same=1.0, cross=1.0, sem=1.0),
    dense_head=dict(unigrad_lambda=0.02),
    # [A] cosine classifier starting at temperature 0.2 (0.07, CLIP's start, learns the
    # class table far slower: its logits saturate)
    label_head=dict(num_classes=1000, embed_dim=512, temperature=0.2),
    caption_head=dict(embed_dim=512),
    text_encoder=dict(type='m3i_mm.HFTextEncoder',
                      model_name_or_path='openai/clip-vit-base-patch32', max_length=77),
    ema_momentum=0.005)

train_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='m3i_mm.MultiSourceDataset',
        sources=[
            dict(type='LabelledImageDataset', name='in1k',
                 dataset=dict(type='ImageNet', data_root='data/imagenet', split='train')),
            dict(type='ImageTextDataset', name='cc12m', data_root='data/cc12m',
                 shards='{00000..01242}.tar'),
        ],
        pipeline={{_base_.train_pipeline}}),
    sampler=dict(type='m3i_mm.MultiSourceSampler', batch_size=128, ratios=[0.5, 0.5],
                 mode='mixed', infinite=True))

optim_wrapper = dict(optimizer=dict(lr=1.2e-3))  # 1.5e-4 x 2048 / 256
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False, begin=warmup_iters,
         end=total_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=total_iters)
auto_scale_lr = dict(base_batch_size=2048)
