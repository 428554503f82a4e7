"""m3i_mm.LayerDecayOptimWrapperConstructor: the official InternImage rules (classification,
detection, segmentation) and the get_layer_depth convention, on mmpretrain, mmdet and mmseg
models. The expected scales are computed here from the official code's definitions
(OpenGVLab/InternImage 31c962d: classification/models/intern_image.py lr_decay_keywords +
classification/optimizer.py; {detection,segmentation}/mmcv_custom/
custom_layer_decay_optimizer_constructor.py), written independently of m3i_mm's rules."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from tests.conftest import REPO
from tests.engine.official_layer_decay import (CLS_DCN_KEYS, official_classification_exponent,
                                               official_dense_exponent,
                                               official_dense_no_decay)

# tiny InternImage-H (post-norms after stage-2 block 1, centre feature scale)
TINY = dict(channels=16, depths=[1, 1, 2, 1], groups=[4, 8, 16, 32], layer_scale=None,
            post_norm=False, res_post_norm=True, dw_kernel_size=5,
            level2_post_norm_block_ids=[1], center_feature_scale=True)
BACKBONE = dict(type='m3i_mm.InternImage', arch=TINY, dcn_backend='pytorch')
BASE_LR, RATE, WD = 1e-3, 0.8, 0.05


def group_of(optim_wrapper, param):
    matches = [g for g in optim_wrapper.optimizer.param_groups
               if any(p is param for p in g['params'])]
    assert len(matches) == 1
    return matches[0]


def build(model, **paramwise):
    return build_optim_wrapper(model, dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=WD),
        constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
        paramwise_cfg=paramwise))


def classifier():
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    return MODELS.build(dict(
        type='ImageClassifier', backbone=dict(BACKBONE, out_indices=(2, 3)),
        neck=dict(type='m3i_mm.InternImageCLIPNeck', in_channels=(64, 128), embed_dim=32,
                  out_dim=24, num_heads=4),
        head=dict(type='LinearClsHead', num_classes=3, in_channels=24)))


def detr_detector():
    """mmdet's DINO (deformable attention with sampling_offsets, level_embed) on InternImage."""
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromstring("""
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
model = dict(num_queries=10,
             backbone=dict(_delete_=True, type='m3i_mm.InternImage', arch=%r,
                           out_indices=(1, 2, 3), dcn_backend='pytorch'),
             neck=dict(in_channels=[32, 64, 128]),
             encoder=dict(num_layers=1), decoder=dict(num_layers=1))
""" % TINY, '.py')
    return MODELS.build(cfg.model)


def mask2former_segmentor():
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'mask2former',
                 'mask2former_internimage-h_16xb1-160k_ade20k-896x896.py'))
    model = cfg.model
    model.backbone = dict(BACKBONE)
    head = model.decode_head
    head.update(in_channels=[16, 32, 64, 128], feat_channels=32, out_channels=32, num_queries=5)
    head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.update(embed_dims=32, num_heads=4)
    head.pixel_decoder.encoder.layer_cfg.ffn_cfg.update(embed_dims=32, feedforward_channels=64)
    head.pixel_decoder.encoder.num_layers = 1
    head.pixel_decoder.positional_encoding.num_feats = 16
    head.positional_encoding.num_feats = 16
    layer = head.transformer_decoder.layer_cfg
    layer.self_attn_cfg.update(embed_dims=32, num_heads=4)
    layer.cross_attn_cfg.update(embed_dims=32, num_heads=4)
    layer.ffn_cfg.update(embed_dims=32, feedforward_channels=64)
    head.transformer_decoder.num_layers = 1
    return MODELS.build(model)


def check_every_parameter(model, wrapper, exponent_of, no_decay_of, extra_scale_of=None):
    depths = model.backbone.depths
    n_params = 0
    for name, param in model.named_parameters():
        n_params += 1
        group = group_of(wrapper, param)
        scale = RATE**exponent_of(name, depths)
        if extra_scale_of is not None:
            scale *= extra_scale_of(name)
        assert group['lr'] == pytest.approx(BASE_LR * scale, rel=1e-12), name
        assert group['weight_decay'] == (0.0 if no_decay_of(name, param) else WD), name
    assert sum(len(g['params']) for g in wrapper.optimizer.param_groups) == n_params


def test_classification_rule_with_the_official_dcn_multiplier():
    model = classifier()
    wrapper = build(model, layer_decay_rate=RATE, layer_decay_numbering='classification',
                    dcn_lr_mult=0.1)

    def dcn(name):
        return 0.1 if any(k in name for k in CLS_DCN_KEYS) else 1.0

    check_every_parameter(model, wrapper, official_classification_exponent,
                          lambda n, p: p.ndim == 1 or n.endswith('.bias'), dcn)
    backbone, total = model.backbone, sum(model.backbone.depths)
    # representative parameters, spelled out
    assert group_of(wrapper, backbone.patch_embed.conv1.weight)['lr'] == pytest.approx(
        BASE_LR * RATE**(total - 1))
    last = backbone.levels[3].blocks[0]
    assert group_of(wrapper, last.mlp.fc1.weight)['lr'] == pytest.approx(BASE_LR)
    assert group_of(wrapper, last.dcn.offset.weight)['lr'] == pytest.approx(BASE_LR * 0.1)
    assert group_of(wrapper, last.dcn.mask.weight)['lr'] == pytest.approx(BASE_LR)  # not DCN_LR_MUL
    assert group_of(wrapper, last.dcn.center_feature_scale_proj_weight)['lr'] == pytest.approx(
        BASE_LR * 0.1)
    # H/G stage-3 post-norms match no official keyword: full lr
    assert group_of(wrapper, backbone.levels[2].post_norms[0].weight)['lr'] == pytest.approx(
        BASE_LR)
    assert group_of(wrapper, model.neck.fc_norm.weight)['lr'] == pytest.approx(BASE_LR)
    assert group_of(wrapper, model.head.fc.weight)['lr'] == pytest.approx(BASE_LR)


def test_detection_rule_on_dino():
    model = detr_detector()
    wrapper = build(model, layer_decay_rate=RATE, layer_decay_numbering='detection',
                    offset_lr_scale=1e-3)

    def offsets(name):
        return 1e-3 if 'sampling_offsets' in name or 'reference_points' in name else 1.0

    check_every_parameter(model, wrapper,
                          lambda n, d: official_dense_exponent(n, d, segmentation=False),
                          official_dense_no_decay, offsets)
    total = sum(model.backbone.depths)
    backbone = model.backbone
    assert group_of(wrapper, backbone.levels[3].blocks[0].mlp.fc1.weight)['lr'] == \
        pytest.approx(BASE_LR * RATE)  # last block: rate**1
    assert group_of(wrapper, backbone.patch_embed.conv1.weight)['lr'] == pytest.approx(
        BASE_LR * RATE**(total + 1))  # stem: rate**(D+1)
    assert group_of(wrapper, model.level_embed)['lr'] == pytest.approx(
        BASE_LR * RATE**(total + 1))  # official level_embeds: layer 0
    # the backbone's DCNv3 offsets are untouched by offset_lr_scale
    assert group_of(wrapper, backbone.levels[3].blocks[0].dcn.offset.weight)['lr'] == \
        pytest.approx(BASE_LR * RATE)
    # post-norm k of stage 2 takes the id of block k of stage 2
    first2 = sum(backbone.depths[:2])
    assert group_of(wrapper, backbone.levels[2].post_norms[0].weight)['lr'] == pytest.approx(
        BASE_LR * RATE**(total + 1 - (first2 + 1)))
    attn = model.encoder.layers[0].self_attn
    assert group_of(wrapper, attn.sampling_offsets.weight)['lr'] == pytest.approx(1e-3 * BASE_LR)
    assert group_of(wrapper, attn.sampling_offsets.weight)['weight_decay'] == 0.0
    assert group_of(wrapper, attn.value_proj.weight)['lr'] == pytest.approx(BASE_LR)


def test_segmentation_rule_on_mask2former():
    model = mask2former_segmentor()
    wrapper = build(model, layer_decay_rate=RATE, layer_decay_numbering='segmentation',
                    offset_lr_scale=1e-3)
    # segmentation applies offset_lr_scale only under `backbone`, i.e. never here
    check_every_parameter(model, wrapper,
                          lambda n, d: official_dense_exponent(n, d, segmentation=True),
                          official_dense_no_decay)
    total = sum(model.backbone.depths)
    head = model.decode_head
    for param in (head.query_embed.weight, head.query_feat.weight, head.level_embed.weight):
        group = group_of(wrapper, param)
        assert group['lr'] == pytest.approx(BASE_LR * RATE**(total + 1))
        assert group['weight_decay'] == WD  # 2-D: decayed, as officially


def test_model_numbering_uses_get_layer_depth_and_mmpretrain_convention():
    model = classifier()
    wrapper = build(model, layer_decay_rate=RATE)  # layer_decay_numbering='model'
    backbone = model.backbone
    for name, param in model.named_parameters():
        layer_id, num_layers = backbone.get_layer_depth(name, 'backbone.')
        assert group_of(wrapper, param)['lr'] == pytest.approx(
            BASE_LR * RATE**(num_layers - layer_id - 1)), name


def test_rate_one_gives_every_parameter_the_base_lr():
    model = detr_detector()
    wrapper = build(model, layer_decay_rate=1.0, layer_decay_numbering='detection')
    assert {g['lr'] for g in wrapper.optimizer.param_groups} == {BASE_LR}


def test_bad_options_are_named():
    model = classifier()
    with pytest.raises(ValueError, match="unknown paramwise_cfg keys .*'layer_decay'"):
        build(model, layer_decay=0.9)
    with pytest.raises(ValueError, match='layer_decay_numbering must be one of'):
        build(model, layer_decay_rate=0.9, layer_decay_numbering='det')
    with pytest.raises(ValueError, match='offset_lr_scale is the official det/seg multiplier'):
        build(model, layer_decay_numbering='classification', offset_lr_scale=0.1)
    plain = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match='needs a model or backbone with get_layer_depth'):
        build(plain, layer_decay_rate=0.9)
    with pytest.raises(TypeError, match='needs model.backbone.depths'):
        build(plain, layer_decay_rate=0.9, layer_decay_numbering='detection')
