# Multi-scale + flip test of upernet_internimage-h_16xb1-160k_ade20k-896x896.py (test only:
# evaluate the checkpoint that config trained, `tools/test.py THIS_CONFIG CHECKPOINT`): the
# official scales (the ratios commented in
# segmentation/configs/ade20k/upernet_internimage_h_896_160k_ade20k.py) with horizontal flip,
# softmax scores averaged (mmseg SegTTAModel); official 60.3 mIoU.
_base_ = './upernet_internimage-h_16xb1-160k_ade20k-896x896.py'

model = dict(_delete_=True, type='SegTTAModel', module={{_base_.model}})
test_dataloader = dict(dataset=dict(pipeline={{_base_.tta_pipeline}}))
val_dataloader = test_dataloader
