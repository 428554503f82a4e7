# DINO (4 scales) with CB-InternImage-H on LVIS v1, fine-tuned from the official Objects365
# detector: 80k iterations at batch 64 (one image per GPU; the GPU count is not stated in the
# official file, 64 is assumed as for COCO), repeat-factor sampling (threshold 1e-3), short side
# 600-1200 (long side <= 2000), test at (2000, 1000), 1203 classes, up to 300 detections, LVIS
# box AP on minival; optimizer and model as the CB-H COCO config (lr 1e-4, weight decay 1e-4,
# offsets at 1e-3x, clipping at 0.1, 500 warm-up iterations, constant lr): the official recipe
# (detection/configs/lvis/dino_4scale_cbinternimage_h_objects365_lvis_minival_ss.py; official
# 65.8 box AP on minival). The official file's `fed_loss_cfg` and `snip_cfg` are read by no code
# of the official repository, so they are left out. annotations/lvis_v1_minival.json is not part
# of the LVIS v1 release (the official repository does not say how it was made): provide it
# yourself. Starts from the official Objects365 detector through `load_from`: its 80-class
# classifier does not fit the 1203 classes and starts fresh (as in the official non-strict
# load).
_base_ = '../dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py'
data_root = 'data/lvis_v1/'
val_ann_file = 'annotations/lvis_v1_minival.json'
max_iters = 80000

model = dict(bbox_head=dict(num_classes=1203))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=[(2000, 600), (2000, 1200)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',
        oversample_thr=1e-3,
        dataset=dict(
            type='LVISV1Dataset',
            data_root=data_root,
            ann_file='annotations/lvis_v1_train.json',
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=train_pipeline,
            backend_args={{_base_.backend_args}})))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='LVISV1Dataset',
        data_root=data_root,
        ann_file=val_ann_file,
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline={{_base_.test_pipeline}},
        backend_args={{_base_.backend_args}}))
test_dataloader = val_dataloader
# m3i_mm's LVISMetric = mmdet's, working with the PyPI lvis package on numpy >= 1.24
val_evaluator = dict(_delete_=True, type='m3i_mm.LVISMetric', ann_file=data_root + val_ann_file,
                     metric='bbox')
test_evaluator = val_evaluator

train_cfg = dict(max_iters=max_iters, val_interval=500)
default_hooks = dict(checkpoint=dict(interval=500, max_keep_ckpts=10, save_best=None))
