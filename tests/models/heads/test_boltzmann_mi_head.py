import math

import pytest
import torch
import torch.nn.functional as F

from m3i_mm.models.heads import BoltzmannMIHead
from m3i_mm.registry import MODELS


def clip_infonce_per_row(image, text, scale):
    """Per-pair symmetric InfoNCE written directly: 0.5 * (CE_i2t + CE_t2i) for each row i."""
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    logits = scale * image @ text.t()
    i2t = torch.logsumexp(logits, dim=1) - logits.diagonal()
    t2i = torch.logsumexp(logits, dim=0) - logits.diagonal()
    return 0.5 * (i2t + t2i)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_class_cosine_matches_cross_entropy_over_cosine_logits():
    gen = _gen(0)
    head = BoltzmannMIHead(mode='class', embed_dim=6, num_classes=5, label_smoothing=0.1,
                           loss_name='loss_cls').double()
    pred = torch.randn(7, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 4, -1, 2, 2, -1, 1])
    out = head.loss(pred, labels)

    keep = labels >= 0
    table = head.class_embed.detach().clone().requires_grad_()
    scale = 1 / 0.07
    pred_ref = pred.detach().clone().requires_grad_()
    logits = scale * F.cosine_similarity(pred_ref[keep][:, None], table[None], dim=-1)
    ref = F.cross_entropy(logits, labels[keep], label_smoothing=0.1)
    torch.testing.assert_close(out['loss_cls'], ref)
    out['loss_cls'].backward()
    ref.backward()
    torch.testing.assert_close(pred.grad, pred_ref.grad)
    torch.testing.assert_close(head.class_embed.grad, table.grad)
    assert torch.count_nonzero(pred.grad[~keep]) == 0
    acc = (logits.argmax(-1) == labels[keep]).double().mean() * 100
    torch.testing.assert_close(out['cls_acc'].double(), acc)
    assert out['cls_num_valid'] == 5
    assert head.logit_scale.grad is not None


def test_class_linear_with_projection():
    gen = _gen(1)
    head = BoltzmannMIHead(mode='class', embed_dim=4, in_channels=6, num_classes=3,
                           similarity='linear').double()
    with torch.no_grad():
        head.class_bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    pred = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1, 1, 0])
    valid = torch.tensor([True, True, False, True, True])
    out = head.loss(pred, labels, valid)
    feats = pred @ head.image_proj.weight.t()
    logits = feats @ head.class_embed.t() + head.class_bias
    ref = F.cross_entropy(logits[valid], labels[valid])
    torch.testing.assert_close(out['loss_sem'], ref)
    assert not hasattr(head, 'logit_scale')


def test_unlabelled_rows_contribute_nothing():
    gen = _gen(2)
    head = BoltzmannMIHead(mode='class', embed_dim=4, num_classes=3).double()
    pred = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    labels = torch.tensor([1, -1, 0, -1])
    base = head.loss(pred, labels)['loss_sem']
    changed = pred.clone()
    changed[labels < 0] = torch.randn(2, 4, generator=gen, dtype=torch.float64) * 50
    torch.testing.assert_close(head.loss(changed, labels)['loss_sem'], base)


def test_contrastive_matches_direct_clip_infonce():
    gen = _gen(3)
    head = BoltzmannMIHead(mode='contrastive', embed_dim=5, in_channels=7, text_in_channels=3,
                           loss_name='loss_clip').double()
    image = torch.randn(6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    text = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([True, False, True, True, False, True])
    out = head.loss(image, text, valid)

    w_img = head.image_proj.weight.detach()
    w_txt = head.text_proj.weight.detach()
    image_ref = image.detach().clone().requires_grad_()
    scale = torch.tensor(1 / 0.07, dtype=torch.float64, requires_grad=True)
    rows = clip_infonce_per_row(image_ref[valid] @ w_img.t(), text.detach()[valid] @ w_txt.t(),
                                scale)
    ref = rows.mean()
    torch.testing.assert_close(out['loss_clip'], ref)
    out['loss_clip'].backward()
    ref.backward()
    torch.testing.assert_close(image.grad, image_ref.grad)
    # d/d(log s) = s * d/ds
    torch.testing.assert_close(head.logit_scale.grad, scale.grad * scale.detach())
    assert torch.count_nonzero(image.grad[~valid]) == 0
    assert torch.count_nonzero(text.grad[~valid]) == 0
    assert out['clip_num_valid'] == 4
    torch.testing.assert_close(out['clip_logit_scale'].double(), scale.detach())


def test_contrastive_rows_without_caption_are_ignored():
    gen = _gen(4)
    head = BoltzmannMIHead(mode='contrastive', embed_dim=4).double()
    image = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    text = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    valid = torch.tensor([True, True, False, True, False])
    base = head.loss(image, text, valid)['loss_sem']
    image2, text2 = image.clone(), text.clone()
    image2[~valid] = 9.0
    text2[~valid] = 0.0  # e.g. the zero rows of HFTextEncoder for missing captions
    torch.testing.assert_close(head.loss(image2, text2, valid)['loss_sem'], base)
    # and it equals the loss over the valid rows alone
    torch.testing.assert_close(head.loss(image[valid], text[valid])['loss_sem'], base)


def test_no_caption_gives_connected_zero():
    head = BoltzmannMIHead(mode='contrastive', embed_dim=4)
    image = torch.randn(3, 4, requires_grad=True)
    out = head.loss(image, torch.zeros(3, 4), torch.zeros(3, dtype=torch.bool))
    loss = out['loss_sem']
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.count_nonzero(image.grad) == 0
    assert head.logit_scale.grad is not None and head.logit_scale.grad.item() == 0.0

    cls_head = BoltzmannMIHead(mode='class', embed_dim=4, num_classes=3)
    out = cls_head.loss(image, torch.full((3, ), -1))
    assert out['loss_sem'].item() == 0.0 and 'sem_acc' not in out
    out['loss_sem'].backward()
    assert cls_head.class_embed.grad is not None  # connected: DDP sees the parameter used


def test_temperature_clamp_and_fixed_temperature():
    head = BoltzmannMIHead(mode='contrastive', embed_dim=4)
    assert math.isclose(head.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    with torch.no_grad():
        head.logit_scale.fill_(math.log(500.0))
    assert math.isclose(head.get_logit_scale().item(), 100.0, rel_tol=1e-5)
    out = head.loss(torch.randn(4, 4), torch.randn(4, 4))
    out['loss_sem'].backward()
    assert head.logit_scale.grad.item() == 0.0  # clamped: no gradient pushes it further

    fixed = BoltzmannMIHead(mode='contrastive', embed_dim=4, temperature=0.5,
                            learnable_temperature=False)
    assert 'logit_scale' not in dict(fixed.named_parameters())
    assert math.isclose(fixed.get_logit_scale().item(), 2.0, rel_tol=1e-6)


def test_local_and_global_average_agree_in_one_process():
    gen = _gen(5)
    pred = torch.randn(6, 4, generator=gen)
    text = torch.randn(6, 4, generator=gen)
    valid = torch.tensor([True, True, False, True, True, True])
    losses = []
    for average in ('local', 'global'):
        torch.manual_seed(0)
        head = BoltzmannMIHead(mode='contrastive', embed_dim=4, average=average)
        losses.append(head.loss(pred, text, valid)['loss_sem'])
    torch.testing.assert_close(losses[0], losses[1])


def test_registry_and_bad_inputs():
    head = MODELS.build(dict(type='m3i_mm.BoltzmannMIHead', mode='class', embed_dim=4, num_classes=3))
    assert isinstance(head, BoltzmannMIHead)
    with pytest.raises(ValueError, match='num_classes'):
        BoltzmannMIHead(mode='class', embed_dim=4)
    with pytest.raises(ValueError, match='mode'):
        BoltzmannMIHead(mode='clip')
    with pytest.raises(ValueError, match='label_smoothing'):
        BoltzmannMIHead(mode='contrastive', label_smoothing=0.1)
    with pytest.raises(ValueError, match=r'labels must be in \[0, 3\)'):
        head.loss(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='integer'):
        head.loss(torch.randn(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r'pred must be a floating \(N, 4\)'):
        head.loss(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match='bool'):
        head.loss(torch.randn(2, 4), torch.tensor([0, 1]), torch.ones(2))
    clip = BoltzmannMIHead(mode='contrastive', embed_dim=4)
    with pytest.raises(ValueError, match='2 image embeddings but 3 caption'):
        clip.loss(torch.randn(2, 4), torch.randn(3, 4))


def test_autocast_does_not_reduce_precision():
    gen = _gen(6)
    image = torch.randn(8, 16, generator=gen)
    text = torch.randn(8, 16, generator=gen)
    head = BoltzmannMIHead(mode='contrastive', embed_dim=16)
    with torch.no_grad():
        head.logit_scale.fill_(math.log(100.0))
    ref = clip_infonce_per_row(image.double(), text.double(), 100.0).mean()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = head.loss(image, text)['loss_sem']
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
