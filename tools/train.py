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
import contextlib
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from m3i_mm.cli.launch import (  # noqa: E402
    add_common_args, build_runner, check_optimizer_type, checkpoint_seed, exit_with_launcher,
    launcher_rank, load_config, prepare_distributed, resolve_resume, run_cli,
    use_atomic_checkpoints, use_exact_resume)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model from an m3i_mm config.')
    parser.add_argument('config', help='config file path')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='auto|PATH',
        help="resume training: 'auto' (or no value) takes the checkpoint the work dir's "
        'last_checkpoint names (starts anew if there is none); a path resumes from that '
        'checkpoint')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision (AmpOptimWrapper, dynamic loss scale)')
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def setup_cfg(args: argparse.Namespace, cfg=None):
    """The config of the run (``cfg``: the loaded config file, else loaded here), ready to
    build the runner. It resolves ``--resume``: call it while holding the work dir's lock."""
    cfg = load_config(args.config, args.cfg_options) if cfg is None else cfg
    cfg.work_dir = work_dir_of(args, cfg)
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
    check_amp_device(cfg, args.config)
    check_optimizer_type(cfg)
    if args.resume is not None:
        # None for 'auto' without a last_checkpoint: mmengine then starts from scratch
        cfg.resume = True
        cfg.load_from = resolve_resume(cfg.work_dir, args.resume)
        randomness = cfg.setdefault('randomness', {})
        if cfg.load_from and randomness.get('seed') is None:
            # mmengine restores the seed only after the samplers are built with a new one
            randomness['seed'] = checkpoint_seed(cfg.load_from)
    use_atomic_checkpoints(cfg)
    use_exact_resume(cfg)
    prepare_distributed(cfg, args.launcher)
    return cfg


def work_dir_of(args: argparse.Namespace, cfg) -> str:
    if args.work_dir:
        return args.work_dir
    if cfg.get('work_dir') is not None:
        return cfg.work_dir
    return osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])


def check_amp_device(cfg, config_path: str) -> None:
    """A config whose optimizer wrapper is mmengine's AmpOptimWrapper (the official
    classification recipes train in mixed precision) cannot train without a GPU: say so in
    one line, with the override that trains it in fp32, instead of mmengine's assertion."""
    wrapper = cfg.get('optim_wrapper') or {}
    if str(wrapper.get('type', '')).split('.')[-1] != 'AmpOptimWrapper':
        return
    import torch
    if torch.cuda.is_available():
        return
    raise SystemExit(f'error: {config_path} trains in mixed precision (AmpOptimWrapper), which '
                     'needs a CUDA device; to train in fp32 here add --cfg-options '
                     'optim_wrapper.type=OptimWrapper')


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
    exit_with_launcher(args.launcher)
    import m3i_mm  # noqa: F401  (registers the m3i_mm scope and the checkpoint allow-list)
    from m3i_mm.utils.work_dir_lock import work_dir_lock
    cfg = load_config(args.config, args.cfg_options)
    lock = contextlib.nullcontext()
    if launcher_rank(args.launcher) == 0:  # one run per work dir: rank 0 holds its lock
        lock = work_dir_lock(work_dir_of(args, cfg))
    with lock:
        cfg = setup_cfg(args, cfg)
        runner = build_runner(cfg)
        check_resumed_checkpoint(runner, cfg)
        runner.train()
    report_finished(runner)


def check_resumed_checkpoint(runner, cfg) -> None:
    """Refuse to resume from a checkpoint that does not hold this model's weights (another
    model's ended in 'loaded state dict contains a parameter group that doesn't match')."""
    from mmengine.runner import Runner

    from m3i_mm.engine.hooks import CheckpointCoverageHook
    if cfg.get('resume') and cfg.get('load_from') and isinstance(runner, Runner):
        runner.register_hook(CheckpointCoverageHook(
            checkpoint=cfg.load_from, advice='Resume from a checkpoint of this config, or '
            'start from this one with load_from=PATH (which loads the weights that fit) '
            'instead of --resume.'))


if __name__ == '__main__':
    run_cli(main)
