"""``tools/test.py CONFIG m3i://NAME`` end to end with official-format checkpoints.

For each head family whose loading differs (Mask R-CNN as is, DINO and CB-InternImage DINO
and Mask2Former converted), a tiny variant of the family's config is evaluated on the tiny
photo datasets by ``tools/test.py``, run as users run it, with a zoo entry whose file has
the official key layout (``official_layouts``) and whose converter is the real entry's.
The file's values are those of a freshly initialised model of the same config, written into
the official names by this test (so the predictions are sane), and the run must load every
weight: no "do not match" report, and the test metrics come out.
"""
import io
import os.path as osp
import textwrap

import pytest
import torch
import yaml

from tests.conftest import REPO, run_tool
from tests.e2e.conftest import check_ok, demo_workspace, parse_metrics  # noqa: F401
from tests.zoo import official_layouts as layouts
from tests.zoo.conftest import server  # noqa: F401
from tests.zoo.test_official_checkpoints import (DINO_EXPECTED, MASK2FORMER_EXPECTED,
                                                  TINY_DINO, TINY_M2F, build_model,
                                                  dino_overrides, expected_place,
                                                  mask2former_overrides, metafile_record,
                                                  tiny_arch)

pytestmark = pytest.mark.slow

COCO_CLASSES = ('dark', 'mid-dark', 'mid-light', 'light')  # the demo COCO set's


def coco_data(size: int) -> str:
    """Config lines: the demo COCO set (boxes only) at ``size`` px, one image per batch."""
    return textwrap.dedent(f'''
        data_root = 'data/demo/coco/'
        test_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='PackDetInputs',
                 meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
        ]
        test_dataloader = dict(
            batch_size=1, num_workers=0, persistent_workers=False,
            dataset=dict(data_root=data_root, metainfo=dict(classes={COCO_CLASSES!r}),
                         ann_file='annotations/instances_val2017.json',
                         data_prefix=dict(img='val2017/'), pipeline=test_pipeline))
        val_dataloader = test_dataloader
        test_evaluator = dict(type='CocoMetric', metric='bbox',
                              ann_file=data_root + 'annotations/instances_val2017.json')
        val_evaluator = test_evaluator
        ''')


def ade_data() -> str:
    """Config lines: the demo ADE20K set at 64 px on the short side."""
    return textwrap.dedent('''
        data_root = 'data/demo/ade'
        test_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(256, 64), keep_ratio=True),
            dict(type='LoadAnnotations', reduce_zero_label=True),
            dict(type='PackSegInputs'),
        ]
        test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                               dataset=dict(data_root=data_root, pipeline=test_pipeline))
        val_dataloader = test_dataloader
        ''')


def config_text(base: str, overrides: dict, data: str) -> str:
    """A config file inheriting ``base`` with flat ``a.b.c`` overrides and data lines."""
    nested: dict = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split('.')
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    lines = [f'_base_ = {osp.join(REPO, base)!r}']
    lines += [f'{key} = {value!r}' for key, value in nested.items()]
    return '\n'.join(lines) + '\n' + data


CASES = {
    # family: (base config, variant, layout(arch), overrides(widths), head rules, data, entry)
    'mask_rcnn': (
        'configs/demo/mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py', 't',
        lambda a: layouts.mask_rcnn(a, classes=4, fc=64),
        lambda w: {'model.roi_head.bbox_head.fc_out_channels': 64}, [], '',
        'mask_rcnn_internimage_t_fpn_1x_coco', ['coco/bbox_mAP', 'coco/segm_mAP']),
    'dino': (
        'configs/dino/dino-4scale_internimage-t_8xb2-layer-decay-12e_coco.py', 't',
        lambda a: layouts.dino(a, classes=4, **TINY_DINO), dino_overrides, DINO_EXPECTED,
        coco_data(128), 'dino_4scale_internimage_t_1x_coco', ['coco/bbox_mAP']),
    'cb_dino': (
        'configs/dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py', 'h',
        lambda a: layouts.dino(a, classes=4, composite=True, **TINY_DINO), dino_overrides,
        DINO_EXPECTED, coco_data(128), 'dino_4scale_cbinternimage_h_objects365_coco',
        ['coco/bbox_mAP']),
    'mask2former': (
        'configs/mask2former/'
        'mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896.py', 'h',
        lambda a: layouts.mask2former(a, classes=150, **TINY_M2F),
        lambda w: mask2former_overrides(w, classes=150), MASK2FORMER_EXPECTED, ade_data(),
        'mask2former_internimage_h_896_80k_cocostuff2ade20k', ['mIoU', 'aAcc']),
}


@pytest.mark.parametrize('family', sorted(CASES))
def test_tools_test_evaluates_an_official_format_entry(family, demo_workspace, server,
                                                       tmp_path):
    from mmengine.config import Config
    base, variant, layout_fn, overrides_fn, rules, data, entry, metrics = CASES[family]
    arch = tiny_arch(variant)
    overrides = {'model.backbone.arch': dict(arch, _delete_=True),
                 'model.backbone.dcn_backend': 'pytorch',
                 'model.backbone.with_cp': False, **overrides_fn(layouts.widths(arch))}
    config = tmp_path / f'tiny_{family}.py'
    config.write_text(config_text(base, overrides, data))

    # the official-format file: a fresh model's weights under the official names
    torch.manual_seed(0)
    model = build_model(Config.fromfile(str(config)))
    model.init_weights()
    ours = model.state_dict()
    official = {}
    for key, shape in layout_fn(arch).items():
        value = ours[expected_place(key, rules)]
        assert tuple(value.shape) == tuple(shape), key
        official[key] = value.clone()
    buffer = io.BytesIO()
    torch.save({'state_dict': official, 'meta': {'epoch': 12}}, buffer)
    record = dict(metafile_record(entry), Name=f'tiny_{entry}',
                  Weights=server.serve(f'/hub/tiny_{entry}.pth', buffer.getvalue()))
    index = tmp_path / 'index.yml'
    index.write_text(yaml.safe_dump({'Models': [record]}, sort_keys=False))

    res = run_tool(['tools/test.py', str(config), f'm3i://tiny_{entry}', '--work-dir',
                    str(tmp_path / 'work')], cwd=demo_workspace,
                   env=dict(M3I_MM_MODEL_INDEX=str(index), M3I_MM_HOME=str(tmp_path / 'home'),
                            M3I_MM_OFFLINE='0', HF_HUB_OFFLINE='0'))
    check_ok(res)
    log = res.stdout + res.stderr
    assert 'do not match exactly' not in log, log[-3000:]
    assert osp.isfile(tmp_path / 'home' / 'checkpoints' / f'tiny_{entry}.pth')
    values = parse_metrics(res)
    for name in metrics:
        assert name in values and -1.0 <= float(values[name]) <= 100.0, (name, values)
