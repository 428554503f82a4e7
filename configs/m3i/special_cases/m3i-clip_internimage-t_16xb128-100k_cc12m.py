# Special case of the M3I objective: CLIP (m3i_method.md section 2).
# Input: one augmented view. Target: the paired caption through the text encoder;
# Boltzmann q over the captions of the global batch -> symmetric InfoNCE.
# [A] text encoder: as the T config, CLIP's pretrained text tower, trained, so this "CLIP"
#     starts from CLIP's text side and its target is partly distilled from CLIP; use
#     HFTextEncoder(from_scratch=True) for CLIP trained from scratch.
# [A] everything else (temperature, global-batch InfoNCE, optimisation, schedule) as the T
#     config (../m3i_internimage-t_16xb128-100k_in1k-cc12m.py), whose header lists the assumptions.
_base_ = '../m3i_internimage-t_16xb128-100k_in1k-cc12m.py'

model = dict(
    mix=False, mask_ratio=0.0,
    loss_weights=dict(same=0.0, cross=0.0, sem=1.0),
    label_head=None)
train_dataloader = dict(
    dataset=dict(sources=[
        dict(type='ImageTextDataset', name='cc12m', data_root='data/cc12m',
             shards='{00000..01242}.tar')]),
    sampler=dict(ratios=[1.0]))
