#!/usr/bin/env python
"""Train with any config of the m3i_mm tree (mmpretrain, mmdet or mmseg).

The config's ``default_scope`` picks the codebase; ``m3i_mm`` modules are found through
their scoped type names (``type='m3i_mm.InternImage'``).

Examples::

    python tools/train.py configs/m3i/m3i_internimage-t_8xb64-100e_in1k.py
    tools/dist_train.sh configs/mask_rcnn/mask-rcnn_internimage-t_fpn_1x_coco.py 8 --amp
    python tools/train.py CONFIG --resume            # newest checkpoint in the work dir
    python tools/train.py CONFIG --resume path/to/iter_4000.pth
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from m3i_mm.utils.launch import (add_common_args, build_runner, load_config,  # noqa: E402
                                 prepare_distributed, run_cli)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model from an m3i_mm config.')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='auto|PATH',
        help="resume training: 'auto' (or no value) takes the newest checkpoint in the "
        'work dir; a path resumes from that checkpoint')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision (AmpOptimWrapper, dynamic loss scale)')
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def setup_cfg(args: argparse.Namespace):
    cfg = load_config(args.config, args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        import torch
        if not torch.cuda.is_available():
            raise SystemExit('error: --amp needs a CUDA device (mmengine AmpOptimWrapper).')
        wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper_type in ('OptimWrapper', 'AmpOptimWrapper'):
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        else:
            print(f'--amp ignored: optim_wrapper type {wrapper_type!r} manages precision itself',
                  file=sys.stderr)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint not found: {args.resume!r}')
        cfg.resume = True
        cfg.load_from = args.resume
    prepare_distributed(cfg, args.launcher)
    return cfg


def report_finished(runner) -> None:
    """One line per rank, so multi-process runs can be checked rank by rank."""
    import torch
    from mmengine.dist import get_dist_info
    rank, world_size = get_dist_info()
    model = getattr(runner.model, 'module', runner.model)
    with torch.no_grad():  # sharded (FSDP2 DTensor) parameters are gathered first
        checksum = sum(float((p.full_tensor() if hasattr(p, 'full_tensor') else p).double().sum())
                       for p in model.parameters())
    # one write per line: ranks share the terminal, and print() writes the text and the
    # newline separately, which lets two ranks' lines run together
    sys.stdout.write(f'[m3i_mm] rank {rank}/{world_size} finished training at iter '
                     f'{runner.iter}, parameter checksum {checksum:.10e}\n')
    sys.stdout.flush()


def main(argv=None) -> None:
    args = parse_args(argv)
    import m3i_mm  # noqa: F401  (registers the m3i_mm scope and the checkpoint allow-list)
    cfg = setup_cfg(args)
    runner = build_runner(cfg)
    runner.train()
    report_finished(runner)


if __name__ == '__main__':
    run_cli(main)
