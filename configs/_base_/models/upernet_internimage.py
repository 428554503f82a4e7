# mmseg's UperNet (+ FCN auxiliary head on stage 3) with InternImage-T, 150 ADE20k classes.
# Test images are brought to multiples of 32 by the test pipeline (ResizeToMultiple), as
# officially, so the data preprocessor pads nothing at test time.
_base_ = 'mmseg::_base_/models/upernet_r50.py'
custom_imports = dict(imports=['m3i_mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # the backbone loads its weights through init_cfg
    backbone=dict(
        _delete_=True,
        type='m3i_mm.InternImage',
        arch='t',
        layer_scale=1.0,
        drop_path_rate=0.2,
        out_indices=(0, 1, 2, 3)),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150),
    test_cfg=dict(mode='whole'))
