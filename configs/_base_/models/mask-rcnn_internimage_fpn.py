# mmdet's Mask R-CNN + FPN with InternImage-T. Detection backbones use layer_scale=1.0 for
# every variant up to XL (official detection configs): for T the gammas are new parameters
# at 1.0, which leaves the pretrained function unchanged.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='m3i_mm.InternImage',
        arch='t',
        layer_scale=1.0,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[64, 128, 256, 512]))
