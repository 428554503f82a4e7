"""Each special-case config computes exactly the loss of the method it stands for.

The predictions come from the M3I model (``predict``); the losses are written here directly
from each method's definition and compared with what the model's MI heads return.
"""
import pytest
import torch
import torch.nn.functional as F

from m3i_mm.models.selfsup.m3i import patchify
from tests.models.selfsup.m3i_fixtures import build_tiny, photo_batch

SPECIAL = 'special_cases/'


def prepared(config, **overrides):
    model = build_tiny(config, **overrides)
    data = model.data_preprocessor(photo_batch(), True)
    return model, data['inputs'], data['batch']


def fixed_mask(n, grid=(4, 4), seed=1):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, *grid, generator=gen) < 0.5
    mask[:, 0, 0] = True  # at least one masked patch per sample
    return mask


def test_supervised_is_cross_entropy_over_class_embeddings():
    model, inputs, batch = prepared(SPECIAL + 'm3i-supervised_internimage-t_16xb128-100k_in1k.py')
    assert model.use_labels and not (model.use_same or model.use_cross or model.use_captions)
    pred = model.predict(inputs, batch)
    losses = model.loss_from_predictions(pred, batch)
    assert {k for k in losses if k.startswith('loss')} == {'loss_label_a'}
    head = model.label_head
    feats = pred['sem'][0][2]
    logits = head.get_logit_scale() * F.normalize(head.image_proj(feats), dim=-1) @ \
        F.normalize(head.class_embed, dim=-1).t()
    labelled = batch.labels >= 0
    expected = F.cross_entropy(logits[labelled], batch.labels[labelled])
    torch.testing.assert_close(losses['loss_label_a'], expected)


def test_clip_is_symmetric_infonce_over_captions():
    model, inputs, batch = prepared(SPECIAL + 'm3i-clip_internimage-t_16xb128-100k_cc12m.py')
    assert model.use_captions and not (model.use_same or model.use_cross or model.use_labels)
    pred = model.predict(inputs, batch)
    losses = model.loss_from_predictions(pred, batch)
    assert {k for k in losses if k.startswith('loss')} == {'loss_caption_a'}
    head = model.caption_head
    has = torch.tensor([c is not None for c in batch.captions])
    image = F.normalize(head.image_proj(pred['sem'][0][2][has]), dim=-1)
    text = F.normalize(head.text_proj(model.text_encoder(
        [c for c in batch.captions if c is not None])), dim=-1)
    logits = head.get_logit_scale() * image @ text.t()
    target = torch.arange(len(logits))
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    torch.testing.assert_close(losses['loss_caption_a'], expected)


def test_siameseim_is_unigrad_on_the_other_view():
    model, inputs, batch = prepared(
        SPECIAL + 'm3i-siameseim_internimage-t_16xb128-100k_in1k.py')
    assert model.use_cross and not (model.use_same or model.use_labels or model.use_captions)
    mask = fixed_mask(inputs.shape[0])
    model.target_encoder.update_parameters(torch.nn.Sequential(model.backbone, model.neck))
    pred = model.predict(inputs, batch, mask)
    losses = model.loss_from_predictions(pred, batch)
    assert {k for k in losses if k.startswith('loss')} == {'loss_dense_cross'}
    p, target, _ = pred['cross']
    # the target: EMA encoder tokens of view 2 of the same image, normalised per token
    with torch.no_grad():
        ema = model.target_encoder.module
        tokens = ema[1](ema[0](inputs[:, 1])).flatten(2).transpose(1, 2)
    torch.testing.assert_close(target, tokens)
    t = F.layer_norm(tokens, tokens.shape[-1:])
    dim = t.shape[-1]
    flat_p, flat_t = p.reshape(-1, dim), t.reshape(-1, dim)
    corr = flat_t.t() @ flat_t / flat_t.shape[0]
    expected = ((flat_p - flat_t).square().sum(-1).mean()
                + 0.02 * (flat_p @ corr * flat_p).sum(-1).mean()) / dim
    torch.testing.assert_close(losses['loss_dense_cross'], expected)


def test_mae_like_is_masked_mse_on_normalised_pixels():
    model, inputs, batch = prepared(SPECIAL + 'm3i-mae_internimage-t_16xb128-100k_in1k.py')
    assert model.use_same and model.same_view_target == 'pixel'
    assert not hasattr(model, 'target_encoder')  # no EMA encoder is needed
    mask = fixed_mask(inputs.shape[0])
    pred = model.predict(inputs, batch, mask)
    losses = model.loss_from_predictions(pred, batch)
    assert {k for k in losses if k.startswith('loss')} == {'loss_dense_same'}
    p = pred['same'][0]
    pixels = inputs[:, 0]
    # patches of the same view, row-major, each normalised (MAE's norm_pix_loss)
    n, c, h, w = pixels.shape
    patches = torch.stack([
        pixels[:, :, r * 16:(r + 1) * 16, s * 16:(s + 1) * 16].permute(0, 2, 3, 1).reshape(n, -1)
        for r in range(h // 16) for s in range(w // 16)], dim=1)
    torch.testing.assert_close(patchify(pixels), patches)
    # MAE's norm_pix_loss: unbiased variance per patch, eps 1e-6
    mean, var = patches.mean(-1, keepdim=True), patches.var(-1, unbiased=True, keepdim=True)
    target = (patches - mean) / (var + 1e-6).sqrt()
    torch.testing.assert_close(pred['same'][1], target)
    per_patch = (p - target).square().mean(-1)
    expected = per_patch[mask.flatten(1)].mean()
    torch.testing.assert_close(losses['loss_dense_same'], expected)


@pytest.mark.parametrize('config', ['m3i-mae_internimage-t_16xb128-100k_in1k.py',
                                    'm3i-siameseim_internimage-t_16xb128-100k_in1k.py'])
def test_masked_pixels_never_reach_the_encoder_tokens(config):
    model, inputs, batch = prepared(SPECIAL + config)
    model.eval()
    mask = fixed_mask(inputs.shape[0])
    pixels = mask.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, None]
    view1 = inputs[:, 0]
    changed = torch.where(pixels, torch.randn_like(view1), view1)
    with torch.no_grad():
        tokens, _ = model.encode(view1, mask)
        tokens_changed, _ = model.encode(changed, mask)
        plain, _ = model.encode(view1)
    torch.testing.assert_close(tokens_changed, tokens, rtol=0, atol=0)
    assert not torch.allclose(plain, tokens)  # the mask does hide something


def test_mae_masks_patches_uniformly_at_random_and_siameseim_in_blocks():
    """MAE draws a uniformly random set of patches; SiameseIM (BEiT) draws blocks."""
    grid, num = (6, 6), 4000
    stats = {}
    for name in ('mae', 'siameseim'):
        model = build_tiny(SPECIAL + f'm3i-{name}_internimage-t_16xb128-100k_in1k.py',
                           mask_cfg=None)
        if name == 'mae':  # the config's generator settings, not the tiny fixture's
            from mmengine.config import Config
            from tests.models.selfsup.m3i_fixtures import CONFIGS
            cfg = Config.fromfile(f'{CONFIGS}/{SPECIAL}m3i-mae_internimage-t_16xb128-100k_in1k.py')
            model.mask_cfg = dict(cfg.model.mask_cfg)
        torch.manual_seed(0)
        masks = model.make_mask(num, grid, 'cpu')
        k = int(masks[0].sum())
        assert (masks.flatten(1).sum(1) == k).all()
        # chance that the right-hand neighbour of a masked patch is masked
        pairs = masks[:, :, :-1] & masks[:, :, 1:]
        stats[name] = (float(pairs.sum() / masks[:, :, :-1].sum()), k)
        if name == 'mae':
            assert k == round(0.75 * 36)
            freq = masks.float().mean(0)
            assert (freq - 0.75).abs().max() < 0.04
    uniform = (stats['mae'][1] - 1) / 35  # sampling without replacement
    assert abs(stats['mae'][0] - uniform) < 0.01, stats
    assert stats['siameseim'][0] > (stats['siameseim'][1] - 1) / 35 + 0.05, stats


def test_siameseim_keeps_its_stem_at_the_initial_weights():
    model, inputs, batch = prepared(SPECIAL + 'm3i-siameseim_internimage-t_16xb128-100k_in1k.py')
    assert model.freeze_stem
    stem = model.backbone.patch_embed
    assert not any(p.requires_grad for p in stem.parameters())
    before = {k: v.clone() for k, v in stem.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    losses = model.loss(inputs, batch, fixed_mask(inputs.shape[0]))
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    optimizer.step()
    assert all(torch.equal(v, before[k]) for k, v in stem.state_dict().items())
    assert all(p.grad is not None for p in model.backbone.levels[0].parameters())
    from mmpretrain.registry import MODELS
    from tests.models.selfsup.m3i_fixtures import CONFIGS, shrink
    from mmengine.config import Config
    cfg = shrink(Config.fromfile(f'{CONFIGS}/{SPECIAL}m3i-siameseim_internimage-t_16xb128-'
                                 '100k_in1k.py').to_dict()['model'])
    cfg.update(backbone=dict(type='mmpretrain.ResNet', depth=18, out_indices=(2, 3)),
               mask_ratio=0.0)
    with pytest.raises(ValueError, match='freeze_stem needs a backbone'):
        MODELS.build(cfg)


def test_full_m3i_mixes_two_images_and_uses_every_term():
    model, inputs, batch = prepared('m3i_internimage-t_16xb128-100k_in1k-cc12m.py')
    mask = fixed_mask(inputs.shape[0])
    model.target_encoder.update_parameters(torch.nn.Sequential(model.backbone, model.neck))
    pred = model.predict(inputs, batch, mask)
    n = inputs.shape[0]
    assert torch.equal(pred['index_b'], torch.roll(torch.arange(n), -1))
    # cross-view targets are view 2 of image b; same-view targets view 1 of image a
    with torch.no_grad():
        ema = model.target_encoder.module
        tokens_v2 = ema[1](ema[0](inputs[pred['index_b'], 1])).flatten(2).transpose(1, 2)
        tokens_v1 = ema[1](ema[0](inputs[:, 0])).flatten(2).transpose(1, 2)
    torch.testing.assert_close(pred['cross'][1], tokens_v2)
    torch.testing.assert_close(pred['same'][1], tokens_v1)
    assert torch.equal(pred['same'][2], mask.flatten(1))  # a is scored where b covers it
    losses = model.loss_from_predictions(pred, batch)
    assert {k for k in losses if k.startswith('loss')} == {
        'loss_dense_same', 'loss_dense_cross', 'loss_label_a', 'loss_label_b',
        'loss_caption_a', 'loss_caption_b'}
    # image b's label loss is the cross-entropy of b's semantic output against b's labels
    head = model.label_head
    feats_b = pred['sem'][1][2]
    labels_b = batch.labels[pred['index_b']]
    logits = head.get_logit_scale() * F.normalize(head.image_proj(feats_b), dim=-1) @ \
        F.normalize(head.class_embed, dim=-1).t()
    ok = labels_b >= 0
    torch.testing.assert_close(losses['loss_label_b'], F.cross_entropy(logits[ok], labels_b[ok]))


def test_the_canvas_shows_image_b_where_the_mask_is_set():
    model, inputs, batch = prepared('m3i_internimage-t_16xb128-100k_in1k-cc12m.py')
    mask = fixed_mask(inputs.shape[0])
    seen = {}
    original = model.encode

    def spy(images, mask_arg=None):
        seen['canvas'] = images.clone()
        return original(images, mask_arg)

    model.encode = spy
    model.predict(inputs, batch, mask)
    canvas, b = seen['canvas'], torch.roll(torch.arange(inputs.shape[0]), -1)
    pixel = mask.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, None].expand_as(canvas)
    assert torch.equal(canvas[pixel], inputs[b, 0][pixel])
    assert torch.equal(canvas[~pixel], inputs[:, 0][~pixel])


def test_samples_without_labels_or_captions_add_nothing():
    model, inputs, batch = prepared('m3i_internimage-t_16xb128-100k_in1k-cc12m.py')
    pred = model.predict(inputs, batch, fixed_mask(inputs.shape[0]))
    feats = pred['sem'][0][2].detach().requires_grad_(True)
    loss = model.label_head.loss(feats, batch.labels)['loss_label']
    loss.backward()
    unlabelled = batch.labels < 0
    assert unlabelled.any() and (feats.grad[unlabelled] == 0).all()
    assert (feats.grad[~unlabelled].abs().sum(-1) > 0).all()


def test_a_batch_of_unlabelled_uncaptioned_images_trains():
    model = build_tiny('m3i_internimage-t_16xb128-100k_in1k-cc12m.py')
    from mmengine.logging import MessageHub
    MessageHub.get_current_instance().update_info('max_iters', 10)
    items = [('camera', -1, None), ('coins', -1, None), ('moon', -1, None), ('page', -1, None)]
    data = model.data_preprocessor(photo_batch(items=items), True)
    losses = model(**data, mode='loss')
    assert float(losses['num_labelled']) == 0 and float(losses['num_captioned']) == 0
    assert float(losses['loss_label_a']) == 0 and float(losses['loss_caption_a']) == 0
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    total.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_bad_inputs_and_configs_are_named():
    model, inputs, batch = prepared(SPECIAL + 'm3i-mae_internimage-t_16xb128-100k_in1k.py')
    with pytest.raises(ValueError, match='multiples of 32'):
        model.predict(inputs[..., :48, :48], batch)
    with pytest.raises(ValueError, match='mask must be a bool tensor of shape'):
        model.predict(inputs, batch, torch.zeros(inputs.shape[0], 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match='no active loss term'):
        build_tiny(SPECIAL + 'm3i-mae_internimage-t_16xb128-100k_in1k.py',
                   loss_weights=dict(same=0.0, cross=0.0, sem=0.0))
    with pytest.raises(ValueError, match='unknown loss_weights keys'):
        build_tiny(SPECIAL + 'm3i-mae_internimage-t_16xb128-100k_in1k.py',
                   loss_weights=dict(pixel=1.0))
