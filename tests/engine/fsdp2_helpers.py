"""Tiny models and the 2-rank (gloo) scenarios behind ``test_fsdp2_strategy.py``.

The scenarios run in one spawned process pair (imports cost more than the training) and
save what they observe with ``torch.save``; the tests compare that with float64 references
computed in the test process.
"""
import math
import os.path as osp
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseAveragedModel, BaseModel

IN_DIM, DIM, OUT_DIM = 5, 7, 3     # 7 rows over 2 ranks: uneven shards (4 + 3)
DEPTH = 3
LOCAL_BATCH = 4
STEPS = 4
LR, MOMENTUM, WEIGHT_DECAY, LAYER_DECAY, MAX_NORM = 0.1, 0.9, 0.01, 0.5, 0.05
EMA_MOMENTUM = 0.3
CKPT_STEPS, CKPT_AT = 6, 3


class TinyBlock(nn.Module):
    """Residual block; its ``gate`` has one row, so rank 1 holds an empty shard of it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.gate = nn.Parameter(torch.full((1, dim), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gate * torch.tanh(self.fc(self.norm(x)))


class TinyNet(BaseModel):
    """stem -> blocks -> head, times a buffer and a 0-d parameter, plus a frozen bias; MSE
    loss (batch mean)."""

    def __init__(self, depth: int = DEPTH) -> None:
        super().__init__()
        self.stem = nn.Linear(IN_DIM, DIM)
        self.blocks = nn.ModuleList(TinyBlock(DIM) for _ in range(depth))
        self.head = nn.Linear(DIM, OUT_DIM)
        self.register_buffer('scale', torch.tensor(1.5))
        self.frozen = nn.Parameter(torch.linspace(-0.1, 0.1, OUT_DIM), requires_grad=False)
        self.temperature = nn.Parameter(torch.tensor(0.8))  # 0-d: FSDP2 cannot shard it

    def forward(self, inputs, targets=None, mode: str = 'tensor'):
        x = self.stem(inputs)
        for block in self.blocks:
            x = block(x)
        out = self.head(x) * (self.scale * self.temperature) + self.frozen
        if mode == 'loss':
            return dict(loss=((out - targets)**2).mean())
        return out

    def get_layer_depth(self, name: str):
        """stem: 0, block i: i + 1, the rest: last (for layer-wise lr decay)."""
        num_layers = len(self.blocks) + 2
        if name.startswith('stem.'):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers


class TinyEncoder(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(IN_DIM, DIM)
        self.blocks = nn.ModuleList(TinyBlock(DIM) for _ in range(2))
        self.gain = nn.Parameter(torch.tensor(1.0))  # 0-d: replicated in both copies

    def forward(self, x):
        x = self.stem(x) * self.gain
        for block in self.blocks:
            x = block(x)
        return x


class TinyNeck(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x):
        return self.proj(x)


class DecayingEMA(BaseAveragedModel):
    """The in-place update of mmpretrain's ``CosineEMA`` (M3I's target encoder) with a
    momentum that depends on the step, ``m_t = m / (1 + t)`` (no mmpretrain import)."""

    def avg_func(self, averaged_param, source_param, steps) -> None:
        momentum = EMA_MOMENTUM / (1 + int(steps))
        averaged_param.mul_(1 - momentum).add_(source_param, alpha=momentum)


class TinyEMANet(BaseModel):
    """M3I's pattern: the loss first updates ``EMA(Sequential(backbone, neck))``, then
    regresses the EMA's features of the inputs (no grad) and the targets."""

    def __init__(self, update_after_forward: bool = False) -> None:
        super().__init__()
        self.backbone = TinyEncoder()
        self.neck = TinyNeck()
        self.pred = nn.Linear(DIM, DIM + OUT_DIM)
        self.target_encoder = DecayingEMA(nn.Sequential(self.backbone, self.neck))
        self.update_after_forward = update_after_forward

    def forward(self, inputs, targets=None, mode: str = 'tensor'):
        online = nn.Sequential(self.backbone, self.neck)
        if not self.update_after_forward:
            self.target_encoder.update_parameters(online)
        feats = self.neck(self.backbone(inputs))
        if self.update_after_forward:  # wrong under FSDP2: the backbone is gathered now
            self.target_encoder.update_parameters(online)
        with torch.no_grad():
            encoder = self.target_encoder.module
            target_feats = encoder[1](encoder[0](inputs))
        out = self.pred(feats)
        loss = ((out[:, :DIM] - target_feats)**2).mean() + ((out[:, DIM:] - targets)**2).mean()
        return dict(loss=loss)


# ----------------------------------------------------------------------------- data
def global_batch(step: int, size: int = 2 * LOCAL_BATCH) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    return dict(inputs=torch.randn(size, IN_DIM, generator=gen),
                targets=torch.randn(size, OUT_DIM, generator=gen))


def local_batch(step: int, rank: int) -> Dict[str, torch.Tensor]:
    batch = global_batch(step)
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    return {k: v[rows] for k, v in batch.items()}


def layer_decay_optim_wrapper() -> dict:
    return dict(constructor='m3i_mm.LayerDecayOptimWrapperConstructor',
                optimizer=dict(type='SGD', lr=LR, momentum=MOMENTUM,
                               weight_decay=WEIGHT_DECAY),
                paramwise_cfg=dict(layer_decay_rate=LAYER_DECAY),
                clip_grad=dict(max_norm=MAX_NORM))


# ----------------------------------------------------------------------------- scenarios
def make_strategy(work_dir: str, **kwargs):
    from m3i_mm.engine.strategies import FSDP2Strategy
    return FSDP2Strategy(work_dir=work_dir, experiment_name='fsdp2_test',
                         env_kwargs=dict(launcher='pytorch', randomness=dict(seed=0)),
                         **kwargs)


def gathered(strategy) -> Dict[str, torch.Tensor]:
    """A snapshot of the full model state (rank 0; ``{}`` elsewhere). Cloned: the
    replicated 0-d parameters come back as the live tensors, as with ``state_dict()``."""
    return {k: v.clone() for k, v in strategy.model_state_dict().items()}


def _local_shapes(model: nn.Module) -> Dict[str, tuple]:
    from torch.distributed.tensor import DTensor
    return {name: tuple(p.to_local().shape) if isinstance(p, DTensor) else None
            for name, p in model.named_parameters()}


def _train_equivalence(rank: int, out_dir: str, variant: str) -> dict:
    """``variant``: 'plain', 'checkpointed' (activation checkpointing) or 'bf16'
    (bf16 parameters and compute, fp32 reduction)."""
    from torch.distributed.tensor import DTensor
    strategy = make_strategy(
        osp.join(out_dir, f'equiv_{variant}'), shard_modules=['TinyBlock'],
        activation_checkpointing=variant == 'checkpointed',
        mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32')
        if variant == 'bf16' else None)
    torch.manual_seed(rank)  # different on each rank: prepare() must broadcast rank 0's
    model, optim_wrapper = strategy.prepare(TinyNet(), optim_wrapper=layer_decay_optim_wrapper())
    hub = MessageHub.get_current_instance()
    result = dict(initial=gathered(strategy), local_shapes=_local_shapes(model),
                  optimizer_params_are_model_dtensors=all(
                      (isinstance(p, DTensor) or p.ndim == 0)
                      and any(p is q for q in model.parameters())
                      for g in optim_wrapper.optimizer.param_groups for p in g['params']),
                  group_lrs=sorted(g['lr'] for g in optim_wrapper.optimizer.param_groups),
                  grad_norms=[], losses=[])
    for step in range(STEPS):
        log = model.train_step(local_batch(step, rank), optim_wrapper)
        result['losses'].append(float(log['loss'].detach()))
        result['grad_norms'].append(float(hub.get_scalar('train/grad_norm').current()))
    result['final'] = gathered(strategy)
    result['stored_dtypes'] = sorted({str(t.dtype) for t in [
        *model.parameters(), *(v for st in optim_wrapper.optimizer.state.values()
                               for v in st.values() if torch.is_tensor(v))]})
    # (after this forward without backward, the root keeps its gathered parameters)
    result['compute_dtype'] = str(model(local_batch(0, rank)['inputs']).dtype)
    return result


def _train_ema(rank: int, out_dir: str) -> dict:
    from torch.distributed.tensor import DTensor
    strategy = make_strategy(osp.join(out_dir, 'ema'), shard_modules=['TinyBlock'])
    torch.manual_seed(0)
    model, optim_wrapper = strategy.prepare(
        TinyEMANet(), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.2, momentum=0.9)))
    result = dict(online=[], local_shapes=_local_shapes(model))
    for step in range(STEPS):
        full = gathered(strategy)
        result['online'].append({k: v for k, v in full.items()
                                 if k.startswith(('backbone.', 'neck.'))})
        model.train_step(local_batch(step, rank), optim_wrapper)
    ema = model.target_encoder
    result['ema_sharded_after_step'] = all(isinstance(p, DTensor) for p in ema.parameters()
                                           if p.ndim > 0)
    result['final'] = gathered(strategy)

    # The same model updating its EMA inside the backbone's forward window must fail loudly.
    strategy = make_strategy(osp.join(out_dir, 'ema_bad'), shard_modules=['TinyBlock'],
                             reshard_after_forward=False)
    bad_model, bad_wrapper = strategy.prepare(
        TinyEMANet(update_after_forward=True),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.2)))
    try:
        bad_model.train_step(local_batch(0, rank), bad_wrapper)
        result['misplaced_update_error'] = None
    except RuntimeError as exc:
        result['misplaced_update_error'] = str(exc)
    return result


def _train_with_checkpoint(rank: int, out_dir: str, state_dict_type: str) -> dict:
    """6 AdamW steps with a saved checkpoint after 3, and a run resumed from it."""
    scheduler = dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0,
                     end=CKPT_STEPS)
    optim = dict(optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.05),
                 clip_grad=dict(max_norm=1.0))
    suffix = '' if state_dict_type == 'sharded' else '.pth'
    path = osp.join(out_dir, f'ckpt_{state_dict_type}', f'iter_{CKPT_AT}{suffix}')

    def run(seed: int, resume: bool) -> dict:
        strategy = make_strategy(osp.join(out_dir, f'ckpt_{state_dict_type}'),
                                 shard_modules=['TinyBlock'], state_dict_type=state_dict_type)
        torch.manual_seed(seed)
        model, wrapper, schedulers = strategy.prepare(
            TinyNet(), optim_wrapper=dict(optim), param_scheduler=dict(scheduler),
            dispatch_kwargs=dict(max_iters=CKPT_STEPS))
        first = 0
        if resume:
            checkpoint = strategy.resume(path)
            first = checkpoint['meta']['iter']
        losses, lrs = {}, {}
        for step in range(first, CKPT_STEPS):
            lrs[step] = wrapper.optimizer.param_groups[0]['lr']
            log = model.train_step(local_batch(step, rank), wrapper)
            losses[step] = float(log['loss'].detach())
            for s in schedulers:
                s.step()
            if not resume and step + 1 == CKPT_AT:
                strategy.save_checkpoint(path, extra_ckpt=dict(meta=dict(iter=CKPT_AT)))
                at_save = gathered(strategy)
        out = dict(losses=losses, lrs=lrs, final=gathered(strategy))
        if not resume:
            out['at_save'] = at_save
        return out

    return dict(path=path, straight=run(seed=1, resume=False), resumed=run(seed=2, resume=True))


def run_scenarios(rank: int, world_size: int, out_dir: str) -> None:
    """All scenarios on this rank; each rank saves ``results_rank{rank}.pt``."""
    import m3i_mm  # noqa: F401  (registries, checkpoint allow-list)
    results = dict(
        equivalence={v: _train_equivalence(rank, out_dir, v)
                     for v in ('plain', 'checkpointed', 'bf16')},
        ema=_train_ema(rank, out_dir),
        checkpoint={kind: _train_with_checkpoint(rank, out_dir, kind)
                    for kind in ('full', 'sharded')})
    torch.save(results, osp.join(out_dir, f'results_rank{rank}.pt'))
    dist.barrier()


# ----------------------------------------------------------------------------- references
def reference_training(initial: Dict[str, torch.Tensor]):
    """Float64 single-process training on the concatenated batches, written out directly:
    SGD with momentum, layer-wise lr decay, no decay for 1-D/bias, global-norm clipping."""
    model = TinyNet().double()
    model.load_state_dict({k: v.double() for k, v in initial.items()})
    num_layers = DEPTH + 2
    params, grad_norms = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layer_id = model.get_layer_depth(name)[0]
        lr = LR * LAYER_DECAY**(num_layers - layer_id - 1)
        wd = 0.0 if (p.ndim == 1 or name.endswith('.bias')) else WEIGHT_DECAY
        params.append((p, lr, wd))
    buffers: List = [None] * len(params)
    for step in range(STEPS):
        batch = {k: v.double() for k, v in global_batch(step).items()}
        model.zero_grad()
        model(batch['inputs'], batch['targets'], mode='loss')['loss'].backward()
        norm = math.sqrt(sum(float((p.grad**2).sum()) for p, _, _ in params))
        grad_norms.append(norm)
        scale = min(1.0, MAX_NORM / (norm + 1e-6))
        with torch.no_grad():
            for i, (p, lr, wd) in enumerate(params):
                d = p.grad * scale + wd * p
                buffers[i] = d.clone() if buffers[i] is None else MOMENTUM * buffers[i] + d
                p -= lr * buffers[i]
    return {k: v.detach() for k, v in model.state_dict().items()}, grad_norms


def reference_ema(online_per_step: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """The EMA in float64: a copy at step 0, then ``(1 - m_t) e + m_t w_t``."""
    ema = {k: v.double().clone() for k, v in online_per_step[0].items()}
    for t in range(1, len(online_per_step)):
        m = EMA_MOMENTUM / (1 + t)
        ema = {k: (1 - m) * ema[k] + m * online_per_step[t][k].double() for k in ema}
    return ema
