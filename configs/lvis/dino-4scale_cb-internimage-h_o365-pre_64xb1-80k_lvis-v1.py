# The LVIS v1 recipe of dino-4scale_cb-internimage-h_o365-pre_64xb1-80k_lvis-v1-minival.py
# evaluated on the full LVIS v1 val set: the official recipe
# (detection/configs/lvis/dino_4scale_cbinternimage_h_objects365_lvis_val_ss.py; official 62.3
# box AP single-scale, 63.2 multi-scale).
_base_ = './dino-4scale_cb-internimage-h_o365-pre_64xb1-80k_lvis-v1-minival.py'
data_root = 'data/lvis_v1/'
val_ann_file = 'annotations/lvis_v1_val.json'

val_dataloader = dict(dataset=dict(ann_file=val_ann_file))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + val_ann_file)
test_evaluator = val_evaluator
