#!/usr/bin/env python
"""The `make demo` pipeline (``m3i_mm/demo/pipeline.py``; ``python -m m3i_mm.demo`` is the
same command where m3i_mm is installed): tiny M3I pre-training on photos, then Mask R-CNN
and UperNet fine-tuning and evaluation from the pre-trained backbone.

    python tools/demo.py                       # everything, ~2 min on 2 CPU cores
    python tools/demo.py --pretrain-iters 50   # shorter pre-training
    python tools/demo.py --root DIR            # data and work_dirs under DIR
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from m3i_mm.demo.pipeline import run  # noqa: E402

if __name__ == '__main__':
    run()
