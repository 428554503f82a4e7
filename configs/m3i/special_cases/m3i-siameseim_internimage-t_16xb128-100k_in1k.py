# Special case of the M3I objective: SiameseIM (m3i_method.md section 2).
# Input: masked view 1 (118 of 196 patches, the SiameseIM setting). Target: view 2's dense
# features from the EMA encoder at relative positions; Gaussian q + UniGrad decorrelation.
# [A] masked patches replaced by a learnable token after the stem (SiameseIM drops them in
#     its ViT); decoder, EMA schedule (SiameseIM's cosine 0.995 -> 1), UniGrad 0.02,
#     optimisation and schedule as the T config (../m3i_internimage-t_16xb128-100k_in1k-cc12m.py),
#     whose header lists the assumptions.
_base_ = '../m3i_internimage-t_16xb128-100k_in1k-cc12m.py'

model = dict(
    mix=False, mask_ratio=118 / 196,
    loss_weights=dict(same=0.0, cross=1.0, sem=0.0),
    dense_head=dict(unigrad_lambda=0.02),
    label_head=None, caption_head=None, text_encoder=None)
train_dataloader = dict(
    dataset=dict(sources=[
        dict(type='UnlabelledImageDataset', name='in1k_images',
             data_root='data/imagenet/train')]),
    sampler=dict(ratios=[1.0]))
