# Multi-scale + flip test of upernet_internimage-s_8xb2-160k_ade20k-512x512.py (test only:
# evaluate the checkpoint that config trained, `tools/test.py THIS_CONFIG CHECKPOINT`): the
# official scales (the ratios commented in
# segmentation/configs/ade20k/upernet_internimage_s_512_160k_ade20k.py) with horizontal flip,
# softmax scores averaged (mmseg SegTTAModel); official 50.9 mIoU.
_base_ = './upernet_internimage-s_8xb2-160k_ade20k-512x512.py'

model = dict(_delete_=True, type='SegTTAModel', module={{_base_.model}})
test_dataloader = dict(dataset=dict(pipeline={{_base_.tta_pipeline}}))
val_dataloader = test_dataloader
