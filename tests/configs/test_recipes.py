"""The official recipes, value for value (configs/README.md "Recipes and their sources").

* Per family, the optimizer wrapper is built from the real config (tiny backbone) and the lr
  and weight decay of every parameter are compared with the official rule
  (tests/engine/official_layer_decay.py) applied to the official values listed below, which
  are read from the official files (OpenGVLab/InternImage 31c962d).
* The ImageNet evaluation geometry (short side to the input size, then the central square
  crop) is checked on a non-square photo against PIL, as the official torchvision transform.
* Values the official files fix and earlier configs got wrong are checked one by one.
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tests.configs.test_all_configs import CONFIG_ROOT, load, make_testable
from tests.engine.official_layer_decay import (CLS_DCN_KEYS, official_classification_exponent,
                                               official_dense_exponent,
                                               official_dense_no_decay,
                                               official_dense_offset_scale)

C, D, S = 'classification/configs/', 'detection/configs/', 'segmentation/configs/'
# config -> official file, rule, layer-decay rate, lr, weight decay, DCN_LR_MUL (classification,
# with layer decay), offset_lr_scale (det/seg)
OFFICIAL_OPTIMIZERS = {
    'internimage/internimage-t_32xb128-300e_in1k.py':
        (C + 'internimage_t_1k_224.yaml', 'classification', 1.0, 4e-3, 0.05, 1.0, 1.0),
    'internimage/internimage-l_m3i-pre_16xb32-20e_in1k-384px.py':
        (C + 'internimage_l_22kto1k_384.yaml', 'classification', 0.9, 2e-5, 0.05, 0.1, 1.0),
    'internimage/internimage-xl_in22k-pre_32xb16-20e_in1k-384px.py':
        (C + 'without_lr_decay/internimage_xl_22kto1k_384.yaml', 'classification', 1.0, 2e-5,
         0.05, 1.0, 1.0),
    'internimage/internimage-h_in22k-pre_32xb16-20e_in1k-384px.py':
        (C + 'internimage_h_22kto1k_384.yaml', 'classification', 0.9, 2e-5, 0.05, 0.1, 1.0),
    'internimage/internimage-g_in22k-pre_64xb8-20e_in1k-512px.py':
        (C + 'without_lr_decay/internimage_g_22kto1k_512.yaml', 'classification', 1.0, 2e-5,
         0.05, 1.0, 1.0),
    'mask_rcnn/mask-rcnn_internimage-s_fpn_ms-crop-3x_coco.py':
        (D + 'coco/mask_rcnn_internimage_s_fpn_3x_coco.py', 'detection', 1.0, 1e-4, 0.05, 1.0,
         1.0),
    'cascade_mask_rcnn/cascade-mask-rcnn_internimage-xl_fpn_1x_coco.py':
        (D + 'coco/cascade_internimage_xl_fpn_1x_coco.py', 'detection', 0.94, 1e-4, 0.05, 1.0,
         1.0),
    'cascade_mask_rcnn/cascade-mask-rcnn_internimage-l_fpn_32xb2-ms-crop-3x_coco.py':
        (D + 'coco/cascade_internimage_l_fpn_3x_coco.py', 'detection', 0.9, 2e-4, 0.05, 1.0,
         0.01),
    'dino/dino-4scale_internimage-t_8xb2-layer-decay-12e_coco.py':
        (D + 'coco/dino_4scale_internimage_t_1x_coco_layer_wise_lr.py', 'detection', 0.9, 1e-4,
         1e-4, 1.0, 1.0),
    'dino/dino-4scale_internimage-h_o365-pre_64xb1-20k_coco.py':
        (D + 'coco/dino_4scale_internimage_h_objects365_coco_ss.py', 'detection', 0.94, 1e-4,
         1e-4, 1.0, 1e-3),
    'dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py':
        (D + 'coco/dino_4scale_cbinternimage_h_objects365_coco_ss.py', 'detection', 0.94, 1e-4,
         1e-4, 1.0, 1e-3),
    'lvis/dino-4scale_cb-internimage-h_o365-pre_64xb1-80k_lvis-v1-minival.py':
        (D + 'lvis/dino_4scale_cbinternimage_h_objects365_lvis_minival_ss.py', 'detection',
         0.94, 1e-4, 1e-4, 1.0, 1e-3),
    'upernet/upernet_internimage-b_8xb2-160k_ade20k-512x512.py':
        (S + 'ade20k/upernet_internimage_b_512_160k_ade20k.py', 'segmentation', 1.0, 6e-5,
         0.05, 1.0, 1.0),
    'upernet/upernet_internimage-xl_8xb2-160k_ade20k-640x640.py':
        (S + 'ade20k/upernet_internimage_xl_640_160k_ade20k.py', 'segmentation', 0.94, 2e-5,
         0.05, 1.0, 1.0),
    'upernet/upernet_internimage-g_16xb1-160k_ade20k-896x896.py':
        (S + 'ade20k/upernet_internimage_g_896_160k_ade20k.py', 'segmentation', 0.95, 2e-5,
         0.05, 1.0, 1.0),
    'mask2former/mask2former_internimage-h_16xb1-80k_coco-stuff164k-896x896.py':
        (S + 'coco_stuff164k/mask2former_internimage_h_896_80k_cocostuff164k.py',
         'segmentation', 0.95, 2e-5, 0.05, 1.0, 1.0),
    'mask2former/mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896.py':
        (S + 'ade20k/mask2former_internimage_h_896_80k_cocostuff2ade20k_ss.py', 'segmentation',
         0.95, 1e-5, 0.05, 1.0, 1.0),
}


def build_model_and_optimizer(config: str):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope
    cfg = load(config)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = revert_sync_batchnorm(MODELS.build(make_testable(cfg)))
        optim_cfg = copy.deepcopy(cfg.optim_wrapper)
        if optim_cfg.get('type') == 'AmpOptimWrapper':
            optim_cfg.type = 'OptimWrapper'  # AmpOptimWrapper refuses to build without a GPU
        wrapper = build_optim_wrapper(model, optim_cfg)
    return cfg, model, wrapper


def lr_and_wd(wrapper) -> dict:
    return {id(p): (g['lr'], g['weight_decay']) for g in wrapper.optimizer.param_groups
            for p in g['params']}


@pytest.mark.parametrize('config', sorted(OFFICIAL_OPTIMIZERS))
def test_every_parameter_trains_as_the_official_rule_says(config):
    official, rule, rate, lr, wd, dcn_mult, offset_scale = OFFICIAL_OPTIMIZERS[config]
    cfg, model, wrapper = build_model_and_optimizer(config)
    groups = lr_and_wd(wrapper)
    depths = model.backbone.depths
    kinds = set()
    for name, param in model.named_parameters():
        if rule == 'classification':
            scale = rate**official_classification_exponent(name, depths)
            if rate != 1.0 and any(k in name for k in CLS_DCN_KEYS):  # only with layer decay
                scale *= dcn_mult
            no_decay = param.ndim == 1 or name.endswith('.bias')
        else:
            seg = rule == 'segmentation'
            scale = rate**official_dense_exponent(name, depths, seg)
            scale *= official_dense_offset_scale(name, offset_scale, seg)
            no_decay = official_dense_no_decay(name, param)
        expected = (lr * scale, 0.0 if no_decay else wd)
        got = groups[id(param)]
        assert got[0] == pytest.approx(expected[0], rel=1e-9), (official, name, got, expected)
        assert got[1] == expected[1], (official, name, got, expected)
        kinds.add(name.split('.')[0])
        if '.dcn.offset.' in name or '.dcn.mask.' in name or 'sampling_offsets' in name:
            kinds.add('offsets')
    # the representative parts are all there: backbone (stem to last block), its DCNv3
    # offset/mask projections, and the parts outside the backbone
    assert {'backbone', 'offsets'} <= kinds and len(kinds - {'backbone', 'offsets'}) >= 1, kinds


def test_official_det_numbering_on_a_large_backbone():
    """The issue's numbers: Cascade-L 1x (rate 0.94, 37 blocks): last block 0.94**1, stem
    0.94**38, heads 1 (full-size model on the meta device)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, DefaultScope
    cfg = load('cascade_mask_rcnn/cascade-mask-rcnn_internimage-l_fpn_1x_coco.py')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'), torch.device('meta'):
        model = MODELS.build(model_cfg)
    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    groups = lr_and_wd(wrapper)
    backbone = model.backbone
    assert sum(backbone.depths) == 37
    lr = 1e-4

    def lr_of(param):
        return groups[id(param)][0]

    assert lr_of(backbone.levels[3].blocks[-1].mlp.fc1.weight) == pytest.approx(lr * 0.94)
    assert lr_of(backbone.levels[0].blocks[0].mlp.fc1.weight) == pytest.approx(lr * 0.94**37)
    assert lr_of(backbone.patch_embed.conv1.weight) == pytest.approx(lr * 0.94**38)
    assert lr_of(model.roi_head.bbox_head[0].fc_cls.weight) == pytest.approx(lr)
    assert lr_of(model.neck.lateral_convs[0].conv.weight) == pytest.approx(lr)


def test_cb_internimage_backbone_trains_at_the_full_lr_as_officially():
    """The official detection rule does not recognise backbone.cb_modules.*: with rate 0.94
    only the DETR level embedding decays."""
    cfg, model, wrapper = build_model_and_optimizer(
        'dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py')
    groups = lr_and_wd(wrapper)
    for name, param in model.backbone.named_parameters():
        assert groups[id(param)][0] == pytest.approx(1e-4), name
    total = sum(model.backbone.depths)
    assert groups[id(model.level_embed)][0] == pytest.approx(1e-4 * 0.94**(total + 1))


def test_dino_l_backbone_0_1x_variant_decays_every_parameter():
    """dino_4scale_internimage_l_1x_coco_0.1x_backbone_lr.py: mmcv's default constructor with
    custom_keys={'backbone': lr_mult 0.1}, weight decay 0.05 on all parameters."""
    cfg, model, wrapper = build_model_and_optimizer(
        'dino/dino-4scale_internimage-l_8xb2-backbone-0.1x-12e_coco.py')
    groups = lr_and_wd(wrapper)
    for name, param in model.named_parameters():
        expected_lr = 1e-5 if 'backbone' in name else 1e-4
        assert groups[id(param)] == (pytest.approx(expected_lr), 0.05), name


# ------------------------------------------------------------------ ImageNet eval geometry
def official_eval_view(path: str, size: int) -> np.ndarray:
    """torchvision's Resize(size) (short side, long side truncated) with PIL bicubic, then
    CenterCrop(size) (offsets rounded): the official build_transform with TEST.CROP."""
    from PIL import Image
    image = Image.open(path).convert('RGB')
    w, h = image.size
    if w < h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    image = image.resize(new, Image.BICUBIC)
    top = int(round((new[1] - size) / 2.0))
    left = int(round((new[0] - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize('config,size', [
    ('internimage/internimage-b_32xb128-300e_in1k.py', 224),
    ('internimage/internimage-t_m3i-pre_16xb32-20e_in1k.py', 224),
    ('internimage/internimage-l_in22k-pre_32xb16-20e_in1k-384px.py', 384),
    ('internimage/internimage-g_in22k-pre_64xb8-20e_in1k-512px.py', 512),
    ('internimage/internimage-h_m3i-pre_32xb16-20e_in1k-640px.py', 640),
])
def test_imagenet_evaluation_resizes_the_short_side_and_centre_crops(config, size):
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope

    from m3i_mm.demo.photo_datasets import photo_path
    path = photo_path('chelsea')  # 451 x 300 PNG: non-square, no JPEG decoder differences
    cfg = load(config)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline = Compose(copy.deepcopy(cfg.test_dataloader.dataset.pipeline))
        packed = pipeline(dict(img_path=path))
    image = packed['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR CHW -> RGB HWC
    expected = official_eval_view(path, size)
    assert image.shape == expected.shape == (size, size, 3)
    np.testing.assert_array_equal(image, expected)


# ------------------------------------------------------------------ single values
def pipeline_types(pipeline) -> list:
    return [t['type'] for t in pipeline]


def test_from_scratch_warm_up_and_precision():
    cfg = load('internimage/internimage-t_32xb128-300e_in1k.py')
    warm_up, cosine = cfg.param_scheduler
    # timm's cosine runs from step 0 under the warm-up (tests/configs/test_timm_fidelity.py)
    assert (warm_up.type, warm_up.end, cosine.begin, cosine.end) == ('LinearLR', 20, 0, 300)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'  # official default: native fp16 AMP
    assert cfg.optim_wrapper.clip_grad.max_norm == 5.0


@pytest.mark.parametrize('config,checkpoint', [
    ('internimage/internimage-l_in22k-pre_32xb16-20e_in1k-384px.py',
     'm3i://internimage_l_22k_192to384'),
    ('internimage/internimage-h_in22k-pre_32xb16-20e_in1k-640px.py',
     'm3i://internimage_h_jointto22k_384'),
])
def test_22k_fine_tuning_loads_the_whole_classifier(config, checkpoint):
    model = load(config).model
    assert model.backbone.init_cfg.checkpoint == checkpoint
    assert model.neck.init_cfg == dict(type='Pretrained', checkpoint=checkpoint, prefix='neck.')
    assert model.head.init_cfg == dict(type='m3i_mm.PretrainedImageNet22kTo1k',
                                       checkpoint=checkpoint, prefix='head.')


@pytest.mark.parametrize('config', [
    'upernet/upernet_internimage-t_8xb2-160k_ade20k-512x512.py',
    'upernet/upernet_internimage-h_16xb1-160k_ade20k-896x896.py',
    'mask2former/mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896.py',
])
def test_segmentation_test_resizes_to_a_multiple_of_32(config):
    cfg = load(config)
    types = pipeline_types(cfg.test_dataloader.dataset.pipeline)
    assert types.index('ResizeToMultiple') == types.index('Resize') + 1
    assert 'test_cfg' not in cfg.model.data_preprocessor  # nothing padded at test time


def test_upernet_h_drop_path_and_poly_schedule():
    cfg = load('upernet/upernet_internimage-h_16xb1-160k_ade20k-896x896.py')
    assert cfg.model.backbone.drop_path_rate == 0.5
    warm_up, poly = cfg.param_scheduler
    # mmcv's poly policy with linear warm-up: the warm-up factor multiplies the poly lr
    assert (warm_up.begin, warm_up.end, poly.begin, poly.end) == (0, 1500, 0, 160000)


@pytest.mark.parametrize('config', [
    'dino/dino-4scale_internimage-xl_8xb2-12e_coco.py',
    'dino/dino-4scale_internimage-t_8xb2-layer-decay-12e_coco.py',
])
def test_dino_1x_official_data_and_warm_up(config):
    cfg = load(config)
    assert cfg.model.data_preprocessor.pad_size_divisor == 32
    crops = [t for branch in cfg.train_dataloader.dataset.pipeline[3].transforms
             for t in branch if t.type == 'RandomCrop']
    assert crops and all(t.allow_negative_crop is False for t in crops)
    warm_up = cfg.param_scheduler[0]
    assert (warm_up.type, warm_up.by_epoch, warm_up.end, warm_up.start_factor) == \
        ('LinearLR', False, 500, 0.001)


def test_o365_coco_fine_tuning_scales_queries_and_schedule():
    cfg = load('dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py')
    resize = cfg.train_dataloader.dataset.pipeline[3]
    assert (resize.type, resize.scale) == ('RandomResize', [(2000, 600), (2000, 1800)])
    test_resize = cfg.test_dataloader.dataset.pipeline[1]
    assert tuple(test_resize.scale) == (2000, 1000)
    assert cfg.model.num_queries == 900 and cfg.model.dn_cfg.group_cfg.num_dn_queries == 1000
    assert cfg.train_cfg.max_iters == 20000 and cfg.model.test_cfg.max_per_img == 300
    assert cfg.load_from == 'm3i://dino_4scale_cbinternimage_h_objects365_80classes'


@pytest.mark.parametrize('config,expected', [
    ('upernet/upernet_internimage-t_8xb2-160k_ade20k-512x512_ms-flip-test.py',
     [(1024, 256), (1536, 384), (2048, 512), (2560, 640), (3072, 768), (3584, 896)]),
    ('upernet/upernet_internimage-l_8xb2-160k_ade20k-640x640_ms-flip-test.py',
     [(1920, 480), (2560, 640), (3200, 800)]),
    ('mask2former/mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896_'
     'ms-flip-test.py', [(3072, 768), (3328, 832), (3584, 896), (3840, 960), (4096, 1024)]),
])
def test_multi_scale_flip_test_scales(config, expected):
    cfg = load(config)
    assert cfg.model.type == 'SegTTAModel'
    tta = cfg.test_dataloader.dataset.pipeline[1]
    scales, multiple, flips = tta.transforms[0], tta.transforms[1], tta.transforms[2]
    assert [tuple(t.scale) for t in scales] == expected
    assert multiple[0].type == 'ResizeToMultiple' and multiple[0].size_divisor == 32
    assert sorted(t.prob for t in flips) == [0.0, 1.0]
    base = load(config.replace('_ms-flip-test', ''))
    assert cfg.model.module == base.model


def test_every_ms_flip_config_has_its_single_scale_config():
    import glob
    found = glob.glob(osp.join(CONFIG_ROOT, '**', '*_ms-flip-test.py'), recursive=True)
    assert len(found) >= 9
    for path in found:
        assert osp.isfile(path.replace('_ms-flip-test', '')), path
        assert Config.fromfile(path).model.type == 'SegTTAModel', path
