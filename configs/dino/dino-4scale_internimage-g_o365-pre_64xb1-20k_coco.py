# DINO (4 scales) with InternImage-G, COCO fine-tuning of a detector pre-trained on Objects365:
# the recipe of dino-4scale_internimage-h_o365-pre_64xb1-20k_coco.py with the G backbone (drop
# path 0.5, activation checkpointing): the official recipe
# (detection/configs/coco/dino_4scale_internimage_g_objects365_coco_ss.py; official 64.2 box AP,
# detection/README.md). The official file uses its EfficientFFN (the same function as mmdet's
# FFN computed in four slices, to save memory); mmdet's FFN is used here. The Objects365
# detector this stage starts from is not published: set `load_from` to yours.
_base_ = './dino-4scale_internimage-h_o365-pre_64xb1-20k_coco.py'

model = dict(
    backbone=dict(arch='g'),
    neck=dict(in_channels=[1024, 2048, 4096]))
