"""Launch helpers shared by ``tools/train.py`` and ``tools/test.py`` (the command-line layer).

mmengine's ``init_dist`` always calls ``torch.cuda.set_device``, so on a machine without a
GPU we create the (gloo) process group ourselves before the runner is built; the runner
then sees an initialised group and skips its own initialisation. On GPUs nothing changes:
mmengine initialises NCCL as usual.
"""
import argparse
import glob
import inspect
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import List, Optional

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict, DictAction

from m3i_mm.utils.errors import UsageError
from m3i_mm.utils.package_data import find_config
from m3i_mm.utils.suggest import did_you_mean

__all__ = [
    'ConfigLoadError', 'UsageError', 'load_config', 'prepare_distributed', 'build_runner',
    'add_common_args', 'run_cli', 'use_atomic_checkpoints', 'use_exact_resume', 'resolve_resume',
    'check_checkpoint_arg', 'checkpoint_seed', 'exit_with_launcher', 'launcher_rank',
    'check_optimizer_type', 'config_error_message', 'registry_error_message'
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


#: ``prctl`` option that sends a signal to this process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent exits; False elsewhere."""
    if not sys.platform.startswith('linux'):
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _end_this_rank(launcher_pid: int) -> None:
    """The launcher is gone: stop, as the launcher would have stopped us (SIGTERM), and
    for good if a handler swallowed that."""
    sys.stderr.write(f'[m3i_mm] rank {os.environ.get("RANK", "?")}: its launcher (pid '
                     f'{launcher_pid}) has exited; stopping this rank\n')
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(LAUNCHER_GRACE_S)
    os._exit(128 + signal.SIGTERM)


def _watch_launcher(launcher_pid: int, poll_s: float) -> None:
    while os.getppid() == launcher_pid:
        time.sleep(poll_s)
    _end_this_rank(launcher_pid)


#: Seconds between two looks at the launcher, and the grace a SIGTERM handler gets.
LAUNCHER_POLL_S = 1.0
LAUNCHER_GRACE_S = 10.0


def exit_with_launcher(launcher: str) -> None:
    """Make this rank exit when the process that launched it dies (CPU and GPU alike).

    torchrun starts every rank in a session of its own, so killing the launcher's process
    group (``kill -- -PGID``, a job scheduler cancelling ``tools/dist_train.sh``, or the
    launcher being killed with SIGKILL, which gives it no chance to stop its workers)
    leaves the ranks running as orphans that keep training and saving into the work
    dir. Two mechanisms end them:

    - under torchrun (``--launcher pytorch``), Linux's parent-death signal (``prctl
      PR_SET_PDEATHSIG``): SIGTERM the moment the launcher exits. (Only there: the kernel
      sends it when the *thread* that forked us exits, and torchrun's agent forks its
      workers from its main thread; for other launchers that is not known);
    - for every launcher, a watchdog thread that checks every
      :data:`LAUNCHER_POLL_S` seconds whether the parent process changed, and then sends
      this process SIGTERM (and exits after :data:`LAUNCHER_GRACE_S` more seconds if a
      handler kept it alive).

    A process started without a launcher (``--launcher none``) is left alone: ``nohup``
    or a closed terminal must not stop a single-process run.

    Args:
        launcher: The ``--launcher`` of the tool.
    """
    if launcher == 'none':
        return
    launcher_pid = os.getppid()
    if launcher == 'pytorch':
        _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != launcher_pid:  # it died before the signal was armed
        _end_this_rank(launcher_pid)
    threading.Thread(target=_watch_launcher, args=(launcher_pid, LAUNCHER_POLL_S),
                     daemon=True, name='m3i_mm-launcher-watchdog').start()


def launcher_rank(launcher: str) -> int:
    """This process's global rank as its launcher set it (0 without a launcher), readable
    before any process group exists."""
    variable = {'pytorch': 'RANK', 'slurm': 'SLURM_PROCID',
                'mpi': 'OMPI_COMM_WORLD_RANK'}.get(launcher)
    return int(os.environ.get(variable, 0)) if variable else 0


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


def _registered_class(registry_name: str, type_name, scope: Optional[str]):
    """The class a config ``type`` names in mmengine's registry ``registry_name`` (None if it
    is not found: building the runner then reports it)."""
    from mmengine import registry as mmengine_registry
    if not isinstance(type_name, str):
        return type_name
    import mmengine.runner  # noqa: F401  (registers mmengine's own, e.g. torch's optimizers)
    registry = getattr(mmengine_registry, registry_name)
    # as mmengine's builders look it up: in the scope's registry (importing it) and its parents
    with registry.switch_scope_and_registry(scope) as scoped:
        return scoped.get(type_name)


def use_exact_resume(cfg: Config) -> None:
    """Make every random draw of training a function of the seed and the stream position,
    so that a killed and resumed run ends where an uninterrupted one does (on the CPU).

    For training data that does not key its draws already (anything but
    :class:`~m3i_mm.datasets.MultiSourceSampler`), the sampler and dataset are wrapped in
    :class:`~m3i_mm.engine.KeyedSampler` and :class:`~m3i_mm.engine.KeyedDataset`: each
    sample's transforms draw from generators seeded by the place of its draw in the stream.
    ``m3i_mm.IterationSeedHook`` is added (unless present) for the model's draws (dropout,
    drop path, mmdet's RoI sampling, batch augmentations). With
    ``randomness.diff_rank_seed=True`` mmengine gives samplers no seed (each run would draw
    its own); the wrapped sampler then gets ``randomness.seed``, which all ranks share.
    """
    from m3i_mm.datasets.multi_source_sampler import MultiSourceSampler
    from m3i_mm.engine.hooks import IterationSeedHook
    from m3i_mm.engine.keyed_stream import KeyedSampler
    scope = cfg.get('default_scope')
    loader = cfg.get('train_dataloader')
    sampler = (loader or {}).get('sampler')
    if isinstance(sampler, dict) and isinstance(loader.get('dataset'), dict):
        sampler_class = _registered_class('DATA_SAMPLERS', sampler.get('type'), scope)
        if not (isinstance(sampler_class, type)
                and issubclass(sampler_class, (MultiSourceSampler, KeyedSampler))):
            loader['sampler'] = dict(type='m3i_mm.KeyedSampler', sampler=sampler)
            seed = (cfg.get('randomness') or {}).get('seed')
            if isinstance(seed, int) and (cfg.get('randomness') or {}).get('diff_rank_seed'):
                loader['sampler']['seed'] = seed
            loader['dataset'] = dict(type='m3i_mm.KeyedDataset', dataset=loader['dataset'])
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(_registered_class('HOOKS', hook.get('type'), scope) is IterationSeedHook
               for hook in hooks if isinstance(hook, dict)):
        hooks.append(dict(type='m3i_mm.IterationSeedHook'))
        cfg.custom_hooks = hooks


def checkpoint_seed(path: str) -> Optional[int]:
    """The seed a checkpoint was trained with (``meta.seed``), or None if it has none or
    cannot be read here (the runner's load then reports why)."""
    if '://' in path:
        return None
    meta_file = os.path.join(path, 'meta.pth') if os.path.isdir(path) else path
    from m3i_mm.zoo import ZooError, load_checkpoint_file
    try:  # memory-mapped: reading the meta costs little even for a huge checkpoint
        checkpoint = load_checkpoint_file(meta_file, map_location='cpu', mmap=True)
    except (ZooError, OSError):
        return None
    seed = (checkpoint.get('meta') or {}).get('seed') if isinstance(checkpoint, dict) else None
    return int(seed) if isinstance(seed, int) else None


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


#: mmengine functions that build the runner's parts from config dicts.
_BUILDERS = frozenset({
    'build_from_cfg', 'build_train_loop', 'build_val_loop', 'build_test_loop',
    'build_dataloader', 'build_optim_wrapper', 'build_param_scheduler', 'build_evaluator',
    'build_model', 'register_hooks'})
_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'|unexpected arguments \['(\w+)'")


def _frames(exc: BaseException) -> list:
    frames, tb = [], exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _callee_arguments(frames: list, text: str) -> List[str]:
    """The arguments of the class whose construction failed (every ``__init__`` of its
    MRO, since subclasses pass ``**kwargs`` on), for a did-you-mean."""
    named = re.match(r'(\w+)\.__init__\(\)', text)
    callee = None
    for frame in reversed(frames):  # innermost first
        this = frame.f_locals.get('self')
        if named and named.group(1) in {c.__name__ for c in type(this).__mro__}:
            callee = type(this)  # the class being built (its base failed on its kwargs)
        elif named and isinstance(frame.f_globals.get(named.group(1)), type):
            callee = frame.f_globals[named.group(1)]
        elif frame.f_code.co_name == 'build_from_cfg':
            callee = frame.f_locals.get('obj_cls')
        if callee is not None:
            break
    names = set()
    for cls in getattr(callee, '__mro__', [callee] if callable(callee) else []):
        try:
            names |= set(inspect.signature(cls.__init__ if isinstance(cls, type) else cls)
                         .parameters)
        except (TypeError, ValueError):
            continue
    return sorted(names - {'self', 'args', 'kwargs'})


def config_error_message(exc: BaseException) -> Optional[str]:
    """The one-line text of a TypeError/ValueError raised while mmengine built the runner's
    parts from the config (a key the class does not take, a value it refuses), with a
    did-you-mean for a misspelled key; None for other errors (they keep their traceback)."""
    if not isinstance(exc, (TypeError, ValueError)):
        return None
    frames = _frames(exc)
    if not any(f.f_code.co_name in _BUILDERS
               and str(f.f_globals.get('__name__', '')).startswith('mmengine') for f in frames):
        return None
    text = ' '.join(str(exc).split())
    match = _UNEXPECTED.search(text)
    if match and 'Did you mean' not in text:
        hint = did_you_mean(match.group(1) or match.group(2), _callee_arguments(frames, text))
        text = f'{text.rstrip(".")}.{hint}' if hint else text
    return text


def _registry_names(name: str, scope: str) -> List[str]:
    """Every type name the ``scope::name`` registry resolves (its own, its parent's, and
    other scopes' as ``scope.Type``)."""
    from mmengine import registry as mmengine_registry
    from mmengine.registry import Registry
    root = next((r for r in vars(mmengine_registry).values()
                 if isinstance(r, Registry) and r.name == name and r.parent is None), None)
    if root is None:
        return []
    import mmengine.runner  # noqa: F401  (registers mmengine's own, e.g. torch's optimizers)
    for child in list(root.children.values()):  # (importing may add scopes)
        child.import_from_location()
    names = set(root.module_dict)
    for child_scope, child in list(root.children.items()):
        own = child.module_dict
        names |= set(own) if child_scope == scope else {f'{child_scope}.{k}' for k in own}
    return sorted(names)


def registry_error_message(message: str) -> str:
    """mmengine's "X is not in the scope::name registry" with a did-you-mean."""
    match = re.search(r'(\S+) is not in the (\w+)::(\w+) registry', message)
    if match is None or 'Did you mean' in message:
        return message
    wanted, scope, name = match.groups()
    hint = did_you_mean(wanted, _registry_names(name, scope))
    return f'{message.rstrip().rstrip(".")}.{hint}' if hint else message


def _registry_miss_message(message: str) -> str:
    """A registry miss in one line: the exact m3i_mm type to write when m3i_mm registers
    the name in its own scope, else close names of every scope (did-you-mean)."""
    from m3i_mm.registry import scoped_name_hint
    hint = scoped_name_hint(message)
    if hint and hint.startswith('m3i_mm registers'):
        return f'{message} ({hint})'
    return registry_error_message(message)


def check_optimizer_type(cfg: Config) -> None:
    """Refuse an unknown ``optim_wrapper.optimizer.type`` at the start (mmengine's optimizer
    constructors look it up, get None and fail with "None is not a callable object")."""
    from mmengine.registry import OPTIMIZERS
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer')
    wanted = optimizer.get('type') if isinstance(optimizer, dict) else None
    if not isinstance(wanted, str):
        return
    scope = cfg.get('default_scope') or 'mmengine'
    if _registered_class('OPTIMIZERS', wanted, scope) is None:
        raise UsageError(registry_error_message(
            f'optim_wrapper.optimizer.type: {wanted} is not in the {scope}::'
            f'{OPTIMIZERS.name} registry'))


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
    except (UsageError, ZooError, FileNotFoundError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, (UsageError, ZooError)):  # (some are ValueErrors too)
            msg = str(exc)
        elif isinstance(exc, (TypeError, ValueError)):
            msg = config_error_message(exc)
        elif isinstance(exc, KeyError):
            msg = str(exc.args[0] if exc.args else exc)
            msg = _registry_miss_message(msg) if 'registry' in msg else None
        else:
            msg = str(exc)
        if msg is None or os.environ.get('M3I_MM_TRACEBACK') == '1':
            raise
        print(f'error: {msg}\n(set M3I_MM_TRACEBACK=1 for the full traceback)', file=sys.stderr)
        sys.exit(2)
