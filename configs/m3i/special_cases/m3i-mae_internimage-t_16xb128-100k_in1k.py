# Special case of the M3I objective: MAE-like masked image modelling (m3i_method.md
# section 2). Input: masked view (75%). Target: the same view's pixels, normalised per patch;
# Gaussian q -> MSE on the masked patches.
# [A] masking: 75 % (MAE's ratio) in block masks (MAE masks at random), masked patches
#     replaced by a learnable token after the stem (MAE drops them); no UniGrad term.
# [A] everything else (decoder, optimisation, schedule) as the T config
#     (../m3i_internimage-t_16xb128-100k_in1k-cc12m.py), whose header lists the assumptions.
_base_ = '../m3i_internimage-t_16xb128-100k_in1k-cc12m.py'

model = dict(
    mix=False, mask_ratio=0.75,
    same_view_target='pixel', same_view_positions='masked',
    loss_weights=dict(same=1.0, cross=0.0, sem=0.0),
    dense_head=dict(unigrad_lambda=0.0),
    label_head=None, caption_head=None, text_encoder=None)
train_dataloader = dict(
    dataset=dict(sources=[
        dict(type='UnlabelledImageDataset', name='in1k_images',
             data_root='data/imagenet/train')]),
    sampler=dict(ratios=[1.0]))
