#!/usr/bin/env python
"""Where do the DCNv3 layers look? The sampling points of chosen output locations, drawn on
the image in pixel coordinates.

Examples::

    # the last DCNv3 layer of stage 2, at two places of the image
    python tools/analysis/visualize_sampling.py \\
        configs/demo/upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py backbone.pth photo.png \\
        --points 120,80 200,150 --stage 2 --out sampling.png
    # the last two layers of stage 2, stacked (each point of the top layer expands into
    # the points of the layer below), with an official checkpoint from the model zoo
    python tools/analysis/visualize_sampling.py \\
        configs/mask_rcnn/mask-rcnn_internimage-t_fpn_1x_coco.py \\
        m3i://mask_rcnn_internimage_t_fpn_1x_coco photo.jpg --points 400,300 --layers 2

CONFIG is any config of the tree whose model has an InternImage backbone (classifier,
detector, segmentor, M3I pre-training). Without CHECKPOINT the weights named by the
backbone's ``init_cfg`` are used, else the backbone is randomly initialised (DCNv3 offsets
are zero at init: the regular grid). An M3I pre-training checkpoint gives its online encoder;
``--prefix target_encoder.module.0.`` gives its EMA encoder.

What is drawn (see ``m3i_mm/analysis/dcnv3_sampling.py`` for the definitions): for each
``--points x,y`` (pixels of IMAGE), the output cell of the stage nearest to it (a star at
the cell's centre), and the sampling points of the chosen layer there, coloured by group,
with an area proportional to the point's modulation weight (its softmax mask; for
``--layers N > 1`` the product of the masks along the path through the stack, each lower
layer's groups sharing a point equally). Cells map to pixels through the stem (stride 4)
and the downsampling layers: cell ``i`` of stage ``S`` is centred on pixel
``4 * 2**S * i`` of the model input; ``--input-size`` resizes the image before the model,
and the points are drawn back on the original image.
"""
import argparse
import json
import os.path as osp
import sys
import textwrap
from typing import List, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from m3i_mm.cli.launch import load_config, run_cli  # noqa: E402
from m3i_mm.utils.errors import UsageError  # noqa: E402

#: Marker area (points^2) of the heaviest point drawn.
MAX_AREA = 90.0


def parse_point(text: str) -> Tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected x,y in pixels, got {text!r}') from None
    return x, y


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Draw the sampling points of DCNv3 layers on an image.',
        usage='%(prog)s CONFIG [CHECKPOINT|m3i://NAME] IMAGE --points x,y [x,y ...] '
        '[options]')
    parser.add_argument('config', help='config with an InternImage backbone')
    parser.add_argument('files', nargs='+', metavar='[CHECKPOINT] IMAGE',
                        help='checkpoint (path, URL or m3i://NAME; optional) and image')
    parser.add_argument('--points', nargs='+', type=parse_point, required=True,
                        metavar='X,Y', help='output locations, in pixels of IMAGE')
    parser.add_argument('--stage', type=int, default=2, help='stage 0..3 (default 2)')
    parser.add_argument('--block', type=int, default=-1,
                        help='block of the stage whose DCNv3 layer is drawn (default: the last)')
    parser.add_argument('--layers', type=int, default=1,
                        help='stack this many DCNv3 layers of the stage, ending at --block '
                        '(default 1: the layer alone)')
    parser.add_argument('--groups', nargs='+', type=int,
                        help='draw only these groups of the top layer (default: all)')
    parser.add_argument('--input-size', type=int, metavar='SHORT',
                        help='resize IMAGE so that its shorter side has this many pixels '
                        'before the model (default: as it is)')
    parser.add_argument('--prefix', default='backbone.',
                        help='key prefix of the backbone in the checkpoint (default '
                        'backbone.; target_encoder.module.0. for the EMA encoder of an M3I '
                        'pre-training checkpoint)')
    parser.add_argument('--max-points', type=int, default=20000,
                        help='draw at most this many points, the heaviest (default 20000)')
    parser.add_argument('--out', help='output PNG (default: sampling_<image>_stage<S>.png)')
    parser.add_argument('--json', help='also write the points (pixels of IMAGE) to this file')
    parser.add_argument('--device', default='cpu', help='torch device (default cpu)')
    parser.add_argument('--dpi', type=int, default=100, help='PNG resolution (default 100)')
    parser.add_argument('--png-colors', type=int, metavar='N',
                        help='reduce the PNG to a palette of N colours (smaller files, e.g. for '
                        'documentation; default: full colour)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.backbone.dcn_backend=pytorch')
    args = parser.parse_args(argv)
    if len(args.files) > 2:
        parser.error(f'expected [CHECKPOINT] IMAGE after CONFIG, got {len(args.files)} paths')
    args.checkpoint = args.files[0] if len(args.files) == 2 else None
    args.image = args.files[-1]
    if args.layers < 1 or args.max_points < 1:
        parser.error('--layers and --max-points must be at least 1')
    if args.input_size is not None and args.input_size < 8:
        parser.error('--input-size must be at least 8 pixels')
    if args.png_colors is not None and not 2 <= args.png_colors <= 256:
        parser.error('--png-colors must be in 2..256')
    if args.out is None:
        stem = osp.splitext(osp.basename(args.image))[0]
        args.out = f'sampling_{stem}_stage{args.stage}.png'
    return args


def select_layers(backbone, stage: int, block: int, layers: int) -> Tuple[list, int]:
    """The DCNv3 layers to stack (lowest first) and the top block's index."""
    from m3i_mm.analysis import stage_layers
    try:
        stage_dcns = stage_layers(backbone, stage)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    depth = len(stage_dcns)
    top = block + depth if block < 0 else block
    if not 0 <= top < depth:
        raise UsageError(f'--block {block}: stage {stage} has blocks 0..{depth - 1}')
    if layers > top + 1:
        raise UsageError(f'--layers {layers}: block {top} of stage {stage} has only '
                         f'{top + 1} DCNv3 layer(s) up to it (stacks stay within a stage)')
    return stage_dcns[top - layers + 1:top + 1], top


def to_cells(points: Sequence[Tuple[float, float]], image_size: Tuple[int, int],
             input_size: Tuple[int, int], map_size: Tuple[int, int], map_y, map_x
             ) -> List[Tuple[int, int]]:
    """Output cells (row, col) of the stage nearest to points given in image pixels.

    Raises:
        UsageError: for a point outside the image.
    """
    height, width = image_size
    cells = []
    for x, y in points:
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise UsageError(f'point ({x:g}, {y:g}) is outside the image: x must be in '
                             f'[0, {width - 1}] and y in [0, {height - 1}] (pixels)')
        x_in, y_in = image_to_input(x, width, input_size[1]), image_to_input(
            y, height, input_size[0])
        row = int(np.clip(np.rint(map_y.inverse(y_in)), 0, map_size[0] - 1))
        col = int(np.clip(np.rint(map_x.inverse(x_in)), 0, map_size[1] - 1))
        cells.append((row, col))
    return cells


def image_to_input(v, image_side: int, input_side: int):
    """Pixel index of IMAGE -> pixel index of the resized model input (pixel centres)."""
    return (v + 0.5) * (input_side / image_side) - 0.5


def input_to_image(v, image_side: int, input_side: int):
    return (v + 0.5) * (image_side / input_side) - 0.5


def max_marker_area(count: int) -> float:
    """Marker area of the heaviest point: :data:`MAX_AREA` for up to 200 points, shrinking
    with the square root of the count beyond (thousands of stacked points stay apart)."""
    return max(6.0, MAX_AREA * min(1.0, (200 / max(count, 1))**0.5))


def group_colours(num_groups: int):
    import matplotlib
    cmap = matplotlib.colormaps['tab10' if num_groups <= 10 else 'tab20' if num_groups <= 20
                                else 'hsv']
    return [cmap(g % cmap.N if num_groups <= 20 else g / num_groups) for g in range(num_groups)]


def draw(image: np.ndarray, xs: np.ndarray, ys: np.ndarray, weights: np.ndarray,
         groups: np.ndarray, num_groups: int, centres: Sequence[Tuple[float, float]],
         grid: Optional[Tuple[np.ndarray, np.ndarray]], title: str, notes: Sequence[str],
         out: str, dpi: int = 100, colors: Optional[int] = None) -> dict:
    """Draw the points on the image and save a PNG.

    Returns:
        ``dict(points=number of points in the scatter, size=(width, height))`` of the PNG.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from m3i_mm.cli.figures import save_png

    height, width = image.shape[:2]
    fig_w = 8.0
    fig_h = fig_w * height / width + 1.9
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes([0.02, 1.35 / fig_h, 0.96, (fig_h - 1.9) / fig_h])
    ax.imshow(image, interpolation='nearest')
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    colours = group_colours(num_groups)
    w_max = float(weights.max()) if weights.size else 1.0
    order = np.argsort(weights, kind='stable')  # heaviest on top
    many = len(xs) > 2000
    max_area = max_marker_area(len(xs))
    scatter = ax.scatter(xs[order], ys[order], s=max_area * weights[order] / w_max,
               c=[colours[g] for g in groups[order]], alpha=0.55 if many else 0.9,
               linewidths=0 if many else 0.4, edgecolors='black')
    if grid is not None:
        ax.scatter(grid[0], grid[1], s=25, marker='+', c='white', linewidths=1.0)
    for index, (cx, cy) in enumerate(centres):
        ax.scatter([cx], [cy], s=220, marker='*', c='white', edgecolors='black',
                   linewidths=1.2, zorder=5)
        if len(centres) > 1:
            ax.annotate(str(index + 1), (cx, cy), xytext=(6, 6), textcoords='offset points',
                        color='white', fontsize=9, weight='bold')
    fig.suptitle(title, fontsize=9, y=1 - 0.08 / fig_h, va='top')

    handles = [Line2D([], [], marker='*', ls='', markersize=12, markerfacecolor='white',
                      markeredgecolor='black', label='output location (cell centre)')]
    shown = sorted(set(groups.tolist()))
    if len(shown) <= 8:
        handles += [Line2D([], [], marker='o', ls='', markersize=7, color=colours[g],
                           label=f'group {g}') for g in shown]
    else:
        handles.append(Line2D([], [], marker='o', ls='', markersize=7, color=colours[shown[0]],
                              label=f'{len(shown)} groups, one colour each'))
    for share in (1.0, 0.25):
        area = max_area * share
        handles.append(Line2D([], [], marker='o', ls='', color='grey',
                              markersize=float(np.sqrt(area)),
                              label=f'weight {share * w_max:.3g}'))
    if grid is not None:
        handles.append(Line2D([], [], marker='+', ls='', color='black', markersize=7,
                              label='regular grid (zero offsets)'))
    fig.legend(handles=handles, loc='lower center', ncol=4, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.38 / fig_h))
    lines = [part for note in notes for part in textwrap.wrap(note, 150)]
    fig.text(0.5, 0.06 / fig_h, '\n'.join(lines), ha='center', va='bottom', fontsize=7)
    save_png(fig, out, dpi, colors)
    plt.close(fig)
    return dict(points=int(scatter.get_offsets().shape[0]), size=(int(fig_w * dpi), int(round(fig_h * dpi))))


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    import torch

    import m3i_mm  # noqa: F401  (registers the m3i_mm scope and the m3i:// scheme)
    from m3i_mm.analysis import (field_of_layer, points_of_stack, record_layer_inputs,
                                 stage_pixel_map)
    from m3i_mm.cli.model_inspection import (build_backbone, image_tensor, normalisation_of,
                                             read_image, resize_short_side)

    cfg = load_config(args.config, args.cfg_options)
    image = read_image(args.image)
    backbone, weights = build_backbone(
        cfg, args.checkpoint, args.prefix, args.config,
        check=lambda b: select_layers(b, args.stage, args.block, args.layers))
    backbone.to(args.device)
    layers, top = select_layers(backbone, args.stage, args.block, args.layers)
    model_image = resize_short_side(image, args.input_size)
    x = image_tensor(model_image, normalisation_of(cfg), args.device)
    with torch.no_grad(), record_layer_inputs(layers) as inputs:
        backbone(x)
    fields = [field_of_layer(layer, inputs[layer]) for layer in layers]
    map_y, map_x = stage_pixel_map(backbone, args.stage)
    image_hw = image.shape[:2]
    input_hw = model_image.shape[:2]
    cells = to_cells(args.points, image_hw, input_hw, fields[-1].output_size, map_y, map_x)
    try:
        points = points_of_stack(fields, cells, args.groups, args.max_points)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def to_image(cells_y, cells_x):
        return (input_to_image(map_x(cells_x), image_hw[1], input_hw[1]),
                input_to_image(map_y(cells_y), image_hw[0], input_hw[0]))

    xs, ys = to_image(points.y, points.x)
    centres = [to_image(np.float64(r), np.float64(c)) for r, c in cells]
    grid = None
    if args.layers == 1:
        geo = fields[-1].geometry
        gx, gy = geo.kernel_grid(torch.device('cpu'), torch.float64)
        grid_cols = np.concatenate([c + gx.numpy() * geo.offset_scale for _, c in cells])
        grid_rows = np.concatenate([r + gy.numpy() * geo.offset_scale for r, _ in cells])
        grid = to_image(grid_rows, grid_cols)

    stride = map_x.scale
    layer_words = (f'block {top}' if args.layers == 1 else
                   f'blocks {top - args.layers + 1}..{top} stacked')
    title = (f'{osp.basename(args.config)}\nweights: {weights}\n'
             f'DCNv3 sampling points, stage {args.stage} (stride {stride:g} px), '
             f'{layer_words}')
    inside = ((xs >= -0.5) & (xs <= image_hw[1] - 0.5) & (ys >= -0.5)
              & (ys <= image_hw[0] - 0.5))
    notes = [f'{len(points)} points, area proportional to the modulation weight '
             + ('(softmax mask)' if args.layers == 1 else
                '(product of the softmax masks along the path, 1/G per lower layer)')
             + f'; colour: group of the top layer ({fields[-1].geometry.group} groups)']
    if points.dropped_weight > 0:
        notes.append(f'the heaviest {len(points)} paths are drawn; the rest carry '
                     f'{100 * points.dropped_weight / points.total_weight:.1f}% of the weight')
    if not inside.all():
        notes.append(f'{int((~inside).sum())} points fall outside the image (zero padding)')
    if input_hw != image_hw:
        notes.append(f'model input {input_hw[1]}x{input_hw[0]} px, drawn on the '
                     f'{image_hw[1]}x{image_hw[0]} px image')
    drawn = draw(image, xs, ys, points.weight, points.group, fields[-1].geometry.group,
                 centres, grid, title, notes, args.out, args.dpi, args.png_colors)

    for index, ((px, py), (row, col), (cx, cy)) in enumerate(zip(args.points, cells, centres)):
        mine = points.location == index
        w = points.weight[mine]
        spread = float((w * np.hypot(xs[mine] - cx, ys[mine] - cy)).sum() / w.sum())
        print(f'point {index + 1} ({px:g}, {py:g}) -> stage {args.stage} cell (row {row}, '
              f'col {col}), centred at ({cx:.1f}, {cy:.1f}): {int(mine.sum())} sampling '
              f'points, weighted mean distance {spread:.1f} px')
    if args.json:
        record = dict(config=args.config, weights=weights, image=args.image,
                      image_size=list(image_hw), input_size=list(input_hw), stage=args.stage,
                      blocks=list(range(top - args.layers + 1, top + 1)),
                      pixel_map=dict(y=[map_y.scale, map_y.offset],
                                     x=[map_x.scale, map_x.offset]),
                      locations=[dict(requested=list(p), cell=list(c), centre=[float(cx),
                                                                              float(cy)])
                                 for p, c, (cx, cy) in zip(args.points, cells, centres)],
                      points=dict(x=xs.tolist(), y=ys.tolist(), weight=points.weight.tolist(),
                                  group=points.group.tolist(),
                                  location=points.location.tolist()),
                      total_weight=points.total_weight, dropped_weight=points.dropped_weight)
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(record, f)
    print(f'wrote {args.out} ({drawn["points"]} points drawn)')


if __name__ == '__main__':
    run_cli(main)
