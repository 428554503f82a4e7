# mmdet's default runtime with the checkpoint retention of the official COCO detectors
# (detection/configs/coco/{mask_rcnn,cascade}_internimage_*.py: `checkpoint_config =
# dict(interval=1, max_keep_ckpts=3, save_last=True)`, `evaluation = dict(save_best='auto')`,
# evaluation every epoch): a checkpoint after every epoch, the newest 3 kept, and the best by
# the first metric (COCO box mAP; LVIS box AP, whose name mmengine cannot tell the direction
# of, hence rule='greater') kept apart.
_base_ = 'mmdet::_base_/default_runtime.py'

default_hooks = dict(
    checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='auto', rule='greater'))
