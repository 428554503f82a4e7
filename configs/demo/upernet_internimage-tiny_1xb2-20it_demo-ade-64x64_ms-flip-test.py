# Multi-scale + flip test of the tiny ADE20k UperNet (test only), as the _ms-flip-test variants
# of ../upernet/ do it: the official ratios 0.5..1.75 of the demo's test scale (256, 64), each
# resized to a multiple of 32, with and without horizontal flip, softmax scores averaged
# (mmseg SegTTAModel).
_base_ = './upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py'

img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(256 * r), int(64 * r)), keep_ratio=True)
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
