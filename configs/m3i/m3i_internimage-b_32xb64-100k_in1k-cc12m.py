# M3I pre-training of InternImage-B (same sources and schedule as the T config). [A]
_base_ = './m3i_internimage-t_16xb128-100k_in1k-cc12m.py'

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.4, with_cp=True),
    neck=dict(in_channels=(448, 896), embed_dim=896),
    decoder=dict(embed_dim=512, depth=4, num_heads=8))
train_dataloader = dict(batch_size=64, sampler=dict(batch_size=64))
