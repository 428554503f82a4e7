"""Boltzmann MI head: softmax over a candidate set (class embeddings or global-batch captions).

With ``q(z_y | z_x) = exp(s(g(z_x), z_y) / tau) / sum_j exp(s(g(z_x), z_j) / tau)`` the MI
lower bound becomes a cross-entropy over the candidates: class embeddings for supervised
pre-training, or the captions of the global batch for CLIP-style InfoNCE (M3I design note,
sections 2 and 3.6).
"""
import math
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from m3i_mm.registry import MODELS
from ..utils.dist_utils import all_gather_variable, all_reduce_sum, get_rank, get_world_size
from .gaussian_mi_head import _check_loss_name, _loss_stem

__all__ = ['BoltzmannMIHead']


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Cast half / bfloat16 tensors to float32; keep float32 / float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@MODELS.register_module()
class BoltzmannMIHead(BaseModule):
    """Cross-entropy over class embeddings, or symmetric InfoNCE over the global batch.

    **Class mode** (``mode='class'``): a learnable class-embedding table ``E`` of shape
    ``(num_classes, embed_dim)``. With ``similarity='cosine'`` the logits are
    ``scale * cos(g(z_x), E_c)`` (``scale = 1 / tau``); with ``'linear'`` they are a plain
    linear classifier ``g(z_x) E^T + b`` (no temperature). The loss is the cross-entropy with
    optional label smoothing over the rows that have a label (label ``-1`` = no label).

    **Contrastive mode** (``mode='contrastive'``): symmetric InfoNCE (CLIP) between image
    embeddings and caption embeddings, both l2-normalised, with a learnable logit scale
    (CLIP: initialised at ``log(1 / 0.07)``, clamped to ``[0, log 100]``). The candidates are
    the captions (resp. images) of the *global* batch: rows with a caption are gathered from
    all ranks (row counts may differ per rank; they are gathered first and the rows padded).
    Each rank computes the loss of *its own* rows against all global candidates; the gather
    is differentiable (its backward sums gradients over ranks and hands each rank the
    gradient of its rows), so remote rows act as negatives *with* gradient to their owner.

    Per-rank loss and its precise meaning (both modes)::

        loss_r = loss_weight * sum_{i valid on rank r} l_i / denominator

    with ``l_i`` the per-row cross-entropy (contrastive: ``(CE_i2t + CE_t2i) / 2`` of row
    ``i`` against the global candidates) and ``denominator`` the number of valid rows on the
    rank (``average='local'``) or ``(number of valid rows on all ranks) / world_size``
    (``average='global'``). With ``'global'`` the mean of ``loss_r`` over ranks equals the
    single-process loss over the concatenated global batch, and after DDP averages gradients
    the update equals that loss's gradient, however unevenly the valid rows are spread over
    ranks (e.g. a rank whose batch came from a caption-less source). [A] default ``'global'``.

    Args:
        mode: ``'class'`` or ``'contrastive'``.
        embed_dim: Size of the semantic space (class embeddings / joint image-text space).
        in_channels: Size of the image-side input ``pred``; if given and different from
            ``embed_dim``, a bias-free Linear ``g`` projects it (CLIP-style projection,
            std ``in_channels ** -0.5``). ``None``: ``pred`` must already be ``embed_dim``.
        num_classes: Number of classes (class mode only).
        similarity: Class mode: ``'cosine'`` (default [A]: same temperature machinery as the
            contrastive mode, a normalised softmax classifier) or ``'linear'``.
        text_in_channels: Contrastive mode: size of the caption embeddings; projected to
            ``embed_dim`` like ``in_channels`` when it differs.
        temperature: Initial temperature ``tau`` (``logit_scale = log(1 / tau)``).
            [A] default 0.07 (CLIP) for both modes.
        learnable_temperature: Learn ``logit_scale`` (default) or keep it fixed (a buffer).
        max_logit_scale: Upper clamp of ``1 / tau`` (CLIP: 100), applied in the forward pass.
        label_smoothing: Class mode only. [A] default 0.
        average: ``'global'`` or ``'local'`` normalisation, see above.
        loss_name: Key of the loss; must contain ``'loss'`` (e.g. ``'loss_sem'``,
            ``'loss_sem_a'``, ``'loss_clip'``).
        loss_weight: Factor applied to the loss (M3I's ``w_sem``).
        init_cfg: mmengine init config.

    Note:
        In contrastive mode, and in class mode with ``average='global'``, the loss runs
        collectives: call it on every rank at every iteration, also when a rank has no valid
        row (it then returns a zero connected to ``pred`` and to the head's parameters).
        For M3I's mixed inputs call it separately for image A's and image B's semantic
        embeddings: B is a permutation of the batch, so one call over both would put every
        caption twice among the candidates.
    """

    def __init__(self,
                 mode: str = 'class',
                 embed_dim: int = 768,
                 in_channels: Optional[int] = None,
                 num_classes: Optional[int] = None,
                 similarity: str = 'cosine',
                 text_in_channels: Optional[int] = None,
                 temperature: float = 0.07,
                 learnable_temperature: bool = True,
                 max_logit_scale: float = 100.0,
                 label_smoothing: float = 0.0,
                 average: str = 'global',
                 loss_name: str = 'loss_sem',
                 loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        _check_loss_name(loss_name)
        if mode not in ('class', 'contrastive'):
            raise ValueError(f"mode must be 'class' or 'contrastive', got {mode!r}")
        if not isinstance(embed_dim, int) or embed_dim <= 0:
            raise ValueError(f'embed_dim must be a positive int, got {embed_dim!r}')
        if average not in ('local', 'global'):
            raise ValueError(f"average must be 'local' or 'global', got {average!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f'label_smoothing must be in [0, 1), got {label_smoothing}')
        if temperature <= 0 or max_logit_scale < 1.0:
            raise ValueError('temperature must be > 0 and max_logit_scale >= 1, got '
                             f'{temperature} and {max_logit_scale}')
        self.mode = mode
        self.embed_dim = embed_dim
        self.average = average
        self.loss_name = loss_name
        self.loss_weight = float(loss_weight)
        self.label_smoothing = float(label_smoothing)
        self.max_logit_scale = float(max_logit_scale)
        self.similarity = similarity
        self.num_classes = num_classes
        self.in_channels = embed_dim if in_channels is None else in_channels
        self.text_in_channels = embed_dim if text_in_channels is None else text_in_channels
        self.image_proj = self._projection(in_channels)

        if mode == 'class':
            if not isinstance(num_classes, int) or num_classes <= 1:
                raise ValueError(f'class mode needs num_classes >= 2, got {num_classes!r}')
            if similarity not in ('cosine', 'linear'):
                raise ValueError(f"similarity must be 'cosine' or 'linear', got {similarity!r}")
            if text_in_channels is not None:
                raise ValueError('text_in_channels is only used in contrastive mode')
            self.class_embed = nn.Parameter(torch.empty(num_classes, embed_dim))
            nn.init.normal_(self.class_embed, std=0.02)
            if similarity == 'linear':
                self.class_bias = nn.Parameter(torch.zeros(num_classes))
        else:
            if num_classes is not None:
                raise ValueError('num_classes is only used in class mode')
            if label_smoothing > 0:
                raise ValueError('label_smoothing is only supported in class mode')
            self.text_proj = self._projection(text_in_channels)

        if mode == 'contrastive' or similarity == 'cosine':
            init = torch.tensor(math.log(1.0 / temperature))
            if learnable_temperature:
                self.logit_scale = nn.Parameter(init)
            else:
                self.register_buffer('logit_scale', init)

    def _projection(self, in_channels: Optional[int]) -> nn.Module:
        if in_channels is None or in_channels == self.embed_dim:
            return nn.Identity()
        if not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f'input channels must be a positive int, got {in_channels!r}')
        proj = nn.Linear(in_channels, self.embed_dim, bias=False)
        nn.init.normal_(proj.weight, std=in_channels**-0.5)
        return proj

    def get_logit_scale(self) -> torch.Tensor:
        """The clamped multiplicative scale ``1 / tau`` in ``[1, max_logit_scale]``."""
        return self.logit_scale.clamp(0.0, math.log(self.max_logit_scale)).exp()

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_features(name: str, x: torch.Tensor, channels: int) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point() or \
                x.shape[1] != channels:
            raise ValueError(f'{name} must be a floating (N, {channels}) tensor, got '
                             f'{type(x).__name__} {tuple(getattr(x, "shape", ()))} '
                             f'{getattr(x, "dtype", "")}')

    @staticmethod
    def _check_valid(valid: Optional[torch.Tensor], num: int,
                     device: torch.device) -> torch.Tensor:
        if valid is None:
            return torch.ones(num, dtype=torch.bool, device=device)
        if not isinstance(valid, torch.Tensor) or valid.shape != (num, ):
            raise ValueError(f'valid must be a ({num},) tensor, got '
                             f'{tuple(getattr(valid, "shape", ()))}')
        if valid.dtype != torch.bool:
            raise TypeError(f'valid must be a bool tensor, got {valid.dtype}')
        return valid

    def _denominator(self, local: torch.Tensor, global_count: Optional[torch.Tensor]
                     ) -> torch.Tensor:
        if self.average == 'global':
            if global_count is None:
                global_count = all_reduce_sum(local)
            denominator = global_count / get_world_size()
        else:
            denominator = local
        return denominator.clamp(min=1e-12)

    # ------------------------------------------------------------------ public API
    def class_logits(self, pred: torch.Tensor) -> torch.Tensor:
        """Logits over the class embeddings (class mode), shape (N, num_classes)."""
        if self.mode != 'class':
            raise RuntimeError('class_logits is only available in class mode')
        feats = self.image_proj(pred)
        if self.similarity == 'linear':
            return feats @ self.class_embed.t() + self.class_bias
        return self.get_logit_scale() * (
            F.normalize(feats, dim=-1) @ F.normalize(self.class_embed, dim=-1).t())

    def loss(self, pred: torch.Tensor, target: torch.Tensor,
             valid: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Compute the Boltzmann MI loss.

        Args:
            pred: (N, C_in) image-side semantic embeddings ``z_x`` (before ``g``).
            target: Class mode: (N,) integer labels in ``[0, num_classes)`` or ``-1`` for
                "no label". Contrastive mode: (N, C_text) caption embeddings (rows of samples
                without a caption are ignored; any values, e.g. zeros).
            valid: Optional (N,) bool mask of the rows that take part (contrastive mode: which
                samples have a caption; class mode: combined with ``target >= 0``).

        Returns:
            ``{loss_name: loss}`` plus detached monitoring values (keys without ``'loss'``,
            ``<stem>`` = ``loss_name`` without ``'loss'``): ``'<stem>_num_valid'`` (valid
            rows on this rank), class mode ``'<stem>_acc'`` (top-1 in %, only when this rank
            has valid rows), cosine/contrastive ``'<stem>_logit_scale'`` (``1 / tau``).
        """
        self._check_features('pred', pred, self.in_channels)
        valid = self._check_valid(valid, pred.shape[0], pred.device)
        # Logits of normalised embeddings times a scale up to 100 need more than the ~3
        # significant digits of bf16: compute the head in fp32 (or fp64) even under autocast.
        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred = _at_least_fp32(pred)
            if self.mode == 'class':
                return self._class_loss(pred, target, valid)
            return self._contrastive_loss(pred, target, valid)

    def _class_loss(self, pred: torch.Tensor, labels: torch.Tensor,
                    valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        if not isinstance(labels, torch.Tensor) or labels.shape != pred.shape[:1] or \
                labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f'class mode: target must be an integer ({pred.shape[0]},) label '
                             f'tensor, got {tuple(getattr(labels, "shape", ()))} '
                             f'{getattr(labels, "dtype", type(labels).__name__)}')
        if labels.numel() and (labels.min() < -1 or labels.max() >= self.num_classes):
            raise ValueError(f'labels must be in [0, {self.num_classes}) or -1 (no label), got '
                             f'range [{int(labels.min())}, {int(labels.max())}]')
        keep = valid & (labels >= 0)
        kept_labels = labels[keep].long()
        logits = self.class_logits(pred[keep])
        ce_sum = F.cross_entropy(logits, kept_labels, reduction='sum',
                                 label_smoothing=self.label_smoothing)
        local = keep.sum().to(ce_sum.dtype)
        loss = ce_sum / self._denominator(local, None)
        stem = _loss_stem(self.loss_name)
        outputs = {self.loss_name: self.loss_weight * loss, f'{stem}_num_valid': local.detach()}
        if kept_labels.numel() > 0:
            acc = (logits.detach().argmax(-1) == kept_labels).float().mean() * 100
            outputs[f'{stem}_acc'] = acc
        if self.similarity == 'cosine':
            outputs[f'{stem}_logit_scale'] = self.get_logit_scale().detach()
        return outputs

    def _contrastive_loss(self, pred: torch.Tensor, text: torch.Tensor,
                          valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        self._check_features('target (caption embeddings)', text, self.text_in_channels)
        if text.shape[0] != pred.shape[0]:
            raise ValueError(f'contrastive mode: {pred.shape[0]} image embeddings but '
                             f'{text.shape[0]} caption embeddings')
        image = F.normalize(self.image_proj(pred[valid]), dim=-1)
        caption = F.normalize(self.text_proj(_at_least_fp32(text[valid])).to(image.dtype), dim=-1)
        # One gather for both modalities: rows are (image | caption) of the valid samples.
        gathered, counts = all_gather_variable(torch.cat([image, caption], dim=-1))
        all_image, all_caption = gathered.split(self.embed_dim, dim=-1)
        offset = sum(counts[:get_rank()])
        local_rows = image.shape[0]
        targets = torch.arange(offset, offset + local_rows, device=pred.device)

        scale = self.get_logit_scale()
        logits_i2t = scale * image @ all_caption.t()
        logits_t2i = scale * caption @ all_image.t()
        ce_sum = 0.5 * (F.cross_entropy(logits_i2t, targets, reduction='sum') +
                        F.cross_entropy(logits_t2i, targets, reduction='sum'))
        local = torch.tensor(float(local_rows), device=pred.device, dtype=ce_sum.dtype)
        global_count = torch.tensor(float(sum(counts)), device=pred.device, dtype=ce_sum.dtype)
        loss = ce_sum / self._denominator(local, global_count)
        stem = _loss_stem(self.loss_name)
        return {
            self.loss_name: self.loss_weight * loss,
            f'{stem}_num_valid': local,
            f'{stem}_logit_scale': scale.detach()
        }

    def extra_repr(self) -> str:
        extra = f'mode={self.mode!r}, embed_dim={self.embed_dim}, average={self.average!r}'
        if self.mode == 'class':
            extra += f', num_classes={self.num_classes}, similarity={self.similarity!r}'
        return extra + f', loss_name={self.loss_name!r}'
