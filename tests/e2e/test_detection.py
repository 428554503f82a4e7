"""Mask R-CNN from a tiny M3I backbone on COCO- and LVIS-format photo sets, end to end:
tools/train.py for a few iterations, then tools/test.py with mmdet's CocoMetric and m3i_mm's
LVISMetric (mmdet's, made to work with the PyPI lvis package on numpy >= 1.24)."""
import pytest

from tests.e2e.conftest import (assert_scores, check_ok, last_checkpoint, parse_metrics,
                                run_test_tool, train)

pytestmark = pytest.mark.slow
SKIP_VALIDATION = 'train_cfg.val_begin=1000'  # tools/test.py evaluates instead


def test_coco_mask_rcnn_reports_box_and_mask_ap(demo_workspace, m3i_backbone):
    path, _ = m3i_backbone
    work_dir = train('coco', demo_workspace, path, SKIP_VALIDATION, 'train_cfg.max_epochs=1')
    metrics = parse_metrics(run_test_tool('coco', demo_workspace, last_checkpoint(work_dir)))
    main = [f'coco/{kind}_mAP{suffix}' for kind in ('bbox', 'segm')
            for suffix in ('', '_50', '_75')]
    assert_scores(metrics, main, 0.0, 1.0)
    # -1 marks an area range without ground truth (COCO's convention)
    by_area = [f'coco/{kind}_mAP_{area}' for kind in ('bbox', 'segm') for area in 'sml']
    assert_scores(metrics, by_area, -1.0, 1.0)


def test_lvis_mask_rcnn_reports_lvis_ap(demo_workspace, m3i_backbone):
    path, _ = m3i_backbone
    work_dir = train('lvis', demo_workspace, path, SKIP_VALIDATION)
    res = run_test_tool('lvis', demo_workspace, last_checkpoint(work_dir))
    check_ok(res)
    metrics = parse_metrics(res)
    keys = [f'lvis/{kind}_{item}' for kind in ('bbox', 'segm')
            for item in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')]
    assert_scores(metrics, keys, -1.0, 1.0)
    assert_scores(metrics, ['lvis/bbox_AP', 'lvis/segm_AP'], 0.0, 1.0)
