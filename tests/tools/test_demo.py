"""tools/demo.py (`make demo`): tiny M3I pre-training -> backbone -> detection and
segmentation fine-tuning and evaluation, in a directory of its own."""
import os.path as osp
import re

import pytest

from tests.conftest import run_tool


@pytest.mark.slow
def test_demo_runs_end_to_end_and_prints_the_metrics(tmp_path):
    res = run_tool(['tools/demo.py', '--root', str(tmp_path), '--pretrain-iters', '4'],
                   cwd=str(tmp_path), timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert 'M3I terms: dense_same' in out and '[demo] finished in' in out
    backbone = tmp_path / 'work_dirs' / 'm3i_internimage-tiny_1xb8-300it_photos' / 'backbone.pth'
    assert backbone.is_file()
    # the summary lines carry the real metrics of both evaluations
    box_ap = re.search(r'3-mask-rcnn-coco: coco/bbox_mAP=([0-9.]+)', out)
    miou = re.search(r'4-upernet-ade: aAcc=[0-9.]+, mIoU=([0-9.]+)', out)
    assert box_ap and 0.0 <= float(box_ap.group(1)) <= 1.0, out[-2000:]
    assert miou and 0.0 <= float(miou.group(1)) <= 100.0, out[-2000:]
    for step in ('1-m3i-pretrain', '2-extract-backbone', '3-mask-rcnn-coco-test',
                 '4-upernet-ade-test'):
        assert osp.isfile(tmp_path / 'work_dirs' / 'demo_logs' / f'{step}.log'), step
