# Special case of the M3I objective: supervised pre-training (m3i_method.md section 2).
# Input: one augmented view (no masking, no mixing). Target: the label through a learnable
# class-embedding table; Boltzmann q -> cross-entropy.
# [A] class table: learnable class embeddings, cosine logits at a learnable temperature
#     starting at 0.2 (the T config's); decoder with one semantic query; optimisation and
#     schedule as the T config (../m3i_internimage-t_16xb128-100k_in1k-cc12m.py), whose header
#     lists the assumptions.
_base_ = '../m3i_internimage-t_16xb128-100k_in1k-cc12m.py'

model = dict(
    mix=False, mask_ratio=0.0,
    loss_weights=dict(same=0.0, cross=0.0, sem=1.0),
    caption_head=None, text_encoder=None)
train_dataloader = dict(
    dataset=dict(sources=[
        dict(type='LabelledImageDataset', name='in1k',
             dataset=dict(type='ImageNet', data_root='data/imagenet', split='train'))]),
    sampler=dict(ratios=[1.0]))
