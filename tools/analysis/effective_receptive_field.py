#!/usr/bin/env python
"""The effective receptive field of a stage: a checkpoint next to the same architecture at
random init, as the large-kernel (RepLKNet) and InternImage papers show it.

Examples::

    python tools/analysis/effective_receptive_field.py \\
        configs/mask_rcnn/mask-rcnn_internimage-t_fpn_1x_coco.py \\
        m3i://mask_rcnn_internimage_t_fpn_1x_coco --images val2017/ --num-images 50 \\
        --size 512 --stage 3 --out erf.png

The field (``m3i_mm/analysis/receptive_field.py``, Luo et al. 2016): for each image, the
gradient of the centre output of the stage (summed over channels) with respect to the input
pixels, its magnitude summed over the colour channels, averaged over the images. Images are
resized (shorter side ``--size``, bicubic) and centre-cropped to ``--size`` squares and
normalised as the config's data preprocessor does. The number: the radius, around the centre
output's pixel, of the smallest disc holding 50% / 90% / 99% of the field's mass.

The random-init model is the config's backbone with its default initialisation (seed
``--seed``); InternImage's DCNv3 offsets are zero at init, so it samples the regular 3x3
grid of every layer.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from m3i_mm.cli.launch import load_config, run_cli  # noqa: E402
from m3i_mm.utils.errors import UsageError  # noqa: E402

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
SHARES = (0.5, 0.9, 0.99)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Effective receptive field of a checkpoint and of random init.')
    parser.add_argument('config', help='config with an InternImage backbone')
    parser.add_argument('checkpoint', nargs='?',
                        help="checkpoint (path, URL or m3i://NAME); default: the config's "
                        'backbone init_cfg checkpoint')
    parser.add_argument('--images', nargs='+', required=True, metavar='PATH',
                        help='image files and/or directories of images')
    parser.add_argument('--num-images', type=int, help='use the first N images (sorted)')
    parser.add_argument('--stage', type=int, default=3, help='stage 0..3 (default 3)')
    parser.add_argument('--size', type=int, default=224,
                        help='side of the square model input in pixels (default 224)')
    parser.add_argument('--prefix', default='backbone.',
                        help='key prefix of the backbone in the checkpoint (default backbone.; '
                        'target_encoder.module.0. for the EMA encoder of an M3I checkpoint)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random init')
    parser.add_argument('--scale', choices=('log', 'linear'), default='log',
                        help='colour scale: log10 of the field over its maximum, 3 decades '
                        '(default), or linear')
    parser.add_argument('--out', default='erf.png', help='output PNG (default erf.png)')
    parser.add_argument('--json', help='also write the fields\' radii (and sizes) here')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    parser.add_argument('--png-colors', type=int, metavar='N',
                        help='reduce the PNG to a palette of N colours (smaller files, e.g. for '
                        'documentation; default: full colour)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    args = parser.parse_args(argv)
    if args.size < 32:
        parser.error('--size must be at least 32 pixels')
    if args.num_images is not None and args.num_images < 1:
        parser.error('--num-images must be at least 1')
    if args.png_colors is not None and not 2 <= args.png_colors <= 256:
        parser.error('--png-colors must be in 2..256')
    return args


def list_images(paths: Sequence[str], limit: Optional[int]) -> List[str]:
    """Image files given directly or found (not recursively) in directories, sorted."""
    found = []
    for path in paths:
        if osp.isdir(path):
            found += sorted(osp.join(path, name) for name in os.listdir(path)
                            if name.lower().endswith(IMAGE_EXTENSIONS))
        elif osp.isfile(path):
            found.append(path)
        else:
            raise FileNotFoundError(f'image or directory not found: {path!r}')
    if not found:
        raise UsageError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {" ".join(paths)}')
    return found[:limit] if limit else found


def square_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side resized to ``size``, then the centre ``size x size`` square."""
    from m3i_mm.cli.model_inspection import resize_short_side
    resized = resize_short_side(image, size)
    height, width = resized.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return resized[top:top + size, left:left + size]


def draw(fields: Sequence[np.ndarray], labels: Sequence[str], radii: Sequence[dict],
         centre: Sequence[float], title: str, scale: str, out: str,
         colors: Optional[int] = None) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from m3i_mm.cli.figures import save_png

    fig, axes = plt.subplots(1, len(fields), figsize=(4.2 * len(fields) + 0.6, 5.0), dpi=100,
                             squeeze=False)
    image = None
    for ax, field, label, radius in zip(axes[0], fields, labels, radii):
        relative = field / field.max()
        shown = np.log10(np.maximum(relative, 1e-3)) if scale == 'log' else relative
        image = ax.imshow(shown, cmap='viridis', vmin=-3 if scale == 'log' else 0, vmax=0
                          if scale == 'log' else 1, interpolation='nearest')
        for share, style in zip(SHARES[:2], ('-', '--')):
            ax.add_patch(Circle((centre[1], centre[0]), radius[share], fill=False,
                                edgecolor='white', linestyle=style, linewidth=1.2))
        ax.plot([centre[1]], [centre[0]], marker='+', color='red', markersize=9)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel(f'r50 = {radius[0.5]:.1f} px, r90 = {radius[0.9]:.1f} px, '
                      f'r99 = {radius[0.99]:.1f} px', fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(image, ax=list(axes[0]), fraction=0.03, pad=0.02)
    bar.set_label('log10(field / max)' if scale == 'log' else 'field / max', fontsize=8)
    fig.suptitle(title + '\ncircles: 50% (solid) and 90% (dashed) of the mass around the '
                 'centre output (+)', fontsize=8)
    save_png(fig, out, 100, colors)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    import torch
    from tqdm import tqdm

    import m3i_mm  # noqa: F401  (registers the m3i_mm scope and the m3i:// scheme)
    from m3i_mm.analysis import (effective_receptive_field, mass_radius, stage_features,
                                 stage_layers, stage_pixel_map)
    from m3i_mm.cli.model_inspection import (build_backbone, image_tensor, normalisation_of,
                                             read_image)

    cfg = load_config(args.config, args.cfg_options)
    paths = list_images(args.images, args.num_images)

    def check(backbone):
        try:
            stage_layers(backbone, args.stage)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    trained, weights = build_backbone(cfg, args.checkpoint, args.prefix, args.config,
                                      check=check)
    if weights == 'random init':
        raise UsageError('no weights to compare with random init: give a CHECKPOINT (or a '
                         "config whose backbone init_cfg names one)")
    torch.manual_seed(args.seed)
    random_init, _ = build_backbone(cfg, None, config_path=args.config,
                                    use_config_weights=False)
    norm = normalisation_of(cfg)
    inputs = [image_tensor(square_crop(read_image(p), args.size), norm, args.device)
              for p in paths]
    fields, radii, labels = [], [], []
    map_y, map_x = stage_pixel_map(trained, args.stage)
    for backbone, label in ((trained, f'{weights}'), (random_init, 'random init')):
        backbone.to(args.device)
        field, size = effective_receptive_field(
            lambda x, b=backbone: stage_features(b, x, args.stage), inputs,
            progress=lambda items, name=label: tqdm(items, desc=f'ERF {name}'[:60],
                                                    file=sys.stdout))
        centre = (float(map_y(size[0] // 2)), float(map_x(size[1] // 2)))
        try:
            radius = mass_radius(field, centre, SHARES)
        except ValueError as exc:
            raise UsageError(f'{label}: {exc}') from None
        fields.append(field)
        radii.append(radius)
        labels.append(label)
    title = (f'{osp.basename(args.config)}: effective receptive field of stage {args.stage} '
             f'(stride {map_x.scale:g} px), {len(paths)} image(s) at {args.size}x{args.size} px')
    draw(fields, [f'weights: {label}' for label in labels], radii, centre, title, args.scale,
         args.out, args.png_colors)
    print(f'{"weights":<60} {"r50 px":>7} {"r90 px":>7} {"r99 px":>7}')
    for label, radius in zip(labels, radii):
        print(f'{label[:60]:<60} ' + ' '.join(f'{radius[s]:7.1f}' for s in SHARES))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(dict(config=args.config, stage=args.stage, size=args.size,
                           images=paths, centre=list(centre),
                           fields={label: {f'r{round(100 * s)}': r[s] for s in SHARES}
                                   for label, r in zip(labels, radii)}), f, indent=1)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    run_cli(main)
