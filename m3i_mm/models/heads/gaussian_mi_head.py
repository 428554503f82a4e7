"""Gaussian MI head: regression of a target representation (MSE, optional UniGrad term).

With a Gaussian variational distribution ``q(z_y | z_x) = N(g(z_x), sigma^2 I)`` the MI lower
bound ``E[log q(z_y | z_x)]`` is, up to constants, ``-||g(z_x) - z_y||^2``: pixel regression
(MAE) and feature regression (SiameseIM) are both this head (M3I design note, sections 2 and
3.6).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule

from m3i_mm.registry import MODELS
from ..utils.dist_utils import all_reduce_sum, get_world_size

__all__ = ['GaussianMIHead']


def _loss_stem(loss_name: str) -> str:
    """Prefix for monitoring keys: ``loss_dense_same`` -> ``dense_same``.

    mmengine's ``parse_losses`` sums every entry whose key contains ``'loss'``, so monitoring
    values must use keys without it.
    """
    stem = loss_name.replace('loss', '').strip('_')
    return stem or 'mi'


def _check_loss_name(loss_name: str) -> None:
    if not isinstance(loss_name, str) or 'loss' not in loss_name:
        raise ValueError(f'loss_name must be a string containing "loss" (mmengine only '
                         f'optimises such keys), got {loss_name!r}')


@MODELS.register_module()
class GaussianMIHead(BaseModule):
    """Regression head: ``-log q(z_y | z_x)`` for a Gaussian ``q``, with optional UniGrad.

    The loss over the counted positions ``i`` (those with ``weight > 0``) is::

        loss = loss_weight * (mean_i ||p_i - t_i||^2 + unigrad_lambda * mean_i p_i^T F p_i) / D

    where ``p`` is the prediction, ``t`` the (normalised, stop-gradient) target, ``D`` the
    feature size and ``F = E[t t^T]`` the second moment of the counted targets of the *global*
    batch (sums of ``t t^T`` and of the counts are all-reduced, then divided). With
    ``unigrad_lambda=0`` this is the plain element-wise MSE averaged over counted positions.
    The gradient of the decorrelation term is ``2 * lambda * F p / D`` per position; as in
    SiameseIM the term is a real loss, not UniGrad's gradient surrogate.

    Choices taken from the references (read, not copied):

    * SiameseIM (``models_sim.py``): target normalised by a LayerNorm without affine under
      ``no_grad``; prediction optionally normalised by a frozen LayerNorm (``online_ln``,
      default off); ``F`` from the current batch only; ``lambda = 0.02``. SiameseIM averages
      per-rank ``F`` (exact only with equal counts per rank); here the sums and counts are
      all-reduced, so ``F`` is exact for unequal counts as well.
    * UniGrad (``fundamentalvision/UniGrad``): l2-normalised features, a gradient
      surrogate loss and a running ``F`` (``F <- rho F + (1 - rho) F_batch``, ``rho = 0.99``,
      initialised with the first batch). ``corr_momentum`` enables such a running ``F``;
      ``0`` (default) is SiameseIM's behaviour. [A] Features are not l2-normalised here:
      M3I's dense targets follow SiameseIM (LayerNorm), whose ``lambda = 0.02`` belongs to
      that scale (UniGrad's ``lambda = 100`` belongs to unit-norm features).

    Args:
        loss_name: Key of the loss in the returned dict; must contain ``'loss'``
            (e.g. ``'loss_dense_same'``, ``'loss_dense_cross'``, ``'loss_pixel'``).
        loss_weight: Factor applied to the loss (the M3I weight ``w_same`` etc.).
        normalize_target: Apply a LayerNorm without affine over the last dim to the target
            (SiameseIM's ``teacher_norm``; biased variance). Set ``False`` when the caller
            normalises it (e.g. MAE's ``norm_pix_loss``, which uses the unbiased variance).
        normalize_pred: Apply a LayerNorm without affine to the prediction (SiameseIM
            ``online_ln``). [A] default ``False`` as in SiameseIM.
        unigrad_lambda: Weight of the decorrelation term; ``0`` disables it (and its
            all-reduce). M3I's dense heads use ``0.02`` (SiameseIM's ``neg_weight``). [A]
            default 0 so that the same head serves plain pixel/feature regression.
        corr_momentum: Momentum ``rho`` of a running ``F``; ``0`` uses the batch ``F``.
            Needs ``feat_dim``. The running ``F`` is a persistent buffer (saved in
            checkpoints) updated only in training mode.
        feat_dim: Feature size ``D``; required when ``corr_momentum > 0``.
        average: ``'local'``: the loss on each rank is averaged over that rank's counted
            positions (MAE/SiameseIM; no collective unless UniGrad is on). ``'global'``: it is
            divided by ``(global count / world size)`` so that, after DDP averages
            gradients, every counted position of the global batch weighs the same even when
            ranks count different numbers of positions. [A] default ``'local'``.
        detach_target: Stop the gradient into the target (``True``: EMA / fixed targets).
        eps: Epsilon of the LayerNorms (SiameseIM's ``teacher_norm``: torch's default 1e-5).
        init_cfg: mmengine init config (the head has no parameters).

    Note:
        When UniGrad is on or ``average='global'`` the loss runs a collective: call it on
        every rank at every iteration, also when a rank has nothing to count (an empty
        ``weight`` gives a zero loss that is still connected to ``pred``).
    """

    def __init__(self,
                 loss_name: str = 'loss_dense',
                 loss_weight: float = 1.0,
                 normalize_target: bool = True,
                 normalize_pred: bool = False,
                 unigrad_lambda: float = 0.0,
                 corr_momentum: float = 0.0,
                 feat_dim: Optional[int] = None,
                 average: str = 'local',
                 detach_target: bool = True,
                 eps: float = 1e-5,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        _check_loss_name(loss_name)
        if unigrad_lambda < 0:
            raise ValueError(f'unigrad_lambda must be >= 0, got {unigrad_lambda}')
        if not 0.0 <= corr_momentum < 1.0:
            raise ValueError(f'corr_momentum must be in [0, 1), got {corr_momentum}')
        if average not in ('local', 'global'):
            raise ValueError(f"average must be 'local' or 'global', got {average!r}")
        if corr_momentum > 0:
            if unigrad_lambda == 0:
                raise ValueError('corr_momentum > 0 needs unigrad_lambda > 0 (F is only used '
                                 'by the UniGrad term)')
            if not isinstance(feat_dim, int) or feat_dim <= 0:
                raise ValueError('corr_momentum > 0 needs feat_dim (the feature size D) for '
                                 f'the running correlation buffer, got feat_dim={feat_dim!r}')
            self.register_buffer('running_corr', torch.zeros(feat_dim, feat_dim))
            self.register_buffer('corr_initialized', torch.zeros((), dtype=torch.bool))
        self.loss_name = loss_name
        self.loss_weight = float(loss_weight)
        self.normalize_target = normalize_target
        self.normalize_pred = normalize_pred
        self.unigrad_lambda = float(unigrad_lambda)
        self.corr_momentum = float(corr_momentum)
        self.feat_dim = feat_dim
        self.average = average
        self.detach_target = detach_target
        self.eps = eps

    # ------------------------------------------------------------------ helpers
    def _flatten_inputs(self, pred: torch.Tensor, target: torch.Tensor,
                        weight: Optional[torch.Tensor]
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError('pred and target must be tensors, got '
                            f'{type(pred).__name__} and {type(target).__name__}')
        if pred.dim() not in (2, 3):
            raise ValueError(f'pred must have shape (N, D) or (N, L, D), got {tuple(pred.shape)}')
        if target.shape != pred.shape:
            raise ValueError(f'target shape {tuple(target.shape)} must equal pred shape '
                             f'{tuple(pred.shape)}')
        if not pred.is_floating_point() or not target.is_floating_point():
            raise TypeError(f'pred and target must be floating point, got {pred.dtype} and '
                            f'{target.dtype}')
        if self.feat_dim is not None and pred.shape[-1] != self.feat_dim:
            raise ValueError(f'feature size {pred.shape[-1]} != feat_dim {self.feat_dim}')
        if weight is None:
            weight = pred.new_ones(pred.shape[:-1])
        elif not isinstance(weight, torch.Tensor) or weight.shape != pred.shape[:-1]:
            raise ValueError(f'weight must be a tensor of shape {tuple(pred.shape[:-1])} '
                             f'(pred without its feature dim), got '
                             f'{tuple(getattr(weight, "shape", ()))}')
        dtype = torch.promote_types(pred.dtype, torch.float32)
        weight = weight.detach().to(dtype)
        if (weight < 0).any():
            raise ValueError('weight must be non-negative')
        dim = pred.shape[-1]
        return (pred.to(dtype).reshape(-1, dim), target.to(dtype).reshape(-1, dim),
                weight.reshape(-1))

    def _normalize_target(self, target: torch.Tensor) -> torch.Tensor:
        if self.detach_target:
            target = target.detach()
        if self.normalize_target:
            target = F.layer_norm(target, target.shape[-1:], eps=self.eps)
        return target

    def _reduced_stats(self, target: torch.Tensor, weight: torch.Tensor,
                       with_corr: bool) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """All-reduced ``sum_i w_i t_i t_i^T`` (if ``with_corr``) and ``sum_i w_i``."""
        count = weight.sum().reshape(1)
        if not with_corr:
            return None, all_reduce_sum(count)[0]
        with torch.no_grad():
            corr_sum = (target * weight[:, None]).t() @ target
        dim = target.shape[-1]
        packed = all_reduce_sum(torch.cat([corr_sum.reshape(-1), count.detach()]))
        return packed[:-1].reshape(dim, dim), packed[-1]

    # ------------------------------------------------------------------ public API
    def compute_correlation(self, target: torch.Tensor,
                            weight: Optional[torch.Tensor] = None
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``F = E[t t^T]`` of the (normalised) counted targets over the global batch.

        Runs an all-reduce when distributed. Does not touch the running ``F``.

        Args:
            target: (N, D) or (N, L, D) targets as given to :meth:`loss`.
            weight: Optional (N,) / (N, L) non-negative weights (0 = not counted).

        Returns:
            ``(F, count)``: the (D, D) second moment (zeros when nothing is counted on any
            rank) and the global sum of weights.
        """
        _, target, weight = self._flatten_inputs(target, target, weight)
        target = self._normalize_target(target)
        corr_sum, count = self._reduced_stats(target, weight, with_corr=True)
        return corr_sum / count.clamp(min=torch.finfo(count.dtype).tiny), count

    def loss(self, pred: torch.Tensor, target: torch.Tensor,
             weight: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Compute the regression loss.

        Args:
            pred: (N, D) or (N, L, D) predictions ``g(z_x)``.
            target: Targets ``z_y`` of the same shape (detached unless
                ``detach_target=False``).
            weight: Optional (N,) or (N, L) non-negative weights, usually a 0/1 mask of the
                positions that count. Positions with weight 0 contribute nothing (neither to
                the loss nor to ``F``).

        Returns:
            ``{loss_name: loss}`` plus detached monitoring values whose keys do not contain
            ``'loss'``: ``'<stem>_mse'`` (mean squared error per element, before
            ``loss_weight``) and, with UniGrad, ``'<stem>_decorr'`` (``mean p^T F p / D``),
            where ``<stem>`` is ``loss_name`` without ``'loss'`` (``'dense_same'``).
        """
        # SiameseIM computes this loss outside autocast: the decorrelation term is small and
        # a half-precision matmul would swamp it.
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self._loss(pred, target, weight)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor,
              weight: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        pred, target, weight = self._flatten_inputs(pred, target, weight)
        dim = pred.shape[-1]
        if self.normalize_pred:
            pred = F.layer_norm(pred, (dim, ), eps=self.eps)
        target = self._normalize_target(target)
        use_unigrad = self.unigrad_lambda > 0

        local_count = weight.sum()
        global_corr_sum, global_count = None, None
        if use_unigrad or self.average == 'global':
            global_corr_sum, global_count = self._reduced_stats(target, weight, use_unigrad)
        if self.average == 'global':
            denominator = global_count / get_world_size()
        else:
            denominator = local_count
        # An empty selection gives sums of exactly 0 that stay connected to ``pred``.
        denominator = denominator.clamp(min=torch.finfo(denominator.dtype).tiny)

        sq_error = ((pred - target)**2).sum(-1)
        pos_term = (weight * sq_error).sum() / denominator
        loss = pos_term
        stem = _loss_stem(self.loss_name)
        outputs = {f'{stem}_mse': pos_term.detach() / dim}
        if use_unigrad:
            corr = self._update_correlation(global_corr_sum, global_count)
            neg_term = (weight * ((pred @ corr) * pred).sum(-1)).sum() / denominator
            loss = loss + self.unigrad_lambda * neg_term
            outputs[f'{stem}_decorr'] = neg_term.detach() / dim
        outputs = {self.loss_name: self.loss_weight * loss / dim, **outputs}
        return outputs

    @torch.no_grad()
    def _update_correlation(self, corr_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """Batch ``F``, or the running ``F`` after this batch's update."""
        has_data = bool(count > 0)
        batch_corr = corr_sum / count if has_data else torch.zeros_like(corr_sum)
        if self.corr_momentum == 0:
            return batch_corr
        if self.training and has_data:
            batch_corr = batch_corr.to(self.running_corr.dtype)
            if bool(self.corr_initialized):
                self.running_corr.mul_(self.corr_momentum).add_(
                    batch_corr, alpha=1.0 - self.corr_momentum)
            else:
                self.running_corr.copy_(batch_corr)
                self.corr_initialized.fill_(True)
        if not bool(self.corr_initialized):
            return batch_corr.to(corr_sum.dtype)
        return self.running_corr.to(corr_sum.dtype)

    def extra_repr(self) -> str:
        return (f'loss_name={self.loss_name!r}, loss_weight={self.loss_weight}, '
                f'normalize_target={self.normalize_target}, '
                f'normalize_pred={self.normalize_pred}, unigrad_lambda={self.unigrad_lambda}, '
                f'corr_momentum={self.corr_momentum}, average={self.average!r}')
