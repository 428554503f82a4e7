"""M3I: all-in-one pre-training by maximising multi-modal mutual information.

Su et al., CVPR 2023. The paper's code is not public; this follows the design of
``m3i_method.md`` (section 3). What the paper states is marked [V]; every choice it does not
state is marked [A] here and where it is set (argument defaults, the configs' headers), and
exposed as an argument.

Per step, for a batch of ``N`` samples with two views each (``v1`` input, ``v2`` target):

1. **Input** [V: two images per input; the first predicts its same view, the second a
   differently augmented view]. ``mix=True``: canvas ``i`` shows ``v1`` of image ``a = i``
   where the block-wise patch mask is False and ``v1`` of image ``b = (i + 1) % N`` where it
   is True. [A] pairing rule: ``b`` is the next sample of the batch (a cyclic shift: every
   image is an ``a`` once and a ``b`` once per step). [A] mixing ratio: ``mask_ratio`` 0.5 of
   the patches show ``b``. [A] block shape: BEiT/SiameseIM block masks at 16-pixel patches
   (blocks of at least 16 patches, aspect 0.3 to 3.3; ``mask_cfg``). ``mix=False``: ``v1``
   of image ``i`` with the masked patches' pixels blanked before the stem and the patches
   replaced by a learnable token after it (no masked pixel reaches a visible token); then
   ``a = b = i``.
2. **Encoder**: backbone + stride-16 fusion -> ``(N, L, D)`` tokens. [A] InternImage-H:
   the official classifier's stage-3/4 fusion (very likely the pre-training interface, not
   stated); other sizes: the same design at their widths.
3. **Decoder** [A]: transformer blocks over the projected encoder tokens (canvas sin-cos
   positions, plus the embedding of the image each token shows) and query tokens: dense queries for image ``a``'s same view (its ``v1``
   patches), dense queries for image ``b``'s other view (``v2`` patches at SiameseIM
   relative positions in ``v1(b)``'s frame), and one semantic query per image; each query
   carries a learned image-a / image-b embedding.
4. **Targets** [A: the paper names the targets (the views, the category, the paired text),
   not their encoders]: an EMA copy of backbone + fusion on the unmasked target views, or
   the view's pixels (MAE-like; ``same_view_target``). [A] EMA schedule: SiameseIM's cosine
   momentum from 0.995 to 1 over the run (``ema_momentum`` 0.005). [A] class table: labels
   through a learnable class-embedding table, cosine logits at a learnable temperature
   (``label_head``: the head's default 0.07, the configs' 0.2). [A] text encoder: captions
   through a ``transformers`` text model (``text_encoder``); the T/B/L/H configs start from
   OpenAI's pretrained CLIP ViT-B/32 text tower and train it, so the caption target is then
   partly distilled from CLIP; ``HFTextEncoder(from_scratch=True)`` trains one from scratch
   instead. The EMA copy computes its targets with its
   dropout and stochastic-depth layers off, whatever the online model's settings and mode
   (SiameseIM builds its momentum encoder without drop path; normalisation layers keep
   their mode).
5. **Loss** [A: form and weights; the paper states only that one MI objective covers all
   targets]: ``w_same * L_dense(a) + w_cross * L_dense(b) + w_sem * (L_sem(a) + L_sem(b))``,
   weights 1, 1, 1 (``loss_weights``), with Gaussian MI heads for dense targets (MSE plus
   SiameseIM's UniGrad term, ``dense_head``) and Boltzmann MI heads for labels
   (cross-entropy) and captions (symmetric InfoNCE over the global batch). [A] the semantic
   term is counted for both images, each at the full weight ``w_sem`` ([V] that both
   predict their category or text). Samples without a label or caption add no semantic
   term. Terms with weight 0 are not built, so the special cases (supervised, CLIP,
   SiameseIM, MAE-like) are configs.
"""
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from mmpretrain.models.utils import CosineEMA

from m3i_mm.models.data_preprocessors import M3IBatch
from m3i_mm.models.layers.block_mask import BlockMaskGenerator, mix_pairs
from m3i_mm.models.layers.pos_embed import (get_2d_sincos_pos_embed,
                                            get_2d_sincos_relative_pos_embed)
from m3i_mm.registry import MODELS

PATCH = 16  # pixels per patch of the stride-16 token grid

_DROPOUT_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                   nn.FeatureAlphaDropout)


def is_stochastic_layer(module: nn.Module) -> bool:
    """Whether ``module`` is random in train mode: a dropout layer of torch, or a
    stochastic-depth layer (any class named ``DropPath``: mmcv's, timm's, ...)."""
    return isinstance(module, _DROPOUT_LAYERS) or any(
        cls.__name__ == 'DropPath' for cls in type(module).__mro__)


@contextmanager
def stochastic_layers_off(module: nn.Module) -> Iterator[None]:
    """Run ``module`` with its dropout and drop-path layers in eval mode (deterministic);
    every other layer (e.g. normalisation) keeps its mode. Restores the modes on exit."""
    switched = [m for m in module.modules() if m.training and is_stochastic_layer(m)]
    for layer in switched:
        layer.training = False
    try:
        yield
    finally:
        for layer in switched:
            layer.training = True


def patchify(images: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, (H/p)*(W/p), p*p*3)``, row-major patches."""
    n, c, h, w = images.shape
    x = images.view(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def norm_pix_target(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch normalised by its own mean and unbiased variance: MAE's
    ``norm_pix_loss`` target (``(p - mean) / sqrt(var + 1e-6)``)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


class DecoderBlock(nn.Module):
    """Pre-norm transformer block whose attention takes a boolean mask (True = attend)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'decoder width {dim} is not divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, length, 3, self.num_heads, -1).permute(
            2, 0, 3, 1, 4)
        mask = attn_mask.unsqueeze(1) if attn_mask is not None else None
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(attn.transpose(1, 2).reshape(n, length, dim))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class M3IDecoder(nn.Module):
    """Transformer over encoder tokens and query tokens [A: pre-norm ViT blocks].

    Encoder tokens attend to each other; a query attends to the encoder tokens showing its
    image and to the queries of its image [A] (on a mixed canvas, image a's queries cannot
    be confused by image b's patches).

    Args:
        in_channels: Width ``D`` of the encoder tokens.
        embed_dim: Decoder width.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width / embed_dim.
    """

    def __init__(self, in_channels: int, embed_dim: int = 512, depth: int = 4,
                 num_heads: int = 8, mlp_ratio: float = 4.0, dense: bool = True,
                 semantic: bool = True) -> None:
        super().__init__()
        if embed_dim % 4:
            raise ValueError(f'decoder embed_dim must be a multiple of 4, got {embed_dim}')
        self.embed_dim = embed_dim
        self.input_proj = nn.Linear(in_channels, embed_dim)
        self.image_embed = nn.Parameter(torch.zeros(2, embed_dim))  # image a, image b
        # Only the parts in use exist, so DDP needs no find_unused_parameters.
        if dense:
            self.query_token = nn.Parameter(torch.zeros(embed_dim))
            self.query_pos_proj = nn.Linear(2 * embed_dim, embed_dim)  # [position | scale]
        if semantic:
            self.semantic_token = nn.Parameter(torch.zeros(embed_dim))
        self.blocks = nn.ModuleList(
            [DecoderBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        for name in ('query_token', 'semantic_token', 'image_embed'):
            if hasattr(self, name):
                nn.init.trunc_normal_(getattr(self, name), std=0.02)

    def dense_queries(self, input_boxes: torch.Tensor, target_boxes: torch.Tensor,
                      input_flips: torch.Tensor, target_flips: torch.Tensor,
                      grid: Tuple[int, int], image: int) -> torch.Tensor:
        """Queries for the target view's patches placed in the input view's frame."""
        pos = get_2d_sincos_relative_pos_embed(input_boxes, target_boxes, input_flips,
                                               target_flips, grid, self.embed_dim,
                                               device=self.image_embed.device)
        pos = self.query_pos_proj(pos.to(self.query_token.dtype))
        return self.query_token + pos + self.image_embed[image]

    def semantic_queries(self, num: int, images: List[int]) -> torch.Tensor:
        return (self.semantic_token + self.image_embed[images]).unsqueeze(0).expand(num, -1, -1)

    def forward(self, tokens: torch.Tensor, grid: Tuple[int, int], queries: torch.Tensor,
                query_image: torch.Tensor,
                token_image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Decode ``queries`` ``(N, Q, d)`` against encoder ``tokens`` ``(N, L, D)``.

        Args:
            tokens: Encoder tokens of the canvas.
            grid: Their ``(h, w)`` grid.
            queries: Query tokens.
            query_image: ``(Q,)`` image of each query (0 = a, 1 = b).
            token_image: ``(N, L)`` image each token shows (mixed canvases); None: all a.
        """
        n, length, _ = tokens.shape
        x = self.input_proj(tokens)
        x = x + get_2d_sincos_pos_embed(grid, self.embed_dim, x.dtype, x.device)
        if token_image is None:
            token_image = torch.zeros(n, length, dtype=torch.long, device=x.device)
        token_image = token_image.long()
        x = x + self.image_embed[token_image].to(x.dtype)
        x = torch.cat([x, queries.to(x.dtype)], dim=1)
        query_image = query_image.to(x.device).long().expand(n, -1)
        key_image = torch.cat([token_image, query_image], dim=1)  # (N, L + Q)
        same_image = query_image.unsqueeze(2) == key_image.unsqueeze(1)  # (N, Q, L + Q)
        from_tokens = torch.zeros(n, length, length + query_image.shape[1], dtype=torch.bool,
                                  device=x.device)
        from_tokens[:, :, :length] = True
        mask = torch.cat([from_tokens, same_image], dim=1)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x[:, length:])


@MODELS.register_module()
class M3I(BaseModel):
    """The M3I pre-trainer (an mmpretrain-style self-supervisor).

    Args:
        backbone: Backbone config (built with ``mask_token=True`` when ``mix=False`` and
            masking is on).
        neck: Stride-16 fusion config producing ``(N, D, H/16, W/16)`` (e.g.
            ``m3i_mm.Stride16Fusion``).
        decoder: :class:`M3IDecoder` arguments (``embed_dim``, ``depth``, ``num_heads``).
        mix: Two-image mixed input (True) or plain masking of one image (False). [A] the
            pairing rule (image b of canvas i is sample ``(i + 1) % N``).
        mask_ratio: Fraction of patches masked (mix: shown from image b). [A] 0.5.
        mask_cfg: Extra :class:`BlockMaskGenerator` arguments (min block size, aspect).
            [A] the block shape: blocks of at least 16 patches, aspect 0.3 to 3.3.
        same_view_target: ``'feature'`` (EMA encoder) or ``'pixel'`` (MAE-like). [A]
            ``'feature'``.
        same_view_positions: ``'masked'`` [A] (patches of a hidden in the input) or ``'all'``.
        loss_weights: ``dict(same=..., cross=..., sem=...)``; 0 removes a term. [A] 1, 1, 1,
            and the semantic weight applies to the term of each image (a and b).
        dense_head: :class:`GaussianMIHead` config shared by both dense terms (``loss_name``
            is set per term). [A] its loss form (MSE; the configs add UniGrad, 0.02).
        label_head: :class:`BoltzmannMIHead` config in class mode (None: labels unused).
            [A] the class table and its temperature.
        caption_head: :class:`BoltzmannMIHead` config in contrastive mode (None: captions
            unused); needs ``text_encoder``. [A] symmetric InfoNCE over the global batch.
        text_encoder: :class:`HFTextEncoder` config. [A] the encoder (the configs: CLIP's
            pretrained text tower, trainable; ``from_scratch=True`` for one from scratch).
        ema_momentum: Starting EMA step ``1 - decay`` of the target encoder (0.005 gives
            the cosine schedule 0.995 -> 1). [A] SiameseIM's schedule.
        freeze_stem: Keep the backbone's stem (``patch_embed``) at its initial weights, as
            SiameseIM keeps its patch embedding (``train_patch_embed=False``).
        data_preprocessor: Defaults to :class:`M3IDataPreprocessor`.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 decoder: Optional[dict] = None,
                 mix: bool = True,
                 mask_ratio: float = 0.5,
                 mask_cfg: Optional[dict] = None,
                 same_view_target: str = 'feature',
                 same_view_positions: str = 'masked',
                 loss_weights: Optional[dict] = None,
                 dense_head: Optional[dict] = None,
                 label_head: Optional[dict] = None,
                 caption_head: Optional[dict] = None,
                 text_encoder: Optional[dict] = None,
                 ema_momentum: float = 0.005,
                 freeze_stem: bool = False,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='m3i_mm.M3IDataPreprocessor')
        elif isinstance(data_preprocessor, dict) and 'type' not in data_preprocessor:
            data_preprocessor = dict(data_preprocessor, type='m3i_mm.M3IDataPreprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        # [A] loss form and weights: a weighted sum, weights 1, 1, 1 unless configured
        weights = {**dict(same=1.0, cross=1.0, sem=1.0), **(loss_weights or {})}
        unknown = set(weights) - {'same', 'cross', 'sem'}
        if unknown:
            raise ValueError(f'unknown loss_weights keys {sorted(unknown)} (use same/cross/sem)')
        if same_view_target not in ('feature', 'pixel'):
            raise ValueError(f"same_view_target must be 'feature' or 'pixel', got "
                             f'{same_view_target!r}')
        if same_view_positions not in ('masked', 'all'):
            raise ValueError(f"same_view_positions must be 'masked' or 'all', got "
                             f'{same_view_positions!r}')
        if not 0 <= mask_ratio < 1:
            raise ValueError(f'mask_ratio must be in [0, 1), got {mask_ratio}')
        if mix and mask_ratio == 0:
            raise ValueError('mix=True needs mask_ratio > 0 (the share of image b)')
        self.mix = mix
        self.mask_ratio = mask_ratio
        self.mask_cfg = dict(mask_cfg or {})
        self.same_view_target = same_view_target
        self.same_view_positions = same_view_positions
        self.weights = weights
        self.use_same = weights['same'] > 0
        self.use_cross = weights['cross'] > 0
        self.use_labels = label_head is not None and weights['sem'] > 0
        self.use_captions = caption_head is not None and weights['sem'] > 0
        if not (self.use_same or self.use_cross or self.use_labels or self.use_captions):
            raise ValueError('M3I has no active loss term: set a dense weight or a semantic head')
        if self.use_captions and text_encoder is None:
            raise ValueError('caption_head needs a text_encoder')

        backbone = dict(backbone)
        if not mix and mask_ratio > 0:
            backbone['mask_token'] = True
        self.backbone = MODELS.build(backbone)
        if freeze_stem:
            stem = getattr(self.backbone, 'patch_embed', None)
            if not isinstance(stem, nn.Module):
                raise ValueError('freeze_stem needs a backbone whose stem is its patch_embed, '
                                 f'got {type(self.backbone).__name__}')
            stem.requires_grad_(False)
        self.freeze_stem = freeze_stem
        self.neck = MODELS.build(neck)
        embed = self.neck.embed_dim
        self.decoder = M3IDecoder(embed, **(decoder or {}),
                                  dense=self.use_same or self.use_cross,
                                  semantic=self.use_labels or self.use_captions)
        dec_dim = self.decoder.embed_dim
        dense_head = dict(type='m3i_mm.GaussianMIHead', **(dense_head or {}))
        if self.use_same:
            self.same_pred = nn.Linear(dec_dim, embed if same_view_target == 'feature' else
                                       PATCH * PATCH * 3)
            # pixel targets arrive normalised per patch (norm_pix_target)
            pixel = dict(normalize_target=False) if same_view_target == 'pixel' else {}
            self.same_head = MODELS.build(dict(dense_head, loss_name='loss_dense_same',
                                               loss_weight=weights['same'], **pixel))
        if self.use_cross:
            self.cross_pred = nn.Linear(dec_dim, embed)
            self.cross_head = MODELS.build(dict(dense_head, loss_name='loss_dense_cross',
                                                loss_weight=weights['cross']))
        if self.use_labels:
            self.label_head = MODELS.build(dict(
                dict(type='m3i_mm.BoltzmannMIHead', mode='class', in_channels=dec_dim),
                **label_head, loss_name='loss_label', loss_weight=weights['sem']))
        if self.use_captions:
            self.text_encoder = MODELS.build(text_encoder)
            self.caption_head = MODELS.build(dict(
                dict(type='m3i_mm.BoltzmannMIHead', mode='contrastive', in_channels=dec_dim,
                     text_in_channels=self.text_encoder.out_channels),
                **caption_head, loss_name='loss_caption', loss_weight=weights['sem']))
        self.uses_ema = (self.use_same and same_view_target == 'feature') or self.use_cross
        if self.uses_ema:
            # [A] EMA schedule: cosine momentum from 1 - ema_momentum to 1 (SiameseIM's)
            self.target_encoder = CosineEMA(nn.Sequential(self.backbone, self.neck),
                                            momentum=ema_momentum, end_momentum=0.0)
        print_log('M3I terms: ' + ', '.join(self.active_terms()), logger='current')

    def active_terms(self) -> List[str]:
        """Human-readable list of the loss terms this model computes."""
        terms = []
        if self.use_same:
            terms.append(f'dense_same ({self.same_view_target}, w={self.weights["same"]})')
        if self.use_cross:
            terms.append(f'dense_cross (EMA features, w={self.weights["cross"]})')
        if self.use_labels:
            terms.append(f'label (class table, w={self.weights["sem"]})')
        if self.use_captions:
            terms.append(f'caption (InfoNCE, w={self.weights["sem"]})')
        inp = f'mixed pairs, ratio {self.mask_ratio}' if self.mix else (
            f'masked, ratio {self.mask_ratio}' if self.mask_ratio else 'plain view')
        return terms + [f'input: {inp}']

    # ---------------------------------------------------------------- entry points
    def forward(self, inputs: torch.Tensor, data_samples: Optional[list] = None,
                batch: Optional[M3IBatch] = None, mode: str = 'tensor'):
        if mode == 'loss':
            if batch is None:
                raise ValueError('M3I loss needs the batch of M3IDataPreprocessor')
            return self.loss(inputs, batch)
        if mode == 'tensor':
            return self.extract_feat(inputs)
        raise RuntimeError(f'M3I supports modes "loss" and "tensor", got {mode!r}')

    def extract_feat(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Backbone features of ``(N, 3, H, W)`` images (view 1 of two-view inputs)."""
        if inputs.dim() == 5:
            inputs = inputs[:, 0]
        return self.backbone(inputs)

    # ---------------------------------------------------------------- pieces
    def make_mask(self, num: int, grid: Tuple[int, int], device) -> Optional[torch.Tensor]:
        if self.mask_ratio == 0:
            return None
        # [A] mixing ratio (mask_ratio) and block shape (BlockMaskGenerator's defaults)
        generator = BlockMaskGenerator(grid, mask_ratio=self.mask_ratio, **self.mask_cfg)
        seed = int(torch.randint(0, 2**31 - 1, (1, )))
        return generator(num, generator=torch.Generator().manual_seed(seed)).to(device)

    def encode(self, images: torch.Tensor,
               mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Tuple[int, int]]:
        feats = self.neck(self.backbone(images, mask=mask) if mask is not None else
                          self.backbone(images))
        n, d, gh, gw = feats.shape
        return feats.flatten(2).transpose(1, 2), (gh, gw)

    @torch.no_grad()
    def target_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, L, D)`` target features of the EMA encoder: deterministic, with its
        dropout and stochastic depth off in train mode too (also under FSDP2, whose units
        keep their submodules)."""
        encoder = self.target_encoder.module
        with stochastic_layers_off(encoder):
            feats = encoder[1](encoder[0](images))
        return feats.flatten(2).transpose(1, 2)

    # ---------------------------------------------------------------- loss
    def loss(self, inputs: torch.Tensor, batch: M3IBatch,
             mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """One training step's losses (updates the EMA target encoder first).

        Args:
            inputs: ``(N, 2, 3, H, W)`` normalised views.
            batch: Labels, captions and view geometry.
            mask: Optional ``(N, H/16, W/16)`` bool patch mask; drawn at random if None.
        """
        if self.uses_ema:
            self.target_encoder.update_parameters(nn.Sequential(self.backbone, self.neck))
        return self.loss_from_predictions(self.predict(inputs, batch, mask), batch)

    def predict(self, inputs: torch.Tensor, batch: M3IBatch,
                mask: Optional[torch.Tensor] = None) -> dict:
        """Decoder predictions and their targets, before any loss.

        Returns:
            A dict with, for each active term, ``same`` / ``cross``: ``(pred, target,
            weight)`` (``(N, L, C)`` tensors and an optional ``(N, L)`` position mask),
            ``sem``: a list of ``(tag, sample index, (N, d) features)`` for images a (and
            b), and ``index_a``, ``index_b``, ``mask``.
        """
        n, views, _, height, width = inputs.shape
        if views != 2 or height % 32 or width % 32:
            raise ValueError('M3I needs (N, 2, 3, H, W) inputs with H, W multiples of 32, got '
                             f'{tuple(inputs.shape)}')
        grid = (height // PATCH, width // PATCH)
        view1, view2 = inputs[:, 0], inputs[:, 1]
        index_a = torch.arange(n, device=inputs.device)
        # [A] pairing rule: image b of canvas i is the next sample, (i + 1) % N
        index_b = torch.roll(index_a, -1) if self.mix else index_a
        if mask is None:
            mask = self.make_mask(n, grid, inputs.device)
        elif tuple(mask.shape) != (n, *grid) or mask.dtype != torch.bool:
            raise ValueError(f'mask must be a bool tensor of shape {(n, *grid)}, got '
                             f'{mask.dtype} {tuple(mask.shape)}')

        if self.mix:
            tokens, grid = self.encode(mix_pairs(view1, mask))  # b = view1[index_b] on the mask
        else:
            tokens, grid = self.encode(view1, mask)

        boxes, flips = batch.crop_boxes, batch.flips
        queries, slices = [], {}

        query_images = []

        def add(name, q, images):
            start = sum(t.shape[1] for t in queries)
            queries.append(q)
            query_images.extend(images)
            slices[name] = slice(start, start + q.shape[1])

        if self.use_same:  # image a's own view 1, at its canvas positions
            add('same', self.decoder.dense_queries(boxes[:, 0], boxes[:, 0], flips[:, 0],
                                                   flips[:, 0], grid, image=0),
                [0] * grid[0] * grid[1])
        if self.use_cross:  # image b's view 2, placed in view 1(b)'s frame = the canvas frame
            add('cross', self.decoder.dense_queries(
                boxes[index_b, 0], boxes[index_b, 1], flips[index_b, 0], flips[index_b, 1],
                grid, image=1), [1 if self.mix else 0] * grid[0] * grid[1])
        if self.use_labels or self.use_captions:
            images = [0, 1] if self.mix else [0]
            add('sem', self.decoder.semantic_queries(n, images), images)
        token_image = mask.flatten(1) if self.mix else None
        out = self.decoder(tokens, grid, torch.cat(queries, dim=1),
                           torch.tensor(query_images), token_image)

        result = dict(index_a=index_a, index_b=index_b, mask=mask)
        if self.use_same:
            pred = self.same_pred(out[:, slices['same']])
            target = norm_pix_target(patchify(view1)) if self.same_view_target == 'pixel' \
                else self.target_tokens(view1)
            weight = mask.flatten(1) if (self.same_view_positions == 'masked'
                                         and mask is not None) else None
            result['same'] = (pred, target, weight)
        if self.use_cross:
            pred = self.cross_pred(out[:, slices['cross']])
            result['cross'] = (pred, self.target_tokens(view2[index_b]), None)
        if 'sem' in slices:
            sem = out[:, slices['sem']]
            result['sem'] = [('a', index_a, sem[:, 0])]
            if self.mix:
                result['sem'].append(('b', index_b, sem[:, 1]))
        return result

    def loss_from_predictions(self, pred: dict, batch: M3IBatch) -> Dict[str, torch.Tensor]:
        """The MI heads' losses of :meth:`predict`'s outputs, named per term."""
        losses: Dict[str, torch.Tensor] = {}
        if 'same' in pred:
            losses.update(self.same_head.loss(*pred['same']))
        if 'cross' in pred:
            losses.update(self.cross_head.loss(*pred['cross']))
        if 'sem' in pred:
            device = pred['sem'][0][2].device
            if self.use_captions:
                text = self.text_encoder(batch.captions, device=device)
                has_caption = torch.tensor([c is not None for c in batch.captions],
                                           device=device)
            # [A] the semantic term of each image, a and b, counts at the full weight
            for tag, index, feats in pred['sem']:
                if self.use_labels:
                    losses.update(_suffixed(self.label_head.loss(feats, batch.labels[index]),
                                            tag))
                if self.use_captions:
                    losses.update(_suffixed(
                        self.caption_head.loss(feats, text[index], has_caption[index]), tag))
        losses['num_labelled'] = (batch.labels >= 0).sum().float()
        losses['num_captioned'] = batch.labels.new_tensor(
            sum(c is not None for c in batch.captions)).float()
        return losses


def _suffixed(losses: Dict[str, torch.Tensor], tag: str) -> Dict[str, torch.Tensor]:
    """``loss_label`` -> ``loss_label_a`` (and the head's logged statistics alike)."""
    return {f'{key}_{tag}': value for key, value in losses.items()}
