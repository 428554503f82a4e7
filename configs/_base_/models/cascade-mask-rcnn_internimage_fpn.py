# mmdet's Cascade Mask R-CNN + FPN with InternImage-L. As in the official L/XL detectors,
# the three box heads are 4conv-1fc heads with SyncBN regressing decoded boxes under a GIoU
# loss (weight 10), with the usual per-stage target stds.
_base_ = 'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py'
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)


def _box_head(stds):
    return dict(
        type='Shared4Conv1FCBBoxHead',
        in_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=80,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                        target_stds=stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


model = dict(
    backbone=dict(
        _delete_=True,
        type='m3i_mm.InternImage',
        arch='l',
        layer_scale=1.0,
        drop_path_rate=0.4,
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[160, 320, 640, 1280]),
    roi_head=dict(bbox_head=[
        _box_head([0.1, 0.1, 0.2, 0.2]),
        _box_head([0.05, 0.05, 0.1, 0.1]),
        _box_head([0.033, 0.033, 0.067, 0.067]),
    ]))
