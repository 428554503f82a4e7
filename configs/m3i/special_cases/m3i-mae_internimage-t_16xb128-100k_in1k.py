# Special case of the M3I objective: MAE-like masked image modelling (m3i_method.md
# section 2). Input: view with 75% of its patches masked at random. Target: the same view's
# pixels, normalised per patch (MAE's norm_pix_loss); Gaussian q -> MSE on the masked
# patches.
# Recipe: MAE's (facebookresearch/mae, PRETRAIN.md and main_pretrain.py): uniform random
# masking of 75% of the patches, blr 1.5e-4 per 256 images (the M3I base's), AdamW betas
# (0.9, 0.95), weight decay 0.05, warm-up 40 of 800 epochs, cosine to 0, no grad clipping,
# no drop path; views: random resized crop (0.2-1) and flip only.
# [A] remaining deviations (architecture): InternImage instead of ViT, so the encoder sees
#     a learnable mask token where MAE's ViT drops the masked patches (masked pixels are
#     blanked at the input and the stem, so none reaches a visible token); no UniGrad term;
#     M3I's decoder as the T config (../m3i_internimage-t_16xb128-100k_in1k-cc12m.py),
#     whose header lists the assumptions (README "Paradigm comparison").
_base_ = '../m3i_internimage-t_16xb128-100k_in1k-cc12m.py'

total_iters = 100000
warmup_iters = 5000  # 40 / 800 epochs

model = dict(
    backbone=dict(drop_path_rate=0.0),
    mix=False, mask_ratio=0.75,
    # blocks of one patch: a uniformly random set of exactly 75% of the patches
    mask_cfg=dict(min_num_patches=1, max_num_patches=1, min_aspect=1.0),
    same_view_target='pixel', same_view_positions='masked',
    loss_weights=dict(same=1.0, cross=0.0, sem=0.0),
    dense_head=dict(unigrad_lambda=0.0),
    label_head=None, caption_head=None, text_encoder=None)
train_dataloader = dict(
    dataset=dict(
        sources=[
            dict(type='UnlabelledImageDataset', name='in1k_images',
                 data_root='data/imagenet/train')],
        pipeline=[
            dict(type='m3i_mm.M3IViews', size=224, scale=(0.2, 1.0), view1_pipeline=[],
                 view2_pipeline=[]),
            dict(type='m3i_mm.PackM3IInputs'),
        ]),
    sampler=dict(ratios=[1.0]))
optim_wrapper = dict(clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters,
         end=total_iters),
]
