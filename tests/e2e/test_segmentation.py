"""UperNet from a tiny M3I backbone on an ADE20k-format photo set, end to end: tools/train.py
for a few iterations, then tools/test.py with mmseg's IoUMetric."""
import pytest

from tests.e2e.conftest import assert_scores, last_checkpoint, parse_metrics, run_test_tool, train

pytestmark = pytest.mark.slow


def test_ade20k_upernet_reports_miou(demo_workspace, m3i_backbone):
    path, _ = m3i_backbone
    work_dir = train('ade', demo_workspace, path, 'train_cfg.max_iters=4',
                     'train_cfg.val_begin=1000')
    metrics = parse_metrics(run_test_tool('ade', demo_workspace, last_checkpoint(work_dir)))
    assert_scores(metrics, ['aAcc', 'mIoU', 'mAcc'], 0.0, 100.0)
