"""Launch helpers shared by ``tools/train.py`` and ``tools/test.py``.

mmengine's ``init_dist`` always calls ``torch.cuda.set_device``, so on a machine without a
GPU we create the (gloo) process group ourselves before the runner is built; the runner
then sees an initialised group and skips its own initialisation. On GPUs nothing changes:
mmengine initialises NCCL as usual.
"""
import argparse
import os
import subprocess
import sys
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict, DictAction

__all__ = [
    'ConfigLoadError', 'load_config', 'prepare_distributed', 'build_runner', 'add_common_args',
    'run_cli'
]


class ConfigLoadError(RuntimeError):
    """A config file that is missing or cannot be parsed."""


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load a config file and merge ``--cfg-options`` into it.

    Raises:
        ConfigLoadError: naming the path, when the file is missing or does not parse.
    """
    if not os.path.isfile(path):
        raise ConfigLoadError(f'config file not found: {path!r}')
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # mmengine raises many types; the message is what matters
        raise ConfigLoadError(f'cannot load config {path!r}: {type(exc).__name__}: {exc}') from exc
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _slurm_env_to_torch_env() -> None:
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        first = subprocess.check_output(
            ['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']], text=True)
        os.environ['MASTER_ADDR'] = first.split()[0]


def _mpi_env_to_torch_env() -> None:
    os.environ.setdefault('RANK', os.environ['OMPI_COMM_WORLD_RANK'])
    os.environ.setdefault('WORLD_SIZE', os.environ['OMPI_COMM_WORLD_SIZE'])
    os.environ.setdefault('LOCAL_RANK', os.environ['OMPI_COMM_WORLD_LOCAL_RANK'])
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        raise KeyError('MPI launch without a GPU needs MASTER_ADDR in the environment')


def prepare_distributed(cfg: Config, launcher: str) -> None:
    """Record ``launcher`` in ``cfg``; without a GPU, start a gloo process group.

    Args:
        cfg: The experiment config; ``launcher``, ``env_cfg.dist_cfg`` and
            ``model_wrapper_cfg`` are updated in place for CPU-only runs.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher == 'slurm':
        _slurm_env_to_torch_env()
    elif launcher == 'mpi':
        _mpi_env_to_torch_env()
    dist_cfg = cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())
    dist_cfg['backend'] = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            timeout=timedelta(seconds=dist_cfg.get('timeout', 1800)))
    # DDP over CPU tensors takes no device ids; keep mmengine's other defaults.
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    if wrapper.get('type', 'MMDistributedDataParallel') in ('MMDistributedDataParallel',
                                                             'DistributedDataParallel'):
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def build_runner(cfg: Config):
    """Build the runner named by ``cfg.runner_type`` (mmengine's ``Runner`` by default)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def add_common_args(parser) -> None:
    """Arguments shared by ``tools/train.py`` and ``tools/test.py``."""
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, e.g. train_dataloader.batch_size=4 '
        'model.backbone.arch=t')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torchrun passes --local-rank (or --local_rank with torch.distributed.launch)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def finish_distributed() -> None:
    """Tear the process group down before the interpreter exits.

    Left to interpreter shutdown, gloo's threads can still be joinable when their C++
    objects are destroyed, and the rank dies with ``terminate called without an active
    exception`` (SIGABRT) after finishing its work.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_cli(main) -> None:
    """Run ``main()``; user errors (bad config path, unknown type) become one clear line.

    Set ``M3I_MM_TRACEBACK=1`` to see the full traceback instead.
    """
    try:
        main()
        finish_distributed()
    except (ConfigLoadError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        is_user_error = not isinstance(exc, KeyError) or 'registry' in str(msg)
        if not is_user_error or os.environ.get('M3I_MM_TRACEBACK') == '1':
            raise
        print(f'error: {msg}\n(set M3I_MM_TRACEBACK=1 for the full traceback)', file=sys.stderr)
        sys.exit(2)
