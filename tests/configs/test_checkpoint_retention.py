"""Checkpoint retention and evaluation interval, value for value against the official files
(OpenGVLab/InternImage 31c962d; configs/README.md "Checkpoints and evaluation").

Official -> mmengine: mmcv's ``checkpoint_config`` (``interval``, ``max_keep_ckpts``) and
``evaluation`` (``interval``, ``save_best``) become ``default_hooks.checkpoint`` and
``train_cfg.val_interval``; mmcv's ``save_best='auto'`` (the first metric) is mmengine's
``'auto'``; the classification code's best top-1 is ``'accuracy/top1'``.
"""
import glob
import os.path as osp

import pytest

from tests.configs.test_all_configs import CONFIG_ROOT, DOWNSTREAM, load

D, S = 'detection/configs/', 'segmentation/configs/'
# retention: (by_epoch, interval, max_keep_ckpts, save_best, val_interval)
EVERY_EPOCH_KEEP_3 = (True, 1, 3, 'auto', 1)
SEG = (False, 1000, 1, 'mIoU', 16000)
# classification/main.py: SAVE_FREQ 1, --save-ckpt-num 1 (utils.save_checkpoint deletes the
# checkpoint SAVE_CKPT_NUM * SAVE_FREQ epochs back), EVAL_FREQ 1, best by acc1
CLS = (True, 1, 1, 'accuracy/top1', 1)


def _official() -> dict:
    table = {}
    for size in 'tsb':
        for sched in ('1x', '3x'):
            name = '1x' if sched == '1x' else 'ms-crop-3x'
            table[f'mask_rcnn/mask-rcnn_internimage-{size}_fpn_{name}_coco.py'] = (
                D + f'coco/mask_rcnn_internimage_{size}_fpn_{sched}_coco.py', EVERY_EPOCH_KEEP_3)
        table[f'internimage/internimage-{size}_32xb128-300e_in1k.py'] = (
            f'classification/configs/without_lr_decay/internimage_{size}_1k_224.yaml', CLS)
    for size in ('l', 'xl'):
        table[f'cascade_mask_rcnn/cascade-mask-rcnn_internimage-{size}_fpn_1x_coco.py'] = (
            D + f'coco/cascade_internimage_{size}_fpn_1x_coco.py', EVERY_EPOCH_KEEP_3)
        table[f'cascade_mask_rcnn/cascade-mask-rcnn_internimage-{size}_fpn_32xb2-ms-crop-3x_'
              'coco.py'] = (D + f'coco/cascade_internimage_{size}_fpn_3x_coco.py',
                            EVERY_EPOCH_KEEP_3)
        table[f'internimage/internimage-{size}_in22k-pre_32xb16-20e_in1k-384px.py'] = (
            f'classification/configs/without_lr_decay/internimage_{size}_22kto1k_384.yaml',
            CLS)
    table.update({
        'internimage/internimage-h_in22k-pre_32xb16-20e_in1k-640px.py':
            ('classification/configs/without_lr_decay/internimage_h_22kto1k_640.yaml', CLS),
        'internimage/internimage-h_in22k-pre_32xb16-20e_in1k-384px.py':
            ('classification/configs/internimage_h_22kto1k_384.yaml', CLS),
        'internimage/internimage-g_in22k-pre_64xb8-20e_in1k-512px.py':
            ('classification/configs/without_lr_decay/internimage_g_22kto1k_512.yaml', CLS),
        'internimage/internimage-h_in22k-pre_32xb16-100e_inat2018-384px.py':
            ('classification/configs/inaturalist2018/internimage_h_22ktoinat18_384.yaml', CLS),
        'dino/dino-4scale_internimage-t_8xb2-layer-decay-12e_coco.py':
            (D + 'coco/dino_4scale_internimage_t_1x_coco_layer_wise_lr.py', EVERY_EPOCH_KEEP_3),
        'dino/dino-4scale_internimage-l_8xb2-layer-decay-12e_coco.py':
            (D + 'coco/dino_4scale_internimage_l_1x_coco_layer_wise_lr.py', EVERY_EPOCH_KEEP_3),
        'dino/dino-4scale_internimage-l_8xb2-backbone-0.1x-12e_coco.py':
            (D + 'coco/dino_4scale_internimage_l_1x_coco_0.1x_backbone_lr.py',
             EVERY_EPOCH_KEEP_3),
        # checkpoint_config = dict(interval=200, max_keep_ckpts=3);
        # evaluation = dict(interval=200, save_best='auto')
        'dino/dino-4scale_internimage-h_o365-pre_64xb1-20k_coco.py':
            (D + 'coco/dino_4scale_internimage_h_objects365_coco_ss.py',
             (False, 200, 3, 'auto', 200)),
        'dino/dino-4scale_internimage-g_o365-pre_64xb1-20k_coco.py':
            (D + 'coco/dino_4scale_internimage_g_objects365_coco_ss.py',
             (False, 200, 3, 'auto', 200)),
        'dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py':
            (D + 'coco/dino_4scale_cbinternimage_h_objects365_coco_ss.py',
             (False, 200, 3, 'auto', 200)),
        # checkpoint_config = dict(interval=500, max_keep_ckpts=10);
        # evaluation = dict(interval=500) (no save_best)
        'lvis/dino-4scale_cb-internimage-h_o365-pre_64xb1-80k_lvis-v1-minival.py':
            (D + 'lvis/dino_4scale_cbinternimage_h_objects365_lvis_minival_ss.py',
             (False, 500, 10, None, 500)),
        'lvis/dino-4scale_cb-internimage-h_o365-pre_64xb1-80k_lvis-v1.py':
            (D + 'lvis/dino_4scale_cbinternimage_h_objects365_lvis_val_ss.py',
             (False, 500, 10, None, 500)),
        # checkpoint_config = dict(by_epoch=False, interval=1000, max_keep_ckpts=1);
        # evaluation = dict(interval=8000 / 2000, metric='mIoU', save_best='mIoU')
        'mask2former/mask2former_internimage-h_16xb1-80k_coco-stuff164k-896x896.py':
            (S + 'coco_stuff164k/mask2former_internimage_h_896_80k_cocostuff164k.py',
             (False, 1000, 1, 'mIoU', 8000)),
        'mask2former/mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896.py':
            (S + 'ade20k/mask2former_internimage_h_896_80k_cocostuff2ade20k_ss.py',
             (False, 1000, 1, 'mIoU', 2000)),
    })
    for size, crop, gpus in [('t', 512, '8xb2'), ('s', 512, '8xb2'), ('b', 512, '8xb2'),
                             ('l', 640, '8xb2'), ('xl', 640, '8xb2'), ('h', 896, '16xb1'),
                             ('g', 896, '16xb1')]:
        # checkpoint_config = dict(by_epoch=False, interval=1000, max_keep_ckpts=1);
        # evaluation = dict(interval=16000, metric='mIoU', save_best='mIoU')
        table[f'upernet/upernet_internimage-{size}_{gpus}-160k_ade20k-{crop}x{crop}.py'] = (
            S + f'ade20k/upernet_internimage_{size}_{crop}_160k_ade20k.py', SEG)
    return table


OFFICIAL_RETENTION = _official()


def retention(config: str) -> tuple:
    cfg = load(config)
    hook = cfg.default_hooks.checkpoint
    return (hook.get('by_epoch', True), hook.interval, hook.get('max_keep_ckpts', -1),
            hook.get('save_best'), cfg.train_cfg.get('val_interval', 1))


@pytest.mark.parametrize('config', sorted(OFFICIAL_RETENTION))
def test_retention_matches_the_official_file(config):
    official_file, expected = OFFICIAL_RETENTION[config]
    assert osp.isfile(osp.join(CONFIG_ROOT, config)), config
    assert retention(config) == expected, official_file


def test_every_config_with_an_official_counterpart_is_checked():
    assert len(OFFICIAL_RETENTION) == 36
    train_configs = [c for c in DOWNSTREAM if not c.startswith('demo') and
                     '_ms-flip-test' not in c]
    assert set(OFFICIAL_RETENTION) <= set(train_configs)


@pytest.mark.parametrize('config', [c for c in DOWNSTREAM if not c.startswith('demo')])
def test_every_downstream_config_keeps_a_bounded_number_of_checkpoints(config):
    """The retention rule of configs without an official counterpart is their family's (the
    table says which); none keeps every checkpoint (mmengine's default)."""
    by_epoch, interval, keep, save_best, val_interval = retention(config)
    assert 1 <= keep <= 10, (config, keep)
    family = config.split('/')[0]
    if family in ('mask_rcnn', 'cascade_mask_rcnn') or (
            family == 'lvis' and config.startswith('lvis/mask-rcnn')) or (
            family == 'dino' and '12e' in config):
        assert retention(config) == EVERY_EPOCH_KEEP_3, config
    if family == 'internimage':
        assert retention(config) == CLS, config
    if family == 'upernet' or config.endswith('16xb1-160k_ade20k-896x896.py'):
        assert retention(config) == SEG, config


def test_test_time_augmentation_configs_inherit_their_config():
    found = glob.glob(osp.join(CONFIG_ROOT, '**', '*_ms-flip-test.py'), recursive=True)
    assert found
    for path in found:
        config = osp.relpath(path, CONFIG_ROOT)
        assert retention(config) == retention(config.replace('_ms-flip-test', ''))


#: The first metric each evaluator reports (what ``save_best='auto'`` picks).
FIRST_METRIC = {'CocoMetric': 'coco/bbox_mAP', 'LVISMetric': 'lvis/bbox_AP',
                'IoUMetric': 'mIoU', 'Accuracy': 'accuracy/top1'}


@pytest.mark.parametrize('config', [c for c in DOWNSTREAM if '_ms-flip-test' not in c])
def test_the_best_checkpoint_can_be_chosen(config):
    """mmengine infers 'greater' or 'less' from the metric's name and fails at the first
    evaluation when it cannot (LVIS's 'bbox_AP'): every config's rule resolves."""
    from mmengine.registry import HOOKS
    cfg = load(config)
    hook_cfg = dict(cfg.default_hooks.checkpoint)
    if not hook_cfg.get('save_best'):
        return
    evaluator = cfg.val_evaluator
    kind = (evaluator[0] if isinstance(evaluator, list) else evaluator)['type'].split('.')[-1]
    hook_cfg.pop('_scope_', None)
    hook = HOOKS.build(dict(hook_cfg, type='CheckpointHook'))
    first = FIRST_METRIC[kind]
    key = first if hook_cfg['save_best'] == 'auto' else hook_cfg['save_best']
    hook._init_rule(hook.rules, [key])
    assert hook.is_better_than[key](2.0, 1.0), config
