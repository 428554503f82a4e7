"""m3i_mm.LayerDecayOptimWrapperConstructor from mmpretrain, mmdet and mmseg models."""
import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

TINY = dict(channels=16, depths=[1, 1, 2, 1], groups=[4, 8, 16, 32])
BACKBONE = dict(type='m3i_mm.InternImage', arch=TINY, dcn_backend='pytorch')
BASE_LR, RATE, DCN_MULT, WD = 1e-3, 0.8, 0.1, 0.05


def group_of(optim_wrapper, param):
    matches = [g for g in optim_wrapper.optimizer.param_groups
               if any(p is param for p in g['params'])]
    assert len(matches) == 1
    return matches[0]


def build(model):
    return build_optim_wrapper(model, dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=WD),
        constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=RATE, dcn_lr_mult=DCN_MULT,
                           custom_keys={'head': dict(lr_mult=2.0)})))


def check_backbone_groups(model, optim_wrapper):
    backbone = model.backbone
    total = sum(backbone.depths)  # 5 blocks: scale of block b is RATE ** (total - 1 - b)
    stem = group_of(optim_wrapper, backbone.patch_embed.conv1.weight)
    assert stem['lr'] == pytest.approx(BASE_LR * RATE**(total - 1))
    assert stem['weight_decay'] == WD
    top = backbone.levels[3].blocks[0]
    assert group_of(optim_wrapper, top.mlp.fc1.weight)['lr'] == pytest.approx(BASE_LR)
    assert group_of(optim_wrapper, top.dcn.offset.weight)['lr'] == pytest.approx(
        BASE_LR * DCN_MULT)
    assert group_of(optim_wrapper, top.dcn.mask.weight)['lr'] == pytest.approx(
        BASE_LR * DCN_MULT)
    block = backbone.levels[2].blocks[1]  # global block 3
    assert group_of(optim_wrapper, block.mlp.fc1.weight)['lr'] == pytest.approx(
        BASE_LR * RATE**(total - 1 - 3))
    assert group_of(optim_wrapper, block.mlp.fc1.bias)['weight_decay'] == 0.0
    assert group_of(optim_wrapper, block.norm1.weight)['weight_decay'] == 0.0
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g['params']) for g in optim_wrapper.optimizer.param_groups) == n_params


def test_mmpretrain_classifier():
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=BACKBONE,
        neck=dict(type='m3i_mm.InternImageConvNeck', in_channels=128),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=192)))
    wrapper = build(model)
    check_backbone_groups(model, wrapper)
    assert group_of(wrapper, model.head.fc.weight)['lr'] == pytest.approx(2 * BASE_LR)
    assert group_of(wrapper, model.neck.conv.weight)['lr'] == pytest.approx(BASE_LR)


def test_mmdet_detector():
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    from mmengine.config import Config
    cfg = Config.fromstring("""
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
model = dict(backbone=dict(_delete_=True, type='m3i_mm.InternImage',
                           arch=dict(channels=16, depths=[1, 1, 2, 1], groups=[4, 8, 16, 32]),
                           out_indices=(1, 2, 3), dcn_backend='pytorch'),
             neck=dict(in_channels=[32, 64, 128]))
""", '.py')
    model = MODELS.build(cfg.model)
    check_backbone_groups(model, build(model))


def test_mmseg_segmentor():
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    from mmengine.config import Config
    cfg = Config.fromstring("""
_base_ = 'mmseg::_base_/models/upernet_r50.py'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(data_preprocessor=None, pretrained=None,
             backbone=dict(_delete_=True, type='m3i_mm.InternImage',
                           arch=dict(channels=16, depths=[1, 1, 2, 1], groups=[4, 8, 16, 32]),
                           dcn_backend='pytorch'),
             decode_head=dict(in_channels=[16, 32, 64, 128], channels=16, norm_cfg=norm_cfg),
             auxiliary_head=dict(in_channels=64, channels=8, norm_cfg=norm_cfg))
""", '.py')
    model = MODELS.build(cfg.model)
    check_backbone_groups(model, build(model))


def test_unknown_option_and_backbone_without_depths_are_named():
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(dict(type='ImageClassifier', backbone=BACKBONE,
                              neck=dict(type='GlobalAveragePooling'),
                              head=dict(type='LinearClsHead', num_classes=3, in_channels=128)))
    with pytest.raises(ValueError, match="unknown paramwise_cfg keys .*'layer_decay'"):
        build_optim_wrapper(model, dict(
            optimizer=dict(type='AdamW', lr=1e-3),
            constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay=0.9)))
    plain = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match='needs a model or backbone with get_layer_depth'):
        build_optim_wrapper(plain, dict(
            optimizer=dict(type='AdamW', lr=1e-3),
            constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.9)))
