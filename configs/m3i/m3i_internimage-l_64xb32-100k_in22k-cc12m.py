# M3I pre-training of InternImage-L on ImageNet-22k labels + CC12M captions: the T config
# (m3i_internimage-t_16xb128-100k_in1k-cc12m.py, whose header lists every [A] assumption:
# mixing ratio, block shape and pairing rule, model, EMA schedule, loss form and weights,
# UniGrad 0.02, class table and its temperature 0.2, text encoder, AdamW betas, clipping,
# warm-up, schedule) with
# [A] data: ImageNet-22k labels (21841 classes) and CC12M captions, half each; 192 px views
#     (the official L weights were pre-trained on ImageNet-22k at 192 px); batch 2048
#     (64 GPUs x 32).
# [A] InternImage-L (drop path 0.1, activation checkpointing), fusion width 1024, decoder 6 x
#     768 (12 heads), class table and caption head at 768.
# [A] text encoder: as the T config, CLIP's pretrained text tower, trained: the caption target
#     is partly distilled from CLIP (HFTextEncoder(from_scratch=True) for one from scratch).
_base_ = './m3i_internimage-t_16xb128-100k_in1k-cc12m.py'

view_size = 192
model = dict(
    backbone=dict(arch='l', drop_path_rate=0.1, with_cp=True),
    neck=dict(in_channels=(640, 1280), embed_dim=1024),
    decoder=dict(embed_dim=768, depth=6, num_heads=12),
    label_head=dict(num_classes=21841, embed_dim=768),
    caption_head=dict(embed_dim=768))
train_dataloader = dict(
    batch_size=32,
    dataset=dict(
        sources=[
            dict(type='LabelledImageDataset', name='in22k',
                 dataset=dict(type='CustomDataset', data_root='data/imagenet22k',
                              data_prefix='train')),
            dict(type='ImageTextDataset', name='cc12m', data_root='data/cc12m',
                 shards='{00000..01242}.tar'),
        ],
        pipeline=[dict(type='m3i_mm.M3IViews', size=view_size, scale=(0.08, 1.0)),
                  dict(type='m3i_mm.PackM3IInputs')]),
    sampler=dict(batch_size=32))
