#!/usr/bin/env python
"""Benchmark InternImage classification models: inference latency/throughput and training.

``--official PATH`` (an OpenGVLab/InternImage checkout) builds the official model with the
same variant and times it in the same run, so ratios come from one machine and one moment.
The official model runs with its pure-PyTorch core (``core_op='DCNv3_pytorch'``) unless
``--official-core DCNv3`` (its compiled CUDA op, if built) is given; it needs ``timm``.

    # CPU: latency per 224-px image at batch 1 (the anchors.md protocol)
    python tools/analysis/benchmark_model.py --device cpu --mode infer --batch 1 \
        --official ~/InternImage
    # GPU: training throughput (bf16 autocast, AdamW) and inference (batch 256)
    python tools/analysis/benchmark_model.py --device cuda --mode train --batch 64 --compile
    python tools/analysis/benchmark_model.py --device cuda --mode infer --batch 256 \
        --dtype fp16 --compile

Reported: ms per iteration (median over ``--iters`` after ``--warmup``; on the CPU the
models take turns, one iteration each per round), images/s and, on CUDA, the peak memory
of the measured iterations.
"""
import argparse
import json
import logging
import os.path as osp
import statistics
import sys
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from timing import median_ms  # noqa: E402

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
# the official classification configs' model settings per variant (T..XL)
OFFICIAL_ARGS = {
    't': dict(channels=64, depths=[4, 4, 18, 4], groups=[4, 8, 16, 32], offset_scale=1.0,
              mlp_ratio=4.0, post_norm=False, layer_scale=None),
    's': dict(channels=80, depths=[4, 4, 21, 4], groups=[5, 10, 20, 40], offset_scale=1.0,
              mlp_ratio=4.0, post_norm=True, layer_scale=1e-5),
    'b': dict(channels=112, depths=[4, 4, 21, 4], groups=[7, 14, 28, 56], offset_scale=1.0,
              mlp_ratio=4.0, post_norm=True, layer_scale=1e-5),
}


# tiny widths for CPU smoke runs (tools/analysis/gpu_check.py --dry-run)
TINY = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16])
ARCHS = ('t', 's', 'b', 'l', 'xl', 'h', 'g', 'tiny')


def build_ours(arch: str, backend: str, with_cp: bool = False) -> nn.Module:
    """InternImage + the official T-XL head as an mmpretrain ImageClassifier.

    (For L..G too: the official H/G classifiers have another head, but the backbone,
    which is what is timed, is theirs.)"""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import m3i_mm  # noqa: F401
    from m3i_mm.utils.package_data import data_path
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(data_path('configs', '_base_', 'models', 'internimage_cls.py'))
    model_cfg = cfg.model
    from m3i_mm.models.backbones.intern_image import InternImage
    settings = TINY if arch == 'tiny' else InternImage.arch_settings[arch]
    model_cfg.backbone.update(arch=dict(TINY) if arch == 'tiny' else arch,
                              dcn_backend=backend, drop_path_rate=0.1, with_cp=with_cp)
    model_cfg.neck.in_channels = settings['channels'] * 8
    model_cfg.head.in_channels = int(settings['channels'] * 8 * 1.5)
    model = MODELS.build(model_cfg)
    # Without a log file, mmengine logs every parameter's initialisation at INFO (thousands
    # of lines before the result): keep only warnings while initialising.
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)

    class Logits(nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, x):
            return self.classifier.head.fc(self.classifier.neck(
                self.classifier.backbone(x))[-1])

    return Logits(model)


def build_official(root: str, arch: str, core_op: str) -> nn.Module:
    from official_internimage import official_internimage_class
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its settings
        return official_internimage_class(root)(core_op=core_op, num_classes=1000,
                                                drop_path_rate=0.1, **OFFICIAL_ARGS[arch])


def make_step(model: nn.Module, args) -> Callable[[], None]:
    """One inference batch or one optimiser step of ``model`` on synthetic images."""
    device, dtype = args.device, DTYPES[args.dtype]
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)
    if args.mode == 'infer':
        model.eval()
        fn = torch.compile(model) if args.compile else model

        def step():
            with torch.inference_mode(), autocast:
                fn(images)
    else:
        model.train()
        fn = torch.compile(model) if args.compile else model
        labels = torch.randint(0, 1000, (args.batch, ), device=device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = nn.functional.cross_entropy(fn(images), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def run_interleaved(steps: Dict[str, Callable[[], None]], args) -> Dict[str, dict]:
    """Median ms per model. On CPU the models take turns, one iteration each per round
    (a noisy machine then slows all alike); on CUDA each is timed alone, with its peak
    memory."""
    results = {}
    if args.device == 'cuda':
        for name, step in steps.items():
            for _ in range(args.warmup):
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            ms = median_ms(step, 'cuda', 0, args.iters)
            results[name] = dict(ms=ms, peak_gb=torch.cuda.max_memory_allocated() / 1e9)
        return results
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(args.iters):
        for name, step in steps.items():
            times[name].append(median_ms(step, 'cpu', 0, 1))
    return {name: dict(ms=statistics.median(t)) for name, t in times.items()}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--arch', choices=ARCHS, default='t',
                        help='InternImage variant (--official: t, s or b); tiny: CPU smoke')
    parser.add_argument('--mode', choices=('infer', 'train'), default='infer')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--dtype', choices=list(DTYPES), default='fp32',
                        help='autocast dtype (fp32: no autocast)')
    parser.add_argument('--backend', default='auto', help='our DCNv3 backend')
    parser.add_argument('--compile', action='store_true', help='torch.compile the models')
    parser.add_argument('--channels-last', action='store_true',
                        help='channels-last input and weights')
    parser.add_argument('--official', help='OpenGVLab/InternImage checkout to compare with')
    parser.add_argument('--official-core', default='DCNv3_pytorch',
                        choices=('DCNv3_pytorch', 'DCNv3'))
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--threads', type=int, help='torch.set_num_threads (CPU)')
    parser.add_argument('--with-cp', action='store_true', help='activation checkpointing')
    parser.add_argument('--json', help='also write the results to this JSON file')
    args = parser.parse_args(argv)
    if args.official and args.arch not in OFFICIAL_ARGS:
        raise SystemExit(f'error: --official compares variants {list(OFFICIAL_ARGS)} only, '
                         f'got --arch {args.arch}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but torch sees no CUDA device')
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device == 'cuda' else \
        f'CPU, {torch.get_num_threads()} threads'
    print(f'# InternImage-{args.arch.upper()} {args.mode}, batch {args.batch}, '
          f'{args.size} px, {args.dtype}{", compiled" if args.compile else ""}: '
          f'{device_name}, torch {torch.__version__}')
    torch.manual_seed(0)
    models = {f'm3i_mm ({args.backend})': build_ours(args.arch, args.backend, args.with_cp)}
    if args.official:
        models[f'official ({args.official_core})'] = build_official(
            args.official, args.arch, args.official_core)
    steps = {name: make_step(model, args) for name, model in models.items()}
    results = run_interleaved(steps, args)
    for name, result in results.items():
        params = sum(p.numel() for p in models[name].parameters()) / 1e6
        result.update(params_m=round(params, 1), img_per_s=args.batch / result['ms'] * 1e3)
        peak = f', peak {result["peak_gb"]:.1f} GB' if 'peak_gb' in result else ''
        print(f'{name:<28} {params:7.1f}M params  {result["ms"]:9.1f} ms/iter  '
              f'{args.batch / result["ms"] * 1e3:8.1f} img/s{peak}', flush=True)
    if args.official:
        ours, official = (r['ms'] for r in results.values())
        print(f'm3i_mm is {official / ours:.2f}x the speed of the official model '
              f'({ours:.1f} vs {official:.1f} ms/iter)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=device_name, torch=torch.__version__,
                           settings={k: v for k, v in vars(args).items() if k != 'json'},
                           models=results), f, indent=1)

if __name__ == '__main__':
    main()
