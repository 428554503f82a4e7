"""Launch helpers shared by ``tools/train.py`` and ``tools/test.py`` (the command-line layer).

mmengine's ``init_dist`` always calls ``torch.cuda.set_device``, so on a machine without a
GPU we create the (gloo) process group ourselves before the runner is built; the runner
then sees an initialised group and skips its own initialisation. On GPUs nothing changes:
mmengine initialises NCCL as usual.
"""
import argparse
import glob
import os
import subprocess
import sys
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict, DictAction

from m3i_mm.utils.errors import UsageError
from m3i_mm.utils.package_data import find_config

__all__ = [
    'ConfigLoadError', 'UsageError', 'load_config', 'prepare_distributed', 'build_runner',
    'add_common_args', 'run_cli', 'use_atomic_checkpoints', 'resolve_resume',
    'check_checkpoint_arg'
]


class ConfigLoadError(UsageError):
    """A config file that is missing or cannot be parsed."""


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Load a config file and merge ``--cfg-options`` into it.

    A relative path that does not exist from the current directory is looked up among
    m3i_mm's own configs (``configs/...`` of the checkout or of the installed package).

    Raises:
        ConfigLoadError: naming the path, when the file is missing or does not parse.
    """
    path = find_config(path)
    if not os.path.isfile(path):
        raise ConfigLoadError(f'config file not found: {path!r}')
    try:
        cfg = Config.fromfile(path)
    except Exception as exc:  # mmengine raises many types; the message is what matters
        raise ConfigLoadError(f'cannot load config {path!r}: {type(exc).__name__}: {exc}') from exc
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


#: What each launcher needs in the environment, who sets it, and how to start it.
_LAUNCHER_ENV = {
    'pytorch': (('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'), 'torchrun',
                'start the tool with tools/dist_train.sh CONFIG GPUS (tools/dist_test.sh '
                'CONFIG CHECKPOINT GPUS) or torchrun --nproc-per-node N tools/train.py CONFIG '
                '--launcher pytorch'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'), 'srun',
              'start it with tools/slurm_train.sh (tools/slurm_test.sh)'),
    'mpi': (('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK'),
            "Open MPI's mpirun", 'start it with mpirun -np N python tools/train.py CONFIG '
            '--launcher mpi'),
}


def check_launcher_env(launcher: str) -> None:
    """Raise a :class:`UsageError` naming what is missing when ``launcher`` did not start us.

    Without it, ``--launcher pytorch`` outside torchrun ends in ``KeyError: 'RANK'``.
    """
    if launcher not in _LAUNCHER_ENV:
        return
    names, setter, how = _LAUNCHER_ENV[launcher]
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise UsageError(
            f'--launcher {launcher}: the environment lacks {", ".join(missing)}, which '
            f'{setter} sets, so this process was not started by {setter}. To run several '
            f'processes, {how}; for one process, leave --launcher out.')


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
        raise UsageError('--launcher mpi without a GPU needs MASTER_ADDR (the address of '
                         'rank 0) in the environment: mpirun -x MASTER_ADDR=HOST ...')


def prepare_distributed(cfg: Config, launcher: str) -> None:
    """Record ``launcher`` in ``cfg``; without a GPU, start a gloo process group.

    Args:
        cfg: The experiment config; ``launcher``, ``env_cfg.dist_cfg`` and
            ``model_wrapper_cfg`` are updated in place for CPU-only runs.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    check_launcher_env(launcher)
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


def use_atomic_checkpoints(cfg: Config) -> None:
    """Make the config's checkpoint hook ``m3i_mm.CheckpointHook`` (crash-safe saves).

    mmengine's ``CheckpointHook`` (the one every OpenMMLab ``default_runtime`` names)
    deletes old checkpoints before the new one is complete and writes in place, so a kill
    during a save can leave nothing to resume. Doing the swap here covers every config
    run through the tools - the tree's ~40 downstream configs inherit the hook from the
    mmpretrain/mmdet/mmseg bases, and users' configs do too - with the same arguments.
    A checkpoint hook of another class (a user's subclass) is kept, with a warning.
    """
    from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook
    from mmengine.registry import HOOKS, DefaultScope
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook:
        return
    hook_type = hook.get('type')
    if isinstance(hook_type, str):
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            hook_type = HOOKS.get(hook_type)
    from m3i_mm.engine.hooks import CheckpointHook
    if hook_type is MMEngineCheckpointHook:
        hook['type'] = 'm3i_mm.CheckpointHook'
    elif hook_type is not CheckpointHook:
        name = getattr(hook_type, '__name__', hook.get('type'))
        print(f'[m3i_mm] warning: the checkpoint hook {name} is not m3i_mm.CheckpointHook; '
              'a kill during a save may leave no complete checkpoint', file=sys.stderr)


def _checkpoints_in(work_dir: str) -> str:
    from m3i_mm.utils.io import unreadable_checkpoint_reason
    found = [p for p in sorted(glob.glob(os.path.join(work_dir, '*.pth')),
                               key=os.path.getmtime, reverse=True)
             if unreadable_checkpoint_reason(p) is None]
    return ('complete checkpoints there, newest first: ' + ', '.join(found[:5])) if found \
        else f'there is no complete checkpoint in {work_dir}'


def check_checkpoint_arg(path: str, what: str) -> None:
    """Raise a one-line error when the local checkpoint ``path`` cannot be read.

    Args:
        path: A file (or sharded checkpoint directory); URLs and ``m3i://`` names pass.
        what: How the user gave it, e.g. ``'--resume checkpoint'``.
    """
    from m3i_mm.utils.io import unreadable_checkpoint_reason
    if '://' in path:
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f'{what} not found: {path!r}')
    reason = unreadable_checkpoint_reason(path)
    if reason is not None:
        raise UsageError(f'{what} {path!r} {reason}; '
                         f'{_checkpoints_in(os.path.dirname(path) or ".")}')


def resolve_resume(work_dir: str, resume: str) -> Optional[str]:
    """The checkpoint ``--resume`` means: ``resume`` itself, or for ``'auto'`` the one the
    work dir's ``last_checkpoint`` names (None when there is none: training starts anew).

    Raises:
        UsageError: ``last_checkpoint`` or the named checkpoint is unusable; the message
            lists the complete checkpoints in the work dir.
    """
    if resume != 'auto':
        check_checkpoint_arg(resume, '--resume checkpoint')
        return resume
    record = os.path.join(work_dir, 'last_checkpoint')
    if not os.path.isfile(record):
        return None
    with open(record, encoding='utf-8', errors='replace') as f:
        path = f.read().strip()
    if not path:
        raise UsageError(f'--resume: {record} is empty; pass a checkpoint with --resume PATH '
                         f'({_checkpoints_in(work_dir)})')
    if '://' not in path:
        from m3i_mm.utils.io import unreadable_checkpoint_reason
        reason = unreadable_checkpoint_reason(path)
        if reason is not None:
            raise UsageError(f'--resume: {record} names {path}, which {reason}; pass a '
                             f'checkpoint with --resume PATH ({_checkpoints_in(work_dir)})')
    return path


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
    """Run ``main()``; user errors become one clear line and exit status 2.

    User errors: :class:`UsageError` (bad arguments, files, environment), missing files,
    unknown registry types, and model-zoo errors (``m3i://`` typos, failed downloads,
    checksum mismatches, unreadable checkpoint files). Set ``M3I_MM_TRACEBACK=1`` to see
    the full traceback instead.
    """
    from m3i_mm.zoo.errors import ZooError
    try:
        main()
        finish_distributed()
    except (UsageError, ZooError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        is_user_error = not isinstance(exc, KeyError) or 'registry' in str(msg)
        if not is_user_error or os.environ.get('M3I_MM_TRACEBACK') == '1':
            raise
        if isinstance(exc, KeyError):
            from m3i_mm.registry import scoped_name_hint
            hint = scoped_name_hint(str(msg))
            msg = f'{msg} ({hint})' if hint else msg
        print(f'error: {msg}\n(set M3I_MM_TRACEBACK=1 for the full traceback)', file=sys.stderr)
        sys.exit(2)
