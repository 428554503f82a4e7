#!/usr/bin/env python
"""Browse what a config feeds its model, in the OpenMMLab ``browse_dataset.py`` convention.

Examples::

    # M3I pre-training: per sample, the source image with both views' crop boxes, the two
    # views (flips marked), the mixed canvas and its mask, the label or caption, the source
    python tools/analysis/browse_dataset.py \\
        configs/m3i/m3i_internimage-tiny_1xb8-300it_photos.py --show-number 8 --output-dir work_dirs/browse_m3i
    # any downstream config: handed over to mmdet's, mmseg's or mmpretrain's browser
    python tools/analysis/browse_dataset.py \\
        configs/demo/mask-rcnn_internimage-tiny_fpn_1xb2-2e_demo-coco.py --output-dir work_dirs/browse_coco --show-number 4

M3I configs (model ``m3i_mm.M3I``) are browsed here: the training dataset and sampler of the
config are built as training builds them and batches are drawn in training order (the
``--seed`` of the sampler). A mixed canvas pairs sample ``i`` of a batch (image a) with
sample ``(i + 1) % N`` (image b), as the model does; its block mask is drawn with the
model's generator and settings (``mask_ratio``, ``mask_cfg``) from ``--seed`` (training
draws its own masks each iteration). Configs without mixing (``mix=False``) show the masked
patches of view 1 (replaced by the mask token after the stem); ``mask_ratio=0`` shows view 1.

Other configs are handed over to the browser of their ``default_scope`` (mmdet's and mmseg's
``tools/analysis_tools/browse_dataset.py``, mmpretrain's
``tools/visualization/browse_dataset.py``, as installed with the packages); ``--show-number``
is translated (mmdet/mmseg: ``train_dataloader.dataset.indices=N``) and any option this
tool does not know is passed on (e.g. ``--mode concat`` for mmpretrain).
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

from m3i_mm.cli.launch import load_config, run_cli  # noqa: E402
from m3i_mm.utils.errors import UsageError  # noqa: E402

#: The browser of each downstream scope, relative to the installed package.
DOWNSTREAM_BROWSERS = {
    'mmdet': ('mmdet', '.mim/tools/analysis_tools/browse_dataset.py'),
    'mmseg': ('mmseg', '.mim/tools/analysis_tools/browse_dataset.py'),
    'mmpretrain': ('mmpretrain', '.mim/tools/visualization/browse_dataset.py'),
}
#: Dataset wrappers whose ``dataset`` key holds the dataset to limit with ``indices``.
WRAPPERS = ('RepeatDataset', 'ClassBalancedDataset', 'MultiImageMixDataset')
VIEW_COLOURS = ('#1f77b4', '#ff7f0e')  # view 1 (input), view 2 (target)
PATCH = 16  # pixels per patch of M3I's mask grid


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Browse the samples a config feeds its model.')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--output-dir', help='save the pictures here (one PNG per sample)')
    parser.add_argument('--not-show', action='store_true', help='do not open windows')
    parser.add_argument('--show-number', type=int, default=None,
                        help='number of samples to show (M3I default 8; downstream: all)')
    parser.add_argument('--show-interval', type=float, default=2,
                        help='seconds each window is shown (default 2)')
    parser.add_argument('--png-colors', type=int, metavar='N',
                        help='M3I: reduce the PNGs to a palette of N colours (smaller files)')
    parser.add_argument('--seed', type=int, default=0,
                        help='M3I: seed of the sampler and of the mixing masks (default 0)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    args, rest = parser.parse_known_args(argv)
    if args.show_number is not None and args.show_number < 1:
        parser.error('--show-number must be at least 1')
    if args.png_colors is not None and not 2 <= args.png_colors <= 256:
        parser.error('--png-colors must be in 2..256')
    return args, rest


def has_display() -> bool:
    return sys.platform in ('darwin', 'win32') or bool(os.environ.get('DISPLAY')
                                                      or os.environ.get('WAYLAND_DISPLAY'))


# ------------------------------------------------------------------------ hand-over
def browser_script(scope: str) -> str:
    """Path of the installed downstream browser for ``scope``."""
    import importlib.util
    if scope not in DOWNSTREAM_BROWSERS:
        raise UsageError(f'no dataset browser for default_scope {scope!r}: this tool browses '
                         'M3I configs and hands mmdet, mmseg and mmpretrain configs over to '
                         'their own browsers')
    package, relative = DOWNSTREAM_BROWSERS[scope]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f'{package} is not installed; it browses {scope} configs')
    path = osp.join(list(spec.submodule_search_locations)[0], relative)
    if not osp.isfile(path):
        raise UsageError(f'{package} is installed without its tools ({path} is missing); '
                         f'reinstall it with pip (the wheel ships them in .mim/tools)')
    return path


def limit_key(dataset_cfg: dict) -> Optional[str]:
    """The ``--cfg-options`` key that limits the (possibly wrapped) training dataset to its
    first N samples, or None if it cannot be limited (a concatenation)."""
    key, node = 'train_dataloader.dataset', dataset_cfg
    while isinstance(node, dict) and str(node.get('type', '')).split('.')[-1] in WRAPPERS:
        key, node = key + '.dataset', node.get('dataset')
    if not isinstance(node, dict) or 'datasets' in node:
        return None
    return key + '.indices'


def downstream_command(cfg, args: argparse.Namespace, rest: Sequence[str]) -> List[str]:
    """The command line of the downstream browser."""
    scope = cfg.get('default_scope')
    # through m3i_mm.cli.downstream_browse: the browsers need two fixes in the pinned stack
    command = [sys.executable, '-m', 'm3i_mm.cli.downstream_browse', browser_script(scope),
               args.config]
    if args.output_dir:
        command += ['--output-dir', args.output_dir]
    if args.not_show or not has_display():
        command.append('--not-show')
    command += ['--show-interval', str(args.show_interval)]
    options = [f'{k}={v!r}' if isinstance(v, str) else f'{k}={v}'
               for k, v in (args.cfg_options or {}).items()]
    if args.show_number is not None:
        if scope == 'mmpretrain':
            command += ['--show-number', str(args.show_number)]
        else:
            key = limit_key(cfg.train_dataloader.dataset)
            if key is None:
                print('[browse_dataset] warning: the training dataset is a concatenation; '
                      '--show-number is ignored', file=sys.stderr)
            else:
                options.append(f'{key}={args.show_number}')
    if options:
        command += ['--cfg-options', *options]
    return command + list(rest)


def hand_over(cfg, args: argparse.Namespace, rest: Sequence[str]) -> None:
    if args.output_dir is None and (args.not_show or not has_display()):
        raise UsageError('no display here: pass --output-dir DIR to save the pictures')
    command = downstream_command(cfg, args, rest)
    print(f'[browse_dataset] {cfg.get("default_scope")} config: running {command[3]} '
          f'{" ".join(command[4:])}', flush=True)
    env = dict(os.environ)
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    code = subprocess.call(command, env=env)
    if code:
        raise SystemExit(code)


# ------------------------------------------------------------------------ M3I
class RecordingPipeline:
    """Wraps a source's pipeline and keeps the decoded image it was last given."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.last_image: Optional[np.ndarray] = None

    def __call__(self, sample: dict) -> dict:
        self.last_image = sample['img']
        return self.pipeline(sample)


def m3i_mixing(cfg) -> dict:
    """``mix``, ``mask_ratio`` and ``mask_cfg`` of the config's M3I model (class defaults
    where the config does not set them)."""
    import inspect

    from m3i_mm.models.selfsup.m3i import M3I
    params = inspect.signature(M3I.__init__).parameters
    model = cfg.model
    return dict(mix=bool(model.get('mix', params['mix'].default)),
                mask_ratio=float(model.get('mask_ratio', params['mask_ratio'].default)),
                mask_cfg=dict(model.get('mask_cfg') or {}))


def build_m3i_data(cfg, seed: int):
    """The training dataset (with recording pipelines), its sampler and the batch size."""
    from mmengine.registry import DATA_SAMPLERS, DATASETS, init_default_scope
    init_default_scope(cfg.get('default_scope') or 'mmpretrain')
    loader = cfg.train_dataloader
    dataset = DATASETS.build(loader.dataset)
    if not hasattr(dataset, 'pipelines'):
        raise UsageError(f'{type(dataset).__name__} is not an m3i_mm.MultiSourceDataset: the '
                         'M3I browser needs the sources of a multi-source dataset')
    dataset.pipelines = [RecordingPipeline(p) for p in dataset.pipelines]
    sampler_cfg = dict(loader.get('sampler') or dict(type='DefaultSampler', shuffle=True))
    sampler_cfg.update(dataset=dataset, seed=seed)
    sampler = DATA_SAMPLERS.build(sampler_cfg)
    batch_size = int(sampler_cfg.get('batch_size') or loader.get('batch_size') or 1)
    return dataset, sampler, batch_size


def draw_batches(dataset, sampler, batch_size: int, count: int):
    """Yield ``(batch index, [(sample, decoded source image), ...])`` in training order,
    whole batches (mixing pairs the samples of a batch) until ``count`` samples are out."""
    indices = iter(sampler)
    shown, batch_index = 0, 0
    while shown < count:
        batch = []
        for _ in range(batch_size):
            try:
                index = next(indices)
            except StopIteration:
                break
            sample = dataset[index]
            source, _ = dataset.locate(int(index))
            batch.append((sample, dataset.pipelines[source].last_image))
        if not batch:
            return
        yield batch_index, batch
        shown += len(batch)
        batch_index += 1


def label_text(dataset, sample) -> str:
    data_sample = sample['data_samples']
    meta = data_sample.metainfo
    parts = []
    if 'gt_label' in data_sample:
        label = int(data_sample.gt_label[0])
        classes = dataset.sources[meta['source']].metainfo.get('classes') or []
        parts.append(f'label {label}' + (f' ({classes[label]})' if label < len(classes) else ''))
    if meta.get('caption'):
        parts.append(f'caption "{meta["caption"]}"')
    return ', '.join(parts) or 'no label, no caption'


def canvas_and_mask(views1, mixing: dict, seed: int, batch_index: int):
    """The canvases the model sees and the patch mask, for one batch of view-1 images
    ``(N, 3, S, S)`` uint8 (None mask: no masking)."""
    import torch

    from m3i_mm.models.layers.block_mask import BlockMaskGenerator, mix_pairs
    n, _, height, width = views1.shape
    if mixing['mask_ratio'] == 0:
        return views1, None
    generator = BlockMaskGenerator((height // PATCH, width // PATCH),
                                   mask_ratio=mixing['mask_ratio'], **mixing['mask_cfg'])
    mask = generator(n, generator=torch.Generator().manual_seed(seed * 100003 + batch_index))
    if mixing['mix']:
        return mix_pairs(views1, mask), mask
    return views1, mask


def to_rgb(chw_bgr) -> np.ndarray:
    return np.ascontiguousarray(chw_bgr.permute(1, 2, 0).numpy()[..., ::-1])


def draw_sample(path: Optional[str], original: np.ndarray, sample: dict, canvas: np.ndarray,
                mask: Optional[np.ndarray], mixing: dict, title: str, label: str,
                partner: str, show: bool, interval: float, colors: Optional[int] = None
                ) -> None:
    import matplotlib
    if not show:
        matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from m3i_mm.cli.figures import save_png

    meta = sample['data_samples'].metainfo
    views = sample['inputs']
    boxes, flips = np.asarray(meta['crop_boxes']), np.asarray(meta['flips'])
    panels = 5 if mask is not None else 4
    fig, axes = plt.subplots(1, panels, figsize=(3.0 * panels, 3.9), dpi=100)
    axes[0].imshow(original[..., ::-1])  # sources decode BGR
    for v, (box, flip) in enumerate(zip(boxes, flips)):
        x1, y1, x2, y2 = box
        axes[0].add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                    edgecolor=VIEW_COLOURS[v], linewidth=2,
                                    linestyle='-' if v == 0 else '--'))
        axes[0].text(x1, y1, f' view {v + 1}' + (' (flipped)' if flip else ''), fontsize=7,
                     color='white', va='top',
                     bbox=dict(facecolor=VIEW_COLOURS[v], edgecolor='none', pad=1))
    axes[0].set_title(f'source image {original.shape[1]}x{original.shape[0]}', fontsize=8)
    for v in range(2):
        ax = axes[1 + v]
        ax.imshow(to_rgb(views[v]))
        for spine in ax.spines.values():
            spine.set_edgecolor(VIEW_COLOURS[v])
            spine.set_linewidth(3)
        ax.set_title(f'view {v + 1} ({"input" if v == 0 else "target"})'
                     + (', flipped' if flips[v] else ''), fontsize=8)
    ax = axes[3]
    ax.imshow(canvas)
    if mask is not None:
        side = canvas.shape[0] // mask.shape[0]
        for r, c in zip(*np.nonzero(mask)):
            if mixing['mix']:  # outline the patches that show image b
                patch = Rectangle((c * side - 0.5, r * side - 0.5), side, side, fill=False,
                                  edgecolor='#d62728', linewidth=0.6)
            else:  # grey out the patches the mask token replaces
                patch = Rectangle((c * side - 0.5, r * side - 0.5), side, side,
                                  facecolor=(0.5, 0.5, 0.5, 0.85), edgecolor='none')
            ax.add_patch(patch)
        ax.set_title('mixed canvas (red: image b)' if mixing['mix'] else
                     'input (grey: mask token)', fontsize=8)
        axes[4].imshow(np.where(mask[..., None], np.array([214, 39, 40], np.uint8),
                                np.array([255, 255, 255], np.uint8)), interpolation='nearest')
        axes[4].set_title(f'mask {mask.shape[0]}x{mask.shape[1]} patches: {int(mask.sum())} '
                          + ('from b' if mixing['mix'] else 'masked'), fontsize=8)
    else:
        ax.set_title('model input (view 1, no mask)', fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.text(0.5, 0.03, label + (f'\n{partner}' if partner else ''), ha='center', fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.82, bottom=0.14, wspace=0.05)
    if path:
        save_png(fig, path, 100, colors)
    if show:
        plt.show(block=False)
        plt.pause(interval)
    plt.close(fig)


def browse_m3i(cfg, args: argparse.Namespace, rest: Sequence[str]) -> None:
    if rest:
        raise UsageError(f'unknown options for an M3I config: {" ".join(rest)}')
    show = not args.not_show and has_display()
    if args.output_dir is None and not show:
        raise UsageError('no display here: pass --output-dir DIR to save the pictures')
    from tqdm import tqdm
    count = args.show_number or 8
    mixing = m3i_mixing(cfg)
    dataset, sampler, batch_size = build_m3i_data(cfg, args.seed)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    import torch
    written = 0
    progress = tqdm(total=count, desc='samples', file=sys.stdout)
    for batch_index, batch in draw_batches(dataset, sampler, batch_size, count):
        views1 = torch.stack([sample['inputs'][0] for sample, _ in batch])
        canvases, masks = canvas_and_mask(views1, mixing, args.seed, batch_index)
        for position, (sample, original) in enumerate(batch):
            if written == count:
                break
            meta = sample['data_samples'].metainfo
            name = meta.get('source_name', str(meta.get('source')))
            partner = ''
            if masks is not None and mixing['mix']:
                other = batch[(position + 1) % len(batch)][0]['data_samples'].metainfo
                partner = (f'image b of the canvas: batch position {(position + 1) % len(batch)}'
                           f', source "{other.get("source_name")}", '
                           f'{osp.basename(str(other.get("img_path", "")))}')
            title = (f'batch {batch_index}, position {position} | source "{name}" | '
                     f'{osp.basename(str(meta.get("img_path", "")))}')
            path = (osp.join(args.output_dir, f'{written:04d}_{name}.png')
                    if args.output_dir else None)
            draw_sample(path, original, sample, to_rgb(canvases[position]),
                        None if masks is None else masks[position].numpy(), mixing, title,
                        label_text(dataset, sample), partner, show, args.show_interval,
                        args.png_colors)
            written += 1
            progress.update()
    progress.close()
    if args.output_dir:
        print(f'wrote {written} pictures to {args.output_dir}')


def main(argv: Optional[List[str]] = None) -> None:
    args, rest = parse_args(argv)
    import m3i_mm  # noqa: F401  (registers the m3i_mm scope)
    from m3i_mm.cli.model_inspection import is_m3i_config
    cfg = load_config(args.config, args.cfg_options)
    if is_m3i_config(cfg):
        browse_m3i(cfg, args, rest)
    else:
        hand_over(cfg, args, rest)


if __name__ == '__main__':
    run_cli(main)
