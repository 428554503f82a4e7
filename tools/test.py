#!/usr/bin/env python
"""Evaluate a checkpoint with any config of the m3i_mm tree (mmpretrain, mmdet or mmseg).

The checkpoint must hold every weight of the model (a checkpoint of another model would
otherwise be scored with the missing weights at their initial values):
``--allow-partial-checkpoint`` evaluates it anyway.

Examples::

    python tools/test.py configs/upernet/upernet_internimage-t_8xb2-160k_ade20k-512x512.py \
        work_dirs/upernet/iter_160000.pth
    tools/dist_test.sh CONFIG CHECKPOINT 8 --out results.pkl
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from m3i_mm.cli.launch import (add_common_args, build_runner,  # noqa: E402
                                 check_checkpoint_arg, exit_with_launcher, launcher_rank,
                                 load_config, prepare_distributed, run_cli)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (path, URL or m3i:// name)')
    parser.add_argument('--out', help='also dump the raw predictions to this .pkl file')
    parser.add_argument(
        '--allow-partial-checkpoint', action='store_true',
        help='evaluate even if the checkpoint lacks some of the model\'s weights (they keep '
        'their initial values); by default such a checkpoint, e.g. one of another model, '
        'is refused')
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
    if launcher_rank(args.launcher) == 0:  # it writes the logs
        from m3i_mm.utils.work_dir_lock import check_writable_dir
        check_writable_dir(cfg.work_dir)
    check_checkpoint_arg(args.checkpoint, 'checkpoint')
    cfg.load_from = args.checkpoint
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit(f'error: --out must be a .pkl file, got {args.out!r}')
        evaluator = cfg.test_evaluator
        dump = dict(type='DumpResults', out_file_path=args.out)
        cfg.test_evaluator = [*evaluator, dump] if isinstance(evaluator, list) else \
            [evaluator, dump]
    prepare_distributed(cfg, args.launcher)
    return cfg


def main(argv=None) -> None:
    args = parse_args(argv)
    exit_with_launcher(args.launcher)
    import m3i_mm  # noqa: F401  (registers the m3i_mm scope and the checkpoint allow-list)
    from mmengine.dist import get_rank
    from m3i_mm.engine.hooks import CheckpointCoverageHook
    cfg = setup_cfg(args)
    runner = build_runner(cfg)
    runner.register_hook(CheckpointCoverageHook(allow_partial=args.allow_partial_checkpoint,
                                                checkpoint=args.checkpoint))
    metrics = runner.test()
    if get_rank() == 0:
        printable = {k: (float(v) if hasattr(v, '__float__') else v) for k, v in metrics.items()}
        print('[m3i_mm] test metrics: ' + json.dumps(printable, default=str), flush=True)


if __name__ == '__main__':
    run_cli(main)
