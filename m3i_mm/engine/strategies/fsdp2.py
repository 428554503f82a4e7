"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for mmengine's ``FlexibleRunner``.

mmengine's ``FSDPStrategy`` wraps models in FSDP1, which needs an accelerator. FSDP2 shards
every parameter on dim 0 as a ``DTensor`` and runs on GPUs (NCCL) and on CPUs (gloo) alike,
so the same strategy trains InternImage-H on GPUs and is tested on a CPU-only machine.

What the strategy does, in :meth:`FSDP2Strategy.prepare` order:

1. builds the model, runs ``init_weights`` and broadcasts rank 0's weights (mmengine's
   ``BaseStrategy`` does this; ``diff_rank_seed`` configs initialise differently per rank);
2. applies ``fully_shard`` bottom-up to the *shard units* (see ``shard_modules``), then to
   the root. Averaged copies (:class:`mmengine.model.BaseAveragedModel`, e.g. M3I's
   ``CosineEMA`` target encoder) are sharded exactly like their source, see below;
3. builds the optimizer wrapper from the sharded model, so optimizers and constructors
   (``m3i_mm.LayerDecayOptimWrapperConstructor`` included) see the ``DTensor`` parameters
   under their usual names (FSDP2 adds no name prefixes);
4. builds the parameter schedulers.

EMA under FSDP2: ``BaseAveragedModel.update_parameters`` does in-place
``avg.mul_(1 - m).add_(src, alpha=m)`` over matching parameters. Every module class the
average holds (M3I: ``InternImage`` and ``Stride16Fusion``) becomes a shard unit wherever it
occurs, in the online model and in the copy. Both sides then hold identically sharded
``DTensor`` s (FSDP2 shards each parameter on dim 0, whatever its group), and when the
model updates its EMA at the start of its forward both are in their sharded state, so the
in-place update runs on matching local shards in fp32 with no communication, and no
memory is spent on an unsharded EMA copy. Two fixes make that work: the averaged model's
cached ``avg_parameters`` are re-read after sharding (they pointed at the replaced,
unsharded tensors), and ``update_parameters`` first checks that every pair is a matching
shard; otherwise it raises naming the parameter instead of averaging wrong data. The
copy's units free their gathered parameters after each (no-grad) forward.

FSDP2 cannot shard 0-d parameters (the MI heads' ``logit_scale``): they stay replicated
(``ignored_params``) and their gradients are averaged over ranks at the start of the
optimizer wrapper's ``step``, before gradient clipping, which then takes the global norm
over shards and replicated gradients alike.

Checkpoints (``state_dict_type``):

- ``'full'``: gathered on rank 0 (all ranks take part) and written by rank 0 to one file
  with mmengine's layout (``state_dict``, ``optimizer``, ``param_schedulers``, ``meta``,
  ``message_hub``, ...). The ``state_dict`` has the plain module names, so
  ``tools/model_converters/*``, ``init_cfg=dict(type='Pretrained')`` and
  ``torch.load(weights_only=True)`` read it. The ``optimizer`` entry is keyed by
  parameter name (torch's distributed optimizer state dict); it is loaded back only by
  this strategy.
- ``'sharded'``: a directory written with ``torch.distributed.checkpoint`` (every rank
  writes its shards; no gathering), plus ``meta.pth`` for the rest. Load it with this
  strategy (on any number of ranks: it is resharded on load), or make a ``'full'`` file of it with
  :func:`consolidate_sharded_checkpoint`.

Both are written to a temporary name first, ``fsync``-ed and renamed into place
(:mod:`m3i_mm.utils.io`). Loading accepts both kinds whatever ``state_dict_type`` says;
every rank memory-maps the file.
"""
import functools
import os
import os.path as osp
import re
import shutil
import time
import types
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import mmengine
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.utils.checkpoint as torch_checkpoint
from mmengine._strategy import DDPStrategy
from mmengine.dist import init_dist, is_distributed
from mmengine.model import BaseAveragedModel, is_model_wrapper
from mmengine.optim import AmpOptimWrapper, BaseOptimWrapper, OptimWrapperDict
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.utils._pytree import tree_map_only

from m3i_mm.registry import FUNCTIONS, STRATEGIES
from m3i_mm.utils.io import atomic_torch_save, commit_path, temporary_path
from m3i_mm.zoo.scheme import load_checkpoint_file

__all__ = ['FSDP2Strategy', 'DEFAULT_SHARD_MODULES', 'consolidate_sharded_checkpoint']

#: Classes that get their own ``fully_shard`` by default: InternImage blocks and the
#: mmpretrain transformer layers (the M3I decoder's blocks, ViT blocks).
DEFAULT_SHARD_MODULES = ('InternImageLayer', 'TransformerEncoderLayer')

#: File inside a ``'sharded'`` checkpoint directory holding everything but the tensors.
SHARDED_META_FILE = 'meta.pth'

_DTYPES = {
    'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float16': torch.float16,
    'fp16': torch.float16, 'half': torch.float16, 'float32': torch.float32,
    'fp32': torch.float32, 'float': torch.float32
}
_MIXED_PRECISION_KEYS = ('param_dtype', 'reduce_dtype', 'output_dtype', 'cast_forward_inputs')
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

UnitFilter = Callable[[nn.Module, str], bool]


# ----------------------------------------------------------------------------- config parsing
def _to_dtype(key: str, value) -> Optional[torch.dtype]:
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        name = value.replace('torch.', '')
        if name in _DTYPES:
            return _DTYPES[name]
    raise ValueError(f'mixed_precision.{key}={value!r} is not a dtype; use one of '
                     f'{sorted(_DTYPES)}')


def _mixed_precision_policy(cfg: Optional[dict]) -> MixedPrecisionPolicy:
    if cfg is None:
        return MixedPrecisionPolicy()
    if not isinstance(cfg, dict):
        raise TypeError(f'mixed_precision must be a dict such as dict(param_dtype='
                        f"'bfloat16', reduce_dtype='float32') or None, got {cfg!r}")
    unknown = sorted(set(cfg) - set(_MIXED_PRECISION_KEYS))
    if unknown:
        raise ValueError(f'unknown mixed_precision keys {unknown}; allowed: '
                         f'{list(_MIXED_PRECISION_KEYS)}')
    return MixedPrecisionPolicy(
        param_dtype=_to_dtype('param_dtype', cfg.get('param_dtype')),
        reduce_dtype=_to_dtype('reduce_dtype', cfg.get('reduce_dtype')),
        output_dtype=_to_dtype('output_dtype', cfg.get('output_dtype')),
        cast_forward_inputs=bool(cfg.get('cast_forward_inputs', True)))


def _class_filter(classes: Sequence[Union[str, type]], what: str) -> UnitFilter:
    names = {c for c in classes if isinstance(c, str)}
    types = tuple(c for c in classes if isinstance(c, type))
    bad = [c for c in classes if not isinstance(c, (str, type))]
    if bad:
        raise TypeError(f'{what} entries must be class names or classes, got {bad}')
    return lambda module, name: type(module).__name__ in names or isinstance(module, types)


def _unit_filter(shard_modules) -> UnitFilter:
    """``shard_modules`` (class names, a callable or a FUNCTIONS name) as a predicate."""
    if shard_modules is None:
        return _class_filter(DEFAULT_SHARD_MODULES, 'shard_modules')
    if isinstance(shard_modules, str):
        fn = FUNCTIONS.get(shard_modules)
        if fn is None:
            raise ValueError(f'shard_modules={shard_modules!r} is not a function in the '
                             "FUNCTIONS registry; give class names as a list, e.g. "
                             "shard_modules=['InternImageLayer']")
        return fn
    if callable(shard_modules) and not isinstance(shard_modules, type):
        return shard_modules
    if isinstance(shard_modules, (list, tuple, set)):
        return _class_filter(list(shard_modules), 'shard_modules')
    raise TypeError('shard_modules must be a list of class names, a callable '
                    f'(module, name) -> bool or a FUNCTIONS registry name, got {shard_modules!r}')


# ----------------------------------------------------------------------------- EMA support
def _averaged_roots(ema: BaseAveragedModel) -> List[nn.Module]:
    """The modules an averaged model holds: its ``module``, or that container's children."""
    if isinstance(ema.module, _CONTAINERS):
        return [m for m in ema.module.children() if any(True for _ in m.parameters())]
    return [ema.module]


def _is_matching_shard(avg: torch.Tensor, src: torch.Tensor) -> bool:
    return (isinstance(avg, DTensor) and isinstance(src, DTensor)
            and avg.device_mesh == src.device_mesh and avg.placements == src.placements
            and avg.shape == src.shape and avg.to_local().shape == src.to_local().shape)


def _describe(tensor: torch.Tensor) -> str:
    if isinstance(tensor, DTensor):
        return f'a shard {tuple(tensor.to_local().shape)} ({tensor.placements})'
    return f'an unsharded tensor {tuple(tensor.shape)}'


class _ShardedAverageUpdate:
    """Stands in for ``update_parameters`` of a sharded averaged model.

    Checks that every averaged tensor and its source are matching local shards (else the
    in-place update would mix a shard with a gathered tensor, or be lost on the next
    all-gather), then runs the model's own update.
    """

    def __init__(self, ema: BaseAveragedModel, name: str) -> None:
        self.update = ema.update_parameters  # the bound method of the class
        self.ema = ema
        self.name = name

    def __call__(self, model: nn.Module) -> None:
        sources = dict(model.named_parameters())
        if self.ema.update_buffers:
            sources.update(model.named_buffers())
        for key, avg in self.ema.avg_parameters.items():
            src = sources.get(key)
            if src is None:
                raise KeyError(f'{self.name}.update_parameters: the source model has no '
                               f'parameter {key!r}')
            if not isinstance(avg, DTensor) and not isinstance(src, DTensor):
                continue  # buffers and replicated 0-d parameters: local on both sides
            if not _is_matching_shard(avg, src):
                raise RuntimeError(
                    f'{self.name}.update_parameters: averaged parameter {key!r} is '
                    f'{_describe(avg)} but its source is {_describe(src)}; both must be '
                    'matching FSDP2 shards. The averaged copy must be sharded like its source '
                    '(FSDP2Strategy makes the classes an average holds shard units on both '
                    'sides), and the source module must not be inside its forward when the '
                    'average is updated.')
        self.update(model)


# ----------------------------------------------------------------------------- activation ckpt
def _checkpointed(forward: Callable) -> Callable:
    """``forward`` under non-reentrant activation checkpointing while grads are enabled."""

    @functools.wraps(forward)
    def run(*args, **kwargs):
        if torch.is_grad_enabled():
            return torch_checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return run


def _clone_view_outputs(module: nn.Module, args, output):
    """Forward hook (runs before FSDP2's): grad-requiring outputs that are views
    (InternImage returns NCHW views of channels-last maps) become tensors of their own.

    FSDP2 hooks a unit's outputs to gather its parameters for backward; an in-place op on a
    view output would drop that hook and give wrong gradients. ``clone`` keeps the strides.
    """
    if not torch.is_grad_enabled():
        return output
    return tree_map_only(
        torch.Tensor, lambda t: t.clone() if t._base is not None and t.requires_grad else t,
        output)


# ----------------------------------------------------------------------------- file helpers
def _is_local(path: str) -> bool:
    return '://' not in path


def _atomic_torch_save(obj, path: str) -> None:
    """Atomic local save (:func:`m3i_mm.utils.io.atomic_torch_save`); remote backends go
    through mmengine's writer, which is not atomic."""
    if not _is_local(path):
        from mmengine.runner.checkpoint import save_checkpoint
        save_checkpoint(obj, path)
        return
    atomic_torch_save(obj, path)


def _read_checkpoint(path: str) -> dict:
    """Load a checkpoint file on CPU; local files are memory-mapped (cheap on every rank)."""
    if _is_local(path):
        if not osp.isfile(path):
            raise FileNotFoundError(f'checkpoint not found: {path!r}')
        return load_checkpoint_file(path, map_location='cpu', mmap=True)
    from mmengine.runner.checkpoint import CheckpointLoader
    return CheckpointLoader.load_checkpoint(path, map_location='cpu')


def _shorten(keys: Sequence[str], limit: int = 12) -> str:
    shown = ', '.join(keys[:limit])
    return shown if len(keys) <= limit else f'{shown}, ... ({len(keys)} in all)'


def _revise_keys(state_dict: dict, revise_keys: Sequence[Tuple[str, str]]) -> dict:
    revised = {}
    for key, value in state_dict.items():
        for pattern, replacement in revise_keys:
            key = re.sub(pattern, replacement, key)
        revised[key] = value
    return revised


class _ShardedOptimizerState:
    """The ``optimizer`` entry of a loaded ``'sharded'`` checkpoint: where to read it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f'<sharded optimizer state in {self.path}>'


def consolidate_sharded_checkpoint(src_dir: str, dst_file: str) -> None:
    """Turn a ``'sharded'`` checkpoint directory into a ``'full'`` checkpoint file.

    Runs in one process without a process group (and without a GPU). The result has
    mmengine's layout with the gathered model ``state_dict`` and the name-keyed
    ``optimizer`` state, as ``state_dict_type='full'`` writes it.

    Args:
        src_dir: A directory written by :class:`FSDP2Strategy` with ``'sharded'``.
        dst_file: The ``.pth`` file to write.
    """
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    meta_path = osp.join(src_dir, SHARDED_META_FILE)
    if not osp.isfile(meta_path):
        raise FileNotFoundError(f'{src_dir!r} is not a sharded FSDP2Strategy checkpoint '
                                f'(no {SHARDED_META_FILE})')
    tensors_file = f'{dst_file}.tensors-{os.getpid()}'
    try:
        dcp_to_torch_save(src_dir, tensors_file)
        tensors = torch.load(tensors_file, map_location='cpu', weights_only=True)
    finally:
        if osp.exists(tensors_file):
            os.remove(tensors_file)
    checkpoint = torch.load(meta_path, map_location='cpu', weights_only=True)
    checkpoint['state_dict'] = tensors['model']
    if 'optimizer' in tensors:
        checkpoint['optimizer'] = tensors['optimizer']
    checkpoint['meta'].setdefault('fsdp2', {})['state_dict_type'] = 'full'
    _atomic_torch_save(checkpoint, dst_file)


# ----------------------------------------------------------------------------- the strategy
@STRATEGIES.register_module()
class FSDP2Strategy(DDPStrategy):
    """Fully sharded data parallel training with FSDP2, on GPUs (NCCL) or CPUs (gloo).

    Gradients are averaged over ranks as with DDP, so training on ``N`` ranks equals
    training on the concatenated batch of all ranks.

    Args:
        shard_modules: Which submodules get their own ``fully_shard`` (the root always
            gets one): a list of class names (or classes), a callable
            ``(module, qualified_name) -> bool``, or the name of such a function in the
            ``FUNCTIONS`` registry. Defaults to :data:`DEFAULT_SHARD_MODULES` (every
            ``InternImageLayer`` and mmpretrain ``TransformerEncoderLayer``). Whatever is
            given, the classes held by a ``BaseAveragedModel`` (EMA) are units too. A unit
            is all-gathered when its ``forward`` runs, so only modules entered through
            ``forward`` may be units; M3I's decoder and heads (called through
            ``dense_queries`` / ``loss``) stay in the root unit.
        mixed_precision: ``dict(param_dtype=..., reduce_dtype=..., output_dtype=...,
            cast_forward_inputs=...)`` with dtype names (``'bfloat16'``, ``'float32'``,
            ...). Sharded parameters, optimizer states and EMA stay fp32; gathered
            parameters and the computation use ``param_dtype``; gradients are reduced in
            ``reduce_dtype``. None: everything in the parameters' dtype. Use this instead of
            ``AmpOptimWrapper`` (which is refused).
        reshard_after_forward: For the units (not the root, which keeps its parameters
            until backward): True frees gathered parameters after forward and gathers them
            again in backward (least memory); False keeps them (less communication); an
            int reshards to that many ranks (e.g. GPUs per node). EMA units always free.
        activation_checkpointing: False: leave the model as configured (InternImage's
            ``with_cp`` still works). True: checkpoint every unit chosen by
            ``shard_modules``. A list of class names: checkpoint those modules. Modules
            with a boolean ``with_cp`` attribute (``InternImageLayer``) get
            ``with_cp=True``; others have their ``forward`` run under
            ``torch.utils.checkpoint`` (non-reentrant) while grads are enabled. Applied
            inside the units, so the recomputation sees gathered parameters.
        state_dict_type: ``'full'`` (one file, gathered on rank 0) or ``'sharded'`` (a
            ``torch.distributed.checkpoint`` directory). See the module docstring.
        sync_bn: As in ``DDPStrategy`` (``'torch'`` or ``'mmcv'``).
        **kwargs: ``BaseStrategy`` arguments (``work_dir``, ``env_kwargs``, ...).
    """

    def __init__(self,
                 *,
                 shard_modules=None,
                 mixed_precision: Optional[dict] = None,
                 reshard_after_forward: Union[bool, int] = True,
                 activation_checkpointing: Union[bool, Sequence[str]] = False,
                 state_dict_type: str = 'full',
                 sync_bn: Optional[str] = None,
                 **kwargs) -> None:
        if kwargs.get('model_wrapper') is not None:
            raise ValueError('FSDP2Strategy applies fully_shard itself; model_wrapper is not '
                             'used (remove it from the strategy config)')
        kwargs.pop('model_wrapper', None)
        if state_dict_type not in ('full', 'sharded'):
            raise ValueError(f"state_dict_type must be 'full' or 'sharded', got "
                             f'{state_dict_type!r}')
        if not isinstance(reshard_after_forward, (bool, int)):
            raise TypeError(f'reshard_after_forward must be a bool or an int, got '
                            f'{reshard_after_forward!r}')
        if not (isinstance(activation_checkpointing, bool)
                or isinstance(activation_checkpointing, (list, tuple))):
            raise TypeError('activation_checkpointing must be a bool or a list of class '
                            f'names, got {activation_checkpointing!r}')
        self.unit_filter = _unit_filter(shard_modules)
        self.mp_policy = _mixed_precision_policy(mixed_precision)
        self.reshard_after_forward = reshard_after_forward
        self.activation_checkpointing = activation_checkpointing
        self.state_dict_type = state_dict_type
        self.mesh: Optional[DeviceMesh] = None
        self.replicated_params: Dict[str, nn.Parameter] = {}
        super().__init__(sync_bn=sync_bn, **kwargs)

    # ------------------------------------------------------------------ distributed setup
    def _setup_distributed(self, launcher: str = 'pytorch', backend: str = 'nccl',
                           **kwargs) -> None:
        """Initialise the process group unless it already is (tools/train.py on CPU)."""
        if is_distributed():
            return
        if not torch.cuda.is_available():
            raise RuntimeError(
                'FSDP2Strategy without a GPU needs a gloo process group initialised before '
                'the runner is built; tools/train.py and tools/dist_train.sh do that '
                '(m3i_mm.cli.launch.prepare_distributed)')
        init_dist(launcher, backend, **kwargs)

    def _build_mesh(self) -> DeviceMesh:
        if not is_distributed():
            raise RuntimeError('FSDP2Strategy needs a distributed launch, e.g. '
                               'tools/dist_train.sh CONFIG NUM_PROCESSES (1 is fine)')
        if 'nccl' in dist.get_backend():
            local_rank = int(os.environ.get('LOCAL_RANK', self.rank % torch.cuda.device_count()))
            torch.cuda.set_device(local_rank)
            device_type = 'cuda'
        else:
            device_type = 'cpu'
        return init_device_mesh(device_type, (self.world_size, ))

    # ------------------------------------------------------------------ wrapping
    def _plan_units(self, model: nn.Module) -> Tuple[List[Tuple[str, nn.Module]], dict, set]:
        """Shard units (bottom-up order), averaged models by name, and names of units
        chosen by ``shard_modules`` (as opposed to those added for an average)."""
        emas = {name: m for name, m in model.named_modules() if isinstance(m, BaseAveragedModel)}
        averaged_classes = {type(root) for ema in emas.values() for root in _averaged_roots(ema)}
        units, chosen = [], set()
        for name, module in model.named_modules():
            if module is model or isinstance(module, BaseAveragedModel):
                continue
            by_filter = bool(self.unit_filter(module, name))
            if by_filter or type(module) in averaged_classes:
                units.append((name, module))
                if by_filter:
                    chosen.add(name)
        # An average whose parameters are not all inside units: its module becomes one, so
        # no averaged parameter lands in the root unit (gathered while the update runs).
        unit_modules = {id(m) for _, m in units}
        for name, ema in emas.items():
            covered = {id(p) for n, m in ema.module.named_modules() if id(m) in unit_modules
                       for p in m.parameters()}
            if any(id(p) not in covered for p in ema.module.parameters()):
                units.append((f'{name}.module', ema.module))
                unit_modules.add(id(ema.module))
        # named_modules() lists parents first: reversed, every unit follows its subunits.
        order = {id(m): i for i, (_, m) in enumerate(model.named_modules())}
        units.sort(key=lambda item: -order[id(item[1])])
        return units, emas, chosen

    @staticmethod
    def _inside(name: str, prefixes: Sequence[str]) -> bool:
        return any(name == p or name.startswith(p + '.') for p in prefixes)

    def _apply_activation_checkpointing(self, model: nn.Module, units, chosen: set,
                                        ema_names: Sequence[str]) -> List[str]:
        if self.activation_checkpointing is False:
            return []
        if self.activation_checkpointing is True:
            targets = [(n, m) for n, m in units if n in chosen]
        else:
            wanted = _class_filter(list(self.activation_checkpointing),
                                   'activation_checkpointing')
            targets = [(n, m) for n, m in model.named_modules()
                       if m is not model and wanted(m, n)]
        applied = []
        for name, module in targets:
            if self._inside(name, ema_names):
                continue  # averages run without grad
            if isinstance(getattr(module, 'with_cp', None), bool):
                module.with_cp = True
                applied.append(f'{type(module).__name__} (with_cp)')
            else:
                module.forward = _checkpointed(module.forward)
                applied.append(type(module).__name__)
        if not applied:
            self.logger.warning('activation_checkpointing is set but matched no module')
        return applied

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        """Apply ``fully_shard`` to the units and the root; make averaged copies work."""
        if isinstance(model, FSDPModule):
            return model
        if is_model_wrapper(model):
            raise TypeError(f'FSDP2Strategy shards plain modules, got the wrapper '
                            f'{type(model).__name__}')
        model = self.convert_model(model)
        self.mesh = self._build_mesh()
        device = torch.device(self.mesh.device_type, torch.cuda.current_device()) \
            if self.mesh.device_type == 'cuda' else torch.device('cpu')
        preprocessor = getattr(model, 'data_preprocessor', None)
        if isinstance(preprocessor, nn.Module):
            preprocessor.to(device)  # fully_shard moves tensors but not its `_device`

        # fully_shard cannot shard 0-d parameters (e.g. the MI heads' logit_scale): they
        # stay replicated; their gradients are averaged in the optimizer wrapper's step.
        self.replicated_params = {n: p for n, p in model.named_parameters() if p.ndim == 0}
        for param in self.replicated_params.values():
            param.data = param.data.to(device)
        ignored = set(self.replicated_params.values())

        units, emas, chosen = self._plan_units(model)
        ema_names = list(emas)
        checkpointed = self._apply_activation_checkpointing(model, units, chosen, ema_names)
        for name, unit in units:
            reshard = True if self._inside(name, ema_names) else self.reshard_after_forward
            unit.register_forward_hook(_clone_view_outputs)
            fully_shard(unit, mesh=self.mesh, reshard_after_forward=reshard,
                        mp_policy=self.mp_policy, ignored_params=ignored)
        fully_shard(model, mesh=self.mesh, mp_policy=self.mp_policy, ignored_params=ignored)

        for name, ema in emas.items():
            ema.avg_parameters = (ema.module.state_dict() if ema.update_buffers else dict(
                ema.module.named_parameters()))
            ema.update_parameters = _ShardedAverageUpdate(ema, name)
        self._log_sharding(model, units, ema_names, checkpointed)
        return model

    def _log_sharding(self, model: nn.Module, units, ema_names, checkpointed) -> None:
        total = sum(p.numel() for p in model.parameters())
        local = sum((p.to_local() if isinstance(p, DTensor) else p).numel()
                    for p in model.parameters())
        per_rank = [None] * self.world_size
        dist.all_gather_object(per_rank, local)
        online = Counter(type(m).__name__.replace('FSDP', '', 1) for n, m in units
                         if not self._inside(n, ema_names))
        averaged = sum(1 for n, _ in units if self._inside(n, ema_names))
        mp = self.mp_policy
        lines = [
            f'FSDP2: {len(units) + 1} shard units over {self.world_size} '
            f'rank{"s" if self.world_size > 1 else ""} '
            f'({self.mesh.device_type} mesh): root {type(model).__name__.replace("FSDP", "", 1)}'
            + ''.join(f', {name} x{n}' for name, n in sorted(online.items())),
            f'FSDP2: parameters {total / 1e6:.2f}M in all, per rank (M): '
            + ', '.join(f'{n / 1e6:.2f}' for n in per_rank),
            f'FSDP2: mixed precision: params {mp.param_dtype or "as stored"}, reduce '
            f'{mp.reduce_dtype or "as params"}; reshard after forward: '
            f'{self.reshard_after_forward}; checkpoints: {self.state_dict_type}',
        ]
        if self.replicated_params:
            lines.append(f'FSDP2: {len(self.replicated_params)} 0-d parameters kept replicated '
                         f'(gradients averaged before each step): '
                         + ', '.join(self.replicated_params))
        if ema_names:
            lines.append(f'FSDP2: averaged models {ema_names}: {averaged} units sharded like '
                         'their sources, updated shard by shard')
        if checkpointed:
            counts = Counter(checkpointed)
            lines.append('FSDP2: activation checkpointing: '
                         + ', '.join(f'{k} x{v}' for k, v in sorted(counts.items())))
        for line in lines:
            self.logger.info(line)

    # ------------------------------------------------------------------ optimizer
    def build_optim_wrapper(self, optim_wrapper, model: Optional[nn.Module] = None
                            ) -> BaseOptimWrapper:
        """Build the optimizer wrapper on the sharded model (see ``BaseStrategy``)."""
        wrapper = super().build_optim_wrapper(optim_wrapper, model)
        if isinstance(wrapper, OptimWrapperDict):
            raise NotImplementedError('FSDP2Strategy supports one optimizer wrapper, got an '
                                      f'OptimWrapperDict with {list(wrapper.keys())}')
        if isinstance(wrapper, AmpOptimWrapper):
            raise ValueError('AmpOptimWrapper does not work with FSDP2 (its loss scaler '
                             'expects unsharded gradients); use optim_wrapper type '
                             "'OptimWrapper' and FSDP2Strategy(mixed_precision=dict("
                             "param_dtype='bfloat16', reduce_dtype='float32'))")
        registered = {id(p) for p in (model if model is not None else self.model).parameters()}
        for group in wrapper.optimizer.param_groups:
            for param in group['params']:
                if id(param) not in registered:
                    raise RuntimeError(
                        'the optimizer holds parameters that are not the sharded model\'s: '
                        'it was built before fully_shard. Give FlexibleRunner an '
                        'optim_wrapper config dict, not a built optimizer')
        if self.replicated_params:
            step = wrapper.step  # bound to the class's step
            average = self._average_replicated_grads

            def step_with_replicated_grads_averaged(optim_wrapper, *args, **kwargs):
                average()
                return step(*args, **kwargs)

            # A bound method, as mmengine's param schedulers re-wrap `step` through __self__.
            wrapper.step = types.MethodType(step_with_replicated_grads_averaged, wrapper)
        return wrapper

    def _average_replicated_grads(self) -> None:
        """Average the gradients of the replicated (0-d) parameters over ranks.

        Runs in the optimizer wrapper's ``step``, before gradient clipping. A rank without a
        gradient for one of them contributes zeros, as with DDP.
        """
        params = list(self.replicated_params.values())
        device = params[0].device
        grads = torch.stack([
            p.grad.detach().float().reshape(()) if p.grad is not None else
            torch.zeros((), device=device) for p in params])
        has_grad = torch.tensor([float(p.grad is not None) for p in params], device=device)
        buffer = torch.cat([grads, has_grad])
        dist.all_reduce(buffer)
        mean = buffer[:len(params)] / self.world_size
        for i, param in enumerate(params):
            if buffer[len(params) + i] > 0:
                param.grad = mean[i].to(param.dtype).reshape(param.shape)

    # ------------------------------------------------------------------ state dicts
    @property
    def _full(self) -> StateDictOptions:
        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def _optimizer(self):
        if not isinstance(getattr(self, 'optim_wrapper', None), BaseOptimWrapper):
            raise RuntimeError('FSDP2Strategy has no optimizer wrapper (prepare() was not '
                               'given one)')
        return self.optim_wrapper.optimizer

    def model_state_dict(self) -> dict:
        """The full model state dict on CPU, on rank 0 ({} elsewhere). All ranks call."""
        return get_model_state_dict(self.model, options=self._full)

    def optim_state_dict(self) -> dict:
        """The full, name-keyed optimizer state on rank 0 ({} elsewhere). All ranks call."""
        return get_optimizer_state_dict(self.model, self._optimizer(), options=self._full)

    def load_model_state_dict(self, state_dict: dict, *, strict: bool = False,
                              revise_keys: list = [(r'^module.', '')]) -> None:
        """Load a full (unsharded) state dict given to every rank; each keeps its shards.

        Keys missing from ``state_dict``, keys the model lacks and shape mismatches are
        errors if ``strict``, else they are logged and skipped.
        """
        state_dict = _revise_keys(state_dict, revise_keys)
        expected = {k: v.shape for k, v in self.model.state_dict().items()}
        unexpected = sorted(set(state_dict) - set(expected))
        missing = sorted(set(expected) - set(state_dict))
        mismatched = sorted(
            f'{k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k])}'
            for k, v in state_dict.items()
            if k in expected and torch.is_tensor(v) and v.shape != expected[k])
        problems = [(what, keys) for what, keys in (
            ('unexpected keys in the checkpoint', unexpected),
            ('keys missing from the checkpoint', missing),
            ('shape mismatches', mismatched)) if keys]
        if problems:
            text = '; '.join(f'{what}: {_shorten(keys)}' for what, keys in problems)
            if strict:
                raise RuntimeError(f'cannot load the state dict strictly: {text}')
            self.logger.warning(f'loading the state dict non-strictly: {text}')
        drop = set(unexpected) | {m.split(':')[0] for m in mismatched}
        state_dict = {k: v for k, v in state_dict.items() if k not in drop}
        set_model_state_dict(self.model, state_dict,
                             options=StateDictOptions(full_state_dict=True, strict=False))

    def load_optim_state_dict(self, state_dict) -> None:
        """Load the ``optimizer`` entry of a checkpoint written by this strategy."""
        optimizer = self._optimizer()
        if isinstance(state_dict, _ShardedOptimizerState):
            import torch.distributed.checkpoint as dcp
            sharded = get_optimizer_state_dict(self.model, optimizer)
            dcp.load({'optimizer': sharded}, checkpoint_id=state_dict.path)
            set_optimizer_state_dict(self.model, optimizer, sharded)
            return
        if not isinstance(state_dict.get('state'), dict) or any(
                isinstance(k, int) for k in state_dict['state']):
            raise ValueError('the optimizer state is not keyed by parameter name: it was not '
                             'saved by FSDP2Strategy (resume such checkpoints with the '
                             'strategy that wrote them, or use load_from for the weights)')
        set_optimizer_state_dict(self.model, optimizer, state_dict,
                                 options=StateDictOptions(full_state_dict=True))

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_extra(self, save_param_scheduler: bool, extra_ckpt: Optional[dict]
                          ) -> dict:
        checkpoint = dict(extra_ckpt or {})
        if save_param_scheduler and hasattr(self, 'param_schedulers'):
            checkpoint['param_schedulers'] = self.scheduler_state_dict()
        meta = dict(checkpoint.get('meta') or {})
        meta.update(seed=self.seed, time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                    mmengine=mmengine.__version__,
                    fsdp2=dict(world_size=self.world_size, state_dict_type=self.state_dict_type))
        checkpoint['meta'] = meta
        return checkpoint

    def save_checkpoint(self, filename: str, *, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, extra_ckpt: Optional[dict] = None,
                        callback: Optional[Callable] = None) -> None:
        """Save a ``'full'`` file or a ``'sharded'`` directory. All ranks must call.

        ``callback`` (the runner's ``before_save_checkpoint`` hooks) runs on rank 0 only,
        as with ``DDPStrategy``; for ``'sharded'`` it sees no ``state_dict``/``optimizer``.
        """
        save_optimizer = save_optimizer and hasattr(self, 'optim_wrapper')
        if self.state_dict_type == 'sharded':
            self._save_sharded(filename, save_optimizer, save_param_scheduler, extra_ckpt,
                               callback)
            return
        state_dict = self.model_state_dict()
        optimizer = self.optim_state_dict() if save_optimizer else None
        if self.rank == 0:
            checkpoint = {'state_dict': state_dict}
            if optimizer is not None:
                checkpoint['optimizer'] = optimizer
            checkpoint.update(self._checkpoint_extra(save_param_scheduler, extra_ckpt))
            if callback is not None:
                callback(checkpoint)
            _atomic_torch_save(checkpoint, filename)
        dist.barrier()

    def _save_sharded(self, dirname: str, save_optimizer: bool, save_param_scheduler: bool,
                      extra_ckpt: Optional[dict], callback: Optional[Callable]) -> None:
        import torch.distributed.checkpoint as dcp
        if not _is_local(dirname):
            raise ValueError(f"state_dict_type='sharded' writes local directories, got "
                             f'{dirname!r}')
        dirname = osp.abspath(dirname)
        names = [temporary_path(dirname)]  # the ranks write into rank 0's temporary
        dist.broadcast_object_list(names, src=0)
        tmp = names[0]
        if self.rank == 0 and osp.exists(tmp):
            shutil.rmtree(tmp)
        dist.barrier()
        state = {'model': get_model_state_dict(self.model)}
        if save_optimizer:
            state['optimizer'] = get_optimizer_state_dict(self.model, self._optimizer())
        dcp.save(state, checkpoint_id=tmp)
        if self.rank == 0:
            checkpoint = self._checkpoint_extra(save_param_scheduler, extra_ckpt)
            if callback is not None:
                callback(checkpoint)
            _atomic_torch_save(checkpoint, osp.join(tmp, SHARDED_META_FILE))
            if osp.isfile(dirname):
                os.remove(dirname)
            commit_path(tmp, dirname)  # fsyncs the shards, then renames the directory
        dist.barrier()

    def load_checkpoint(self, filename: str, *, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False, revise_keys: list = [(r'^module.', '')],
                        callback: Optional[Callable] = None) -> dict:
        """Load the model weights of a ``'full'`` file or a ``'sharded'`` directory.

        Every rank reads the checkpoint (files memory-mapped) and keeps its shards;
        ``map_location`` is ignored (tensors go to the shards' device). Returns the rest of
        the checkpoint; for a sharded one, its ``optimizer`` entry is a marker
        :meth:`load_optim_state_dict` understands.
        """
        self.logger.info(f'Load checkpoint from {filename}')
        if _is_local(filename) and osp.isdir(filename):
            return self._load_sharded(filename, strict, callback)
        checkpoint = _read_checkpoint(filename)
        if callback is not None:
            callback(checkpoint)
        if 'state_dict' not in checkpoint:
            raise KeyError(f'{filename!r} has no "state_dict" entry (keys: '
                           f'{sorted(checkpoint)}); it is not an mmengine checkpoint')
        self.load_model_state_dict(checkpoint.pop('state_dict'), strict=strict,
                                   revise_keys=revise_keys)
        return checkpoint

    def _load_sharded(self, dirname: str, strict: bool, callback: Optional[Callable]) -> dict:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
        meta_path = osp.join(dirname, SHARDED_META_FILE)
        if not osp.isfile(meta_path):
            raise FileNotFoundError(f'{dirname!r} is not a sharded FSDP2Strategy checkpoint '
                                    f'(no {SHARDED_META_FILE})')
        checkpoint = load_checkpoint_file(meta_path, map_location='cpu')
        if callback is not None:
            callback(checkpoint)
        stored = set(FileSystemReader(dirname).read_metadata().state_dict_metadata)
        model_sd = get_model_state_dict(self.model)
        missing = sorted(k for k in model_sd if f'model.{k}' not in stored)
        if missing:
            if strict:
                raise RuntimeError(f'cannot load {dirname!r} strictly: keys missing from the '
                                   f'checkpoint: {_shorten(missing)}')
            self.logger.warning(f'keys missing from the checkpoint: {_shorten(missing)}')
        dcp.load({'model': model_sd}, checkpoint_id=dirname,
                 planner=DefaultLoadPlanner(allow_partial_load=True))
        set_model_state_dict(self.model, model_sd)
        if any(k.startswith('optimizer.') for k in stored):
            checkpoint['optimizer'] = _ShardedOptimizerState(dirname)
        return checkpoint
