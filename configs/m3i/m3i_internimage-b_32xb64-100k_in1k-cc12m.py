# M3I pre-training of InternImage-B: the T config (m3i_internimage-t_16xb128-100k_in1k-cc12m.py,
# whose header lists every [A] assumption: data and ratios, mixing ratio, block shape and
# pairing rule, model, EMA schedule, loss form and weights, UniGrad 0.02, class table and its
# temperature 0.2, text encoder, AdamW betas, clipping, warm-up, schedule) with
# [A] InternImage-B (drop path 0.4, activation checkpointing), fusion width 896, decoder 4 x
#     512 (8 heads); batch 2048 (32 GPUs x 64).
# [A] text encoder: as the T config, CLIP's pretrained text tower, trained: the caption target
#     is partly distilled from CLIP (HFTextEncoder(from_scratch=True) for one from scratch).
_base_ = './m3i_internimage-t_16xb128-100k_in1k-cc12m.py'

model = dict(
    backbone=dict(arch='b', drop_path_rate=0.4, with_cp=True),
    neck=dict(in_channels=(448, 896), embed_dim=896),
    decoder=dict(embed_dim=512, depth=4, num_heads=8))
train_dataloader = dict(batch_size=64, sampler=dict(batch_size=64))
