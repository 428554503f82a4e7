#!/usr/bin/env python
"""FLOPs and parameters of the model of a config (mmpretrain, mmdet or mmseg), DCNv3 counted.

    python tools/analysis/get_flops.py configs/internimage/internimage-t_32xb128-300e_in1k.py
    python tools/analysis/get_flops.py \\
        configs/internimage/internimage-h_in22k-pre_32xb16-20e_in1k-640px.py
    python tools/analysis/get_flops.py CONFIG --shape 800 1280          # H W
    python tools/analysis/get_flops.py CONFIG --official ~/InternImage  # + the official count

Counted by mmengine's ``FlopAnalyzer`` (``get_model_complexity_info``: a jit trace of the
forward; one multiply-add is one FLOP, the convention of OpenMMLab and of the InternImage
tables) with m3i_mm's rule for the DCNv3 core (``m3i_mm/ops/dcnv3/flops.py``: 5
multiply-adds per sampled value, the official rule), whichever DCNv3 backend runs. What runs:

* classification (``default_scope='mmpretrain'``): the whole classifier, image to logits
  (the official tables count the head; mmpretrain's own ``get_flops.py`` stops before it);
  default size: the test pipeline's ``CenterCrop``, else 224;
* detection (``mmdet``): backbone, neck and heads on one image, without post-processing
  (mmdet's ``tensor`` mode); default size 800 x 1280 (H x W), the size of the official tables
  (``1280x800``);
* segmentation (``mmseg``): backbone and decode heads (``tensor`` mode) on one image;
  default size 512 x 2048, the size of the official tables (whatever the training crop).

Counts depend on shapes alone for classifiers, so their weights are built empty by default
(``--weights empty``: every parameter a broadcast zero that takes no memory; InternImage-G,
3B parameters, counts in ~2 GB); ``--weights random`` initialises them as training would
(the counts are the same). Detection and segmentation models always get random weights: the
boxes a detector keeps, and so the cost of its RoI heads, depend on values. ``--official PATH`` (an
OpenGVLab/InternImage checkout; needs ``timm``) also builds the official classifier of the
same variant from the checkout, with its pure-PyTorch DCNv3 core, and counts it with the
official counting code (``get_flops`` of ``detection/get_flops.py``: mmcv's hook counter plus
``5 * n * k * c`` per DCNv3 block), side by side.
"""
import argparse
import contextlib
import io
import os.path as osp
import sys
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from m3i_mm.cli.launch import load_config, run_cli  # noqa: E402
from m3i_mm.utils.errors import UsageError  # noqa: E402

TASKS = {'mmpretrain': 'classification', 'mmdet': 'detection', 'mmseg': 'segmentation'}
DEVICES = ('cpu', 'cuda')
# names of the DCNv3 core in FlopAnalyzer.by_operator() (its simplified op names)
DCNV3_OPERATORS = ('dcnv3_forward', 'forward')


@dataclass
class Complexity:
    """A count: multiply-adds (``flops``), of them the DCNv3 core's, and parameters."""
    flops: int
    params: int
    dcnv3_flops: int = 0
    uncounted: Optional[Dict[str, int]] = None  # traced ops without a FLOP rule
    table: str = ''


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Count the FLOPs (multiply-adds) and parameters of a config\'s model.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                        help='input size: H W, or one number for a square (default: by task, '
                        'see the module docstring)')
    parser.add_argument('--device', default='cpu', choices=DEVICES, help='where to run')
    parser.add_argument('--weights', choices=('empty', 'random'),
                        help='empty: parameters that take no memory (counts need only '
                        'shapes; classifiers only, their default); random: initialised as '
                        'for training (the default of detectors and segmentors)')
    parser.add_argument('--table', action='store_true',
                        help='also print the per-module table of parameters and FLOPs')
    parser.add_argument('--max-depth', type=int, default=3,
                        help='module depth of the --table (default 3)')
    parser.add_argument('--official', metavar='PATH',
                        help='an OpenGVLab/InternImage checkout: also count the official '
                        'classifier of the same variant with the official counting code')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    args = parser.parse_args(argv)
    if args.shape is not None:
        if len(args.shape) not in (1, 2) or min(args.shape) <= 0:
            parser.error(f'--shape takes one or two positive sizes (H W), got {args.shape}')
    return args


def task_of(cfg) -> str:
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise UsageError(f'get_flops: config default_scope {scope!r} is not one of '
                         f'{sorted(TASKS)} (classification, detection, segmentation)')
    return TASKS[scope]


def _pair(size) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise ValueError(size)


def default_shape(cfg, task: str) -> Tuple[Tuple[int, int], str]:
    """The input size ``(H, W)`` to count at, and where it comes from."""
    if task == 'classification':
        pipeline = (cfg.get('test_dataloader') or {}).get('dataset', {}).get('pipeline') or []
        for step in pipeline:
            if step.get('type') == 'CenterCrop' and step.get('crop_size'):
                # mmpretrain's CenterCrop takes (w, h)
                w, h = _pair(step['crop_size'])
                return (h, w), 'the CenterCrop of the test pipeline'
        return (224, 224), 'default for classification'
    if task == 'detection':
        return (800, 1280), 'default for detection (the official tables\' 1280x800)'
    return (512, 2048), ('default for segmentation (the official tables\' and Swin\'s '
                         'convention)')


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every parameter on the meta device: its initialisation costs nothing. The
    rest of the construction runs as usual (``torch.device('meta')`` as a context would
    also move tensors that construction code reads, e.g. with ``.item()``)."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: Optional[nn.Parameter]) -> None:
        if param is not None and param.device.type != 'meta':
            param = nn.Parameter(param.to('meta'), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def empty_parameters(model: nn.Module, device: str) -> None:
    """Replace the meta parameters of ``model`` by zeros broadcast to their shapes: real
    tensors on ``device`` with one stored element each, which layers compute with as with
    any weights, so a traced forward has the shapes and FLOPs of the real model (the jit
    trace of the counter cannot run meta convolutions)."""
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.device.type == 'meta':
                zero = torch.zeros((), dtype=param.dtype, device=device)
                module._parameters[name] = nn.Parameter(  # counters count trainable ones
                    zero.expand(param.shape), requires_grad=param.requires_grad)


def build_model(cfg, device: str, weights: str) -> nn.Module:
    """The config's model in eval mode on ``device``, with ``'empty'`` or ``'random'``
    weights (checkpoints are not loaded)."""
    from mmengine.registry import MODELS, init_default_scope
    import m3i_mm  # noqa: F401  (registers the m3i_mm scope)
    init_default_scope(cfg.get('default_scope'))
    if weights == 'empty':
        with parameters_on_meta():
            model = MODELS.build(cfg.model)
        empty_parameters(model, device)
    else:
        model = MODELS.build(cfg.model)
    return model.to(device).eval()


class TensorForward(nn.Module):
    """The model's ``tensor`` mode on images alone (what the jit trace calls), with the
    data samples detection and segmentation heads need for their image sizes."""

    def __init__(self, model: nn.Module, task: str, shape: Tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.data_samples = None
        if task != 'classification':
            h, w = shape
            meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                        batch_input_shape=(h, w), scale_factor=(1.0, 1.0))
            if task == 'detection':
                from mmdet.structures import DetDataSample as DataSample
            else:
                from mmseg.structures import SegDataSample as DataSample
            self.data_samples = [DataSample(metainfo=meta)]

    def forward(self, images: torch.Tensor):
        if self.data_samples is None:
            return self.model(images, mode='tensor')
        return self.model(images, self.data_samples, mode='tensor')


def count_model(model: nn.Module, task: str, shape: Tuple[int, int], device: str,
                table: bool = False, max_depth: int = 3) -> Complexity:
    """Count ``model`` (built by :func:`build_model`) on one ``3 x H x W`` image."""
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.analysis.print_helper import complexity_stats_table
    images = torch.randn(1, 3, *shape, device=device)
    analyzer = FlopAnalyzer(TensorForward(model, task, shape), (images, ))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        flops = analyzer.total()
        by_operator = analyzer.by_operator()
        uncounted = dict(analyzer.unsupported_ops())
        text = complexity_stats_table(analyzer, max_depth=max_depth + 1,
                                      show_param_shapes=False) if table else ''
    return Complexity(flops=flops, params=parameter_count(model)[''],
                      dcnv3_flops=sum(by_operator.get(op, 0) for op in DCNV3_OPERATORS),
                      uncounted=uncounted, table=text)


def official_count(root: str, model: nn.Module, shape: Tuple[int, int], device: str,
                   weights: str) -> Complexity:
    """The official classifier of the variant of ``model`` (ours), counted by the official
    counting code (:func:`official_internimage.official_get_flops`)."""
    from official_internimage import official_classifier, official_get_flops
    from m3i_mm.models.backbones.intern_image import InternImage
    from m3i_mm.models.necks.intern_image_necks import InternImageCLIPNeck
    from m3i_mm.ops.dcnv3.flops import dcnv3_flops
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, InternImage) or not hasattr(model, 'head'):
        raise UsageError('--official compares InternImage classifiers (mmpretrain '
                         'ImageClassifier configs); the official detection and segmentation '
                         'counters run mmdet 2.x / mmseg 0.x models')
    num_classes = getattr(model.head, 'num_classes', 1000)
    clip_projector = isinstance(getattr(model, 'neck', None), InternImageCLIPNeck)
    get_flops = official_get_flops(root)
    try:
        with parameters_on_meta() if weights == 'empty' else contextlib.nullcontext():
            official = official_classifier(root, backbone.arch, num_classes, clip_projector)
    except ModuleNotFoundError as error:  # the official model imports timm
        raise UsageError(f'--official: the official model needs the {error.name!r} package '
                         f'(pip install {error.name})') from error
    if weights == 'empty':
        empty_parameters(official, device)
    official = official.to(device).eval()

    class WithBackbone(nn.Module):  # the official function reads model.backbone
        def __init__(self, classifier: nn.Module) -> None:
            super().__init__()
            self.backbone = classifier

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.backbone(images)

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        flops, params = get_flops(WithBackbone(official), (3, *shape))
    # the DCNv3 term the official function adds to mmcv's count (per block: stride 4 * 2**i,
    # 9 points, all channels; fractional sizes where the input is not a multiple of 32)
    h, w = shape
    dcnv3 = sum(depth * dcnv3_flops(1, h / (4 * 2**i), w / (4 * 2**i), 1, 9,
                                    official.channels * 2**i)
                for i, depth in enumerate(official.depths))
    return Complexity(flops=int(round(flops)), params=int(params), dcnv3_flops=int(dcnv3))


def giga(value: float) -> str:
    return f'{value / 1e9:.3f} G'


def mega(value: float) -> str:
    return f'{value / 1e6:.2f} M'


def report(config: str, task: str, shape: Tuple[int, int], source: str, ours: Complexity,
           official: Optional[Complexity] = None) -> List[str]:
    """The printed summary, line by line."""
    h, w = shape
    lines = [f'config: {config} ({task})',
             f'input: 1 x 3 x {h} x {w} ({source})',
             f'FLOPs: {giga(ours.flops)} (multiply-adds; DCNv3 core {giga(ours.dcnv3_flops)})',
             f'params: {mega(ours.params)}']
    if ours.uncounted:
        ops = ', '.join(f'{name} x{n}' for name, n in sorted(ours.uncounted.items()))
        lines.append(f'not counted (no FLOP rule; element-wise or cheap): {ops}')
    if official is not None:
        lines += [f'official counting code, official model: FLOPs {giga(official.flops)} '
                  f'(DCNv3 core {giga(official.dcnv3_flops)}), params '
                  f'{mega(official.params)}',
                  f'ours / official: FLOPs {ours.flops / official.flops:.4f}, params '
                  f'{ours.params / official.params:.4f}']
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    task = task_of(cfg)
    weights = args.weights or ('empty' if task == 'classification' else 'random')
    if weights == 'empty' and task != 'classification':
        raise UsageError(f'--weights empty counts classifiers only: the cost of {task} heads '
                         'depends on the boxes or masks the weights select; use --weights '
                         'random')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device cuda: no CUDA device here; use --device cpu')
    if args.official and not osp.isdir(args.official):
        raise UsageError(f'--official {args.official!r}: no such directory')
    if args.shape:
        shape, source = (args.shape[0], args.shape[-1]), '--shape'
    else:
        shape, source = default_shape(cfg, task)
    with contextlib.redirect_stdout(io.StringIO()):  # construction chatter (weight init)
        model = build_model(cfg, args.device, weights)
    ours = count_model(model, task, shape, args.device, args.table, args.max_depth)
    official = official_count(args.official, model, shape, args.device, weights) \
        if args.official else None
    if args.table:
        print(ours.table)
    print('\n'.join(report(args.config, task, shape, source, ours, official)))


if __name__ == '__main__':
    run_cli(main)
