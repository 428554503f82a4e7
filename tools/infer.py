#!/usr/bin/env python
"""Single-image inference with a config of the tree: classification, detection, segmentation.

    python tools/infer.py configs/mask_rcnn/mask-rcnn_internimage-t_fpn_1x_coco.py \\
        m3i://mask_rcnn_internimage_t_fpn_1x_coco demo.jpg --out demo_pred.png
    python tools/infer.py configs/upernet/upernet_internimage-t_8xb2-160k_ade20k-512x512.py \\
        demo.jpg                          # the zoo checkpoint whose model-index Config it is
    python tools/infer.py CONFIG work_dirs/run/epoch_12.pth demo.jpg --out pred.png

The config's ``default_scope`` picks the OpenMMLab inferencer: mmpretrain's
``ImageClassificationInferencer``, mmdet's ``DetInferencer`` or mmseg's ``MMSegInferencer``.
The checkpoint (a file, a URL or ``m3i://NAME``) must hold every weight of the model, as for
``tools/test.py`` (``--allow-partial-checkpoint`` runs one that does not); the class names come
from the checkpoint's ``dataset_meta``, else from the config's test dataset (the official
InternImage checkpoints carry none). The predictions are printed, and the picture the
inferencer draws is written to ``--out``.
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from m3i_mm.cli.launch import check_checkpoint_arg, load_config, run_cli  # noqa: E402
from m3i_mm.utils.errors import UsageError  # noqa: E402

TASKS = {'mmpretrain': 'classification', 'mmdet': 'detection', 'mmseg': 'segmentation'}
PICTURE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
MAX_PRINTED = 20


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Predict one image with a config and a checkpoint; print the '
        'predictions and write the picture.',
        usage='%(prog)s CONFIG [CHECKPOINT|m3i://NAME] IMAGE [options]')
    parser.add_argument('config', help='config file path')
    parser.add_argument('paths', nargs='+', metavar='[CHECKPOINT] IMAGE',
                        help='checkpoint (file, URL or m3i://NAME; default: the zoo entry '
                        'whose Config is CONFIG) and the image')
    parser.add_argument('--out', help='picture to write (.png, .jpg, ...; default: '
                        'work_dirs/infer/<image name>.png)')
    parser.add_argument('--device', help='cpu, cuda, cuda:1, ... (default: cuda if there '
                        'is one)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: the least score printed and drawn (default 0.3)')
    parser.add_argument('--topk', type=int, default=5,
                        help='classification: how many classes to print (default 5)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentation: opacity of the drawn masks (default 0.5)')
    parser.add_argument('--allow-partial-checkpoint', action='store_true',
                        help='run even if the checkpoint lacks some of the model\'s weights '
                        '(they keep their initial values)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    args = parser.parse_args(argv)
    if len(args.paths) > 2:
        parser.error(f'expected CONFIG [CHECKPOINT] IMAGE, got {len(args.paths) + 1} paths')
    args.checkpoint, args.image = (None, *args.paths) if len(args.paths) == 1 else args.paths
    if args.topk < 1:
        parser.error(f'--topk must be >= 1, got {args.topk}')
    if not 0.0 <= args.opacity <= 1.0:
        parser.error(f'--opacity must be in [0, 1], got {args.opacity}')
    if args.out is None:
        args.out = osp.join('work_dirs', 'infer',
                            osp.splitext(osp.basename(args.image))[0] + '.png')
    if osp.splitext(args.out)[1].lower() not in PICTURE_SUFFIXES:
        parser.error(f'--out must be a picture file ({", ".join(PICTURE_SUFFIXES)}), got '
                     f'{args.out!r}')
    return args


def zoo_checkpoint_of(config: str) -> str:
    """``m3i://NAME`` of the zoo entry whose ``Config`` is ``config`` (same file name)."""
    from m3i_mm.zoo import load_index
    name = osp.basename(config)
    entries = [entry.name for entry in load_index().values()
               if entry.config and osp.basename(entry.config) == name]
    if not entries:
        raise UsageError(f'no checkpoint given, and no model-zoo entry names {name} as its '
                         'Config: give CHECKPOINT (a file, a URL or m3i://NAME; '
                         '`python tools/zoo.py list` shows the zoo)')
    return f'm3i://{entries[0]}'


def read_image(path: str):
    """The image as mmcv reads it (BGR), or a one-line error."""
    import mmcv
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path!r}')
    image = mmcv.imread(path)
    if image is None:
        raise UsageError(f'cannot read image {path!r}: not a picture OpenCV can decode')
    return image


def config_dataset_meta(cfg, scope: str) -> dict:
    """``METAINFO`` of the config's test dataset class, updated by its ``metainfo``."""
    import importlib
    datasets = importlib.import_module(f'{scope}.registry').DATASETS  # scope: mmdet, mmseg
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    meta = {}
    dataset_class = datasets.get(dataset['type']) if dataset.get('type') else None
    meta.update(getattr(dataset_class, 'METAINFO', None) or {})
    meta.update(dataset.get('metainfo') or {})
    return {key.lower(): value for key, value in meta.items()}


def checkpoint_dataset_meta(checkpoint: dict) -> dict:
    """The class names (and palette) a checkpoint carries (mmengine ``dataset_meta``, or the
    ``CLASSES``/``PALETTE`` of OpenMMLab 0.x files); empty when it has none."""
    meta = checkpoint.get('meta') or {}
    if 'dataset_meta' in meta:
        return {key.lower(): value for key, value in meta['dataset_meta'].items()}
    if 'CLASSES' in meta:
        return {key.lower(): value for key, value in meta.items()
                if key in ('CLASSES', 'PALETTE')}
    return {}


class CheckedWeights:
    """Mixin for mmdet's and mmseg's inferencers: refuse a checkpoint that does not cover the
    model, and take the class names from the config when the checkpoint has none (they
    would otherwise fall back to COCO's or Cityscapes' names)."""

    def __init__(self, *args, checkpoint_name: str, allow_partial: bool, **kwargs) -> None:
        self.checkpoint_name = checkpoint_name
        self.allow_partial = allow_partial
        super().__init__(*args, **kwargs)

    def _load_weights_to_model(self, model, checkpoint, cfg) -> None:
        from m3i_mm.engine.hooks import check_checkpoint_coverage
        check_checkpoint_coverage(model, checkpoint, self.checkpoint_name, self.allow_partial,
                                  action='run')
        with warnings.catch_warnings():  # "use COCO classes by default": replaced below
            warnings.simplefilter('ignore', UserWarning)
            super()._load_weights_to_model(model, checkpoint, cfg)
        config_meta = config_dataset_meta(cfg, cfg.default_scope)
        meta = dict(getattr(model, 'dataset_meta', None) or {})
        if not checkpoint_dataset_meta(checkpoint) and 'classes' in config_meta:
            meta = {key: config_meta[key] for key in ('classes', 'palette')
                    if key in config_meta}
        classes = meta.get('classes')
        if classes is not None and len(meta.get('palette') or ()) != len(classes):
            # a checkpoint with names but no colours: mmseg's visualizer needs one per class
            palette = config_meta.get('palette')
            if palette is None or len(palette) != len(classes):
                colours = np.random.RandomState(0).randint(0, 256, (len(classes), 3))
                palette = [tuple(colour) for colour in colours.tolist()]
            meta['palette'] = palette
        model.dataset_meta = meta


def build_inferencer(cfg, task: str, checkpoint: str, device: str, allow_partial: bool):
    """The codebase's inferencer with ``checkpoint`` loaded into the config's model."""
    if task == 'classification':
        from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model
        from mmpretrain.apis import ImageClassificationInferencer, get_model
        from m3i_mm.engine.hooks import check_checkpoint_coverage
        model = get_model(cfg, pretrained=False)  # class names: the config's dataset class
        loaded = _load_checkpoint(checkpoint, map_location='cpu')
        check_checkpoint_coverage(model, loaded, checkpoint, allow_partial, action='run')
        _load_checkpoint_to_model(model, loaded)
        if checkpoint_dataset_meta(loaded):
            model._dataset_meta = checkpoint_dataset_meta(loaded)
        return ImageClassificationInferencer(model, pretrained=False, device=device)
    if task == 'detection':
        from mmdet.apis import DetInferencer as Inferencer
        kwargs = dict(show_progress=False)
    else:
        from mmseg.apis import MMSegInferencer as Inferencer
        kwargs = {}
    checked = type(f'Checked{Inferencer.__name__}', (CheckedWeights, Inferencer), {})
    return checked(model=cfg, weights=checkpoint, device=device, checkpoint_name=checkpoint,
                   allow_partial=allow_partial, **kwargs)


def predict(inferencer, task: str, image: str, args) -> Tuple[object, np.ndarray]:
    """The prediction (a data sample; for segmentation the label map) and the drawn picture
    (RGB) of one image."""
    if task == 'classification':
        prediction = inferencer(image, return_datasamples=True)[0]
        with tempfile.TemporaryDirectory() as show_dir:  # it draws only into a folder
            picture = inferencer.visualize([image], [prediction], show_dir=show_dir)[0]
        return prediction, picture
    if task == 'detection':
        results = inferencer(image, return_vis=True, no_save_vis=True, return_datasamples=True,
                             pred_score_thr=args.score_thr)
        return results['predictions'][0], results['visualization'][0]
    # mmseg returns no picture with data samples; for one image: the label map and picture
    results = inferencer(image, return_vis=True, opacity=args.opacity)
    return results['predictions'], results['visualization']


def describe(task: str, prediction, classes: Optional[Sequence[str]], args) -> List[str]:
    """Printable lines of a prediction."""

    def name(label: int) -> str:
        if classes is not None and label < len(classes):
            return f'{classes[label]} (label {label})'
        return f'label {label}'

    lines = []
    if task == 'classification':
        scores = prediction.pred_score
        top = scores.topk(min(args.topk, scores.numel()))
        lines.append(f'classification: top {len(top.indices)} of {scores.numel()} classes')
        for score, label in zip(top.values.tolist(), top.indices.tolist()):
            lines.append(f'  {name(label)}: {score:.4f}')
    elif task == 'detection':
        instances = prediction.pred_instances
        keep = instances.scores >= args.score_thr
        kept = instances[keep]
        masks = ', with masks' if len(kept) and 'masks' in kept else ''
        lines.append(f'detection: {len(kept)} objects with score >= {args.score_thr:g} '
                     f'(of {len(instances)}){masks}')
        order = kept.scores.argsort(descending=True)[:MAX_PRINTED]
        for i in order.tolist():
            box = ', '.join(f'{v:.1f}' for v in kept.bboxes[i].tolist())
            lines.append(f'  {name(int(kept.labels[i]))}: {float(kept.scores[i]):.3f} at '
                         f'[{box}]')
        if len(kept) > MAX_PRINTED:
            lines.append(f'  ... and {len(kept) - MAX_PRINTED} more')
    else:
        counts = np.bincount(np.asarray(prediction).ravel())  # prediction: the label map
        present = np.flatnonzero(counts)
        shares = sorted(((counts[c] / counts.sum(), int(c)) for c in present), reverse=True)
        lines.append(f'segmentation: {len(present)} classes in the {counts.sum()} pixels '
                     '(share of the image)')
        for share, label in shares[:MAX_PRINTED]:
            lines.append(f'  {name(label)}: {100 * share:.1f}%')
        if len(shares) > MAX_PRINTED:
            lines.append(f'  ... and {len(shares) - MAX_PRINTED} more')
    return lines


def classes_of(inferencer, task: str) -> Optional[Sequence[str]]:
    if task == 'classification':
        return inferencer.classes
    return (getattr(inferencer.model, 'dataset_meta', None) or {}).get('classes')


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    import torch
    cfg = load_config(args.config, args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise UsageError(f'config default_scope {scope!r} is not one of {sorted(TASKS)} '
                         '(classification, detection, segmentation)')
    task = TASKS[scope]
    read_image(args.image)
    import m3i_mm  # noqa: F401  (registers the m3i_mm scope and the m3i:// scheme)
    checkpoint = args.checkpoint or zoo_checkpoint_of(args.config)
    check_checkpoint_arg(checkpoint, 'checkpoint')
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    inferencer = build_inferencer(cfg, task, checkpoint, device, args.allow_partial_checkpoint)
    prediction, picture = predict(inferencer, task, args.image, args)
    import mmcv
    if not mmcv.imwrite(picture[..., ::-1], args.out):  # RGB -> BGR
        raise UsageError(f'cannot write {args.out!r}')
    print(f'config: {args.config} ({task}); checkpoint: {checkpoint}; image: {args.image}')
    print('\n'.join(describe(task, prediction, classes_of(inferencer, task), args)))
    print(f'picture: {os.path.abspath(args.out)}')


if __name__ == '__main__':
    run_cli(main)
