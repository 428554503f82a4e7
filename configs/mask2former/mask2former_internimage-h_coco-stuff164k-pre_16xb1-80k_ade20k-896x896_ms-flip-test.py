# Multi-scale + flip test of mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-
# 896x896.py (test only: evaluate the checkpoint that config trained): the official scales
# (896 x {768, 832, 896, 960, 1024} / 896 of (3584, 896)) with horizontal flip, each resized
# to a multiple of 32, scores averaged (mmseg SegTTAModel): the official recipe
# (segmentation/configs/ade20k/mask2former_internimage_h_896_80k_cocostuff2ade20k_ms.py;
# official 62.9 mIoU).
_base_ = './mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896.py'

img_ratios = [768. / 896., 832. / 896., 1.0, 960. / 896., 1024. / 896.]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(3584 * r), int(896 * r)), keep_ratio=True)
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
