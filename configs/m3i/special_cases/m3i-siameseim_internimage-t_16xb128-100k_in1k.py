# Special case of the M3I objective: SiameseIM (m3i_method.md section 2).
# Input: masked view 1 (118 of 196 patches, the SiameseIM setting). Target: view 2's dense
# features from the EMA encoder at relative positions; Gaussian q + UniGrad decorrelation.
# Recipe: SiameseIM's (OpenGVLab/Siamese-Image-Modeling, configs/pretrain/
# dist_sim_base_1600ep.sh and main_pretrain.py): patch embedding frozen, no drop path, blr
# 6.25e-5 per 256 images, grad clip 1.0, warm-up 40 of 1600 epochs, cosine to 0; views
# (crop scale 0.08-1, jitter, blur, solarize), AdamW betas / weight decay, EMA momentum
# 0.995 -> 1 (cosine) and the block-wise mask come from the M3I base, which follows it.
# [A] remaining deviations (architecture): InternImage instead of ViT, so the encoder sees
#     a learnable mask token where SiameseIM's ViT drops the masked patches (masked pixels
#     are blanked at the input and the stem, so none reaches a visible token); M3I's
#     decoder, UniGrad 0.02 and no momentum projector, as the T config
#     (../m3i_internimage-t_16xb128-100k_in1k-cc12m.py), whose header lists the assumptions
#     (README "Paradigm comparison").
_base_ = '../m3i_internimage-t_16xb128-100k_in1k-cc12m.py'

total_iters = 100000
warmup_iters = 2500  # 40 / 1600 epochs

model = dict(
    backbone=dict(drop_path_rate=0.0),
    mix=False, mask_ratio=118 / 196,
    freeze_stem=True,
    loss_weights=dict(same=0.0, cross=1.0, sem=0.0),
    dense_head=dict(unigrad_lambda=0.02),
    label_head=None, caption_head=None, text_encoder=None)
train_dataloader = dict(
    dataset=dict(sources=[
        dict(type='UnlabelledImageDataset', name='in1k_images',
             data_root='data/imagenet/train')]),
    sampler=dict(ratios=[1.0]))
optim_wrapper = dict(optimizer=dict(lr=5e-4),  # 6.25e-5 x 2048 / 256
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=False, begin=warmup_iters,
         end=total_iters),
]
