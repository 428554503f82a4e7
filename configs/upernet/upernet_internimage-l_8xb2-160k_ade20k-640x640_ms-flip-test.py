# Multi-scale + flip test of upernet_internimage-l_8xb2-160k_ade20k-640x640.py (test only:
# evaluate the checkpoint that config trained, `tools/test.py THIS_CONFIG CHECKPOINT`): the
# official scales (the ratios commented in
# segmentation/configs/ade20k/upernet_internimage_l_640_160k_ade20k.py) with horizontal flip,
# softmax scores averaged (mmseg SegTTAModel); official 54.1 mIoU.
_base_ = './upernet_internimage-l_8xb2-160k_ade20k-640x640.py'

# The L config's ratios (the other sizes use 0.5..1.75).
img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(2560 * r), int(640 * r)), keep_ratio=True)
             for r in img_ratios],
            [dict(type='ResizeToMultiple', size_divisor=32)],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ]),
]
model = dict(_delete_=True, type='SegTTAModel', module={{_base_.model}})
test_dataloader = dict(dataset=dict(pipeline=tta_pipeline))
val_dataloader = test_dataloader
