import pytest
import torch

from m3i_mm.models.heads import GaussianMIHead
from m3i_mm.registry import MODELS

EPS = 1e-5


def layer_norm_no_affine(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean)**2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS)


def test_reference_layer_norm_matches_torch():
    # Guards the independent reference below against a silent formula slip.
    x = torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(layer_norm_no_affine(x), torch.nn.functional.layer_norm(
        x, (7, ), eps=EPS))


def reference_loss(pred, target, weight, lam, normalize_target=True, corr=None):
    """Direct float64 masked MSE + UniGrad: (mean ||p-t||^2 + lam * mean p^T F p) / D."""
    dim = pred.shape[-1]
    p = pred.reshape(-1, dim)
    t = target.detach().reshape(-1, dim)
    if normalize_target:
        t = layer_norm_no_affine(t)
    w = weight.reshape(-1)
    total = w.sum()
    mse = sum(w[i] * ((p[i] - t[i])**2).sum() for i in range(p.shape[0])) / total
    if corr is None:
        corr = sum(w[i] * torch.outer(t[i], t[i]) for i in range(t.shape[0])) / total
    decorr = sum(w[i] * (p[i] @ corr @ p[i]) for i in range(p.shape[0])) / total
    return (mse + lam * decorr) / dim, corr


def _data(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randn(shape, generator=gen, dtype=torch.float64)
    target = 2 * torch.randn(shape, generator=gen, dtype=torch.float64) + 0.5
    weight = (torch.rand(shape[:-1], generator=gen) > 0.4).double()
    return pred, target, weight


@pytest.mark.parametrize('shape', [(3, 5, 8), (6, 8)])
@pytest.mark.parametrize('normalize_target', [True, False])
def test_mse_matches_direct_masked_mean(shape, normalize_target):
    pred, target, weight = _data(shape)
    head = GaussianMIHead(loss_name='loss_pixel', normalize_target=normalize_target)
    p1 = pred.clone().requires_grad_()
    out = head.loss(p1, target, weight)
    p2 = pred.clone().requires_grad_()
    ref, _ = reference_loss(p2, target, weight, 0.0, normalize_target)
    torch.testing.assert_close(out['loss_pixel'], ref)
    out['loss_pixel'].backward()
    ref.backward()
    torch.testing.assert_close(p1.grad, p2.grad)
    assert set(out) == {'loss_pixel', 'pixel_mse'}


def test_unigrad_matches_direct_implementation():
    pred, target, weight = _data((2, 7, 6), seed=1)
    head = GaussianMIHead(loss_name='loss_dense_cross', unigrad_lambda=0.3, loss_weight=2.0)
    p1 = pred.clone().requires_grad_()
    out = head.loss(p1, target, weight)
    p2 = pred.clone().requires_grad_()
    ref, corr = reference_loss(p2, target, weight, 0.3)
    torch.testing.assert_close(out['loss_dense_cross'], 2.0 * ref)
    out['loss_dense_cross'].backward()
    (2.0 * ref).backward()
    torch.testing.assert_close(p1.grad, p2.grad)
    torch.testing.assert_close(head.compute_correlation(target, weight)[0], corr)
    assert set(out) == {'loss_dense_cross', 'dense_cross_mse', 'dense_cross_decorr'}
    assert out['dense_cross_decorr'].grad_fn is None


def test_uncounted_positions_contribute_nothing():
    pred, target, weight = _data((4, 5, 6), seed=2)
    weight[0, :] = 0  # a whole sample without this target
    head = GaussianMIHead(unigrad_lambda=0.5)
    p1 = pred.clone().requires_grad_()
    loss1 = head.loss(p1, target, weight)['loss_dense']
    loss1.backward()
    changed_pred, changed_target = pred.clone(), target.clone()
    off = weight == 0
    changed_pred[off] = 1e3 * torch.randn_like(changed_pred[off])
    changed_target[off] = -7.0
    loss2 = head.loss(changed_pred, changed_target, weight)['loss_dense']
    torch.testing.assert_close(loss1, loss2)
    assert torch.count_nonzero(p1.grad[off]) == 0
    assert torch.count_nonzero(p1.grad[~off]) > 0


def test_empty_mask_gives_connected_zero():
    pred, target, _ = _data((2, 3, 4), seed=3)
    pred.requires_grad_()
    head = GaussianMIHead(unigrad_lambda=0.02)
    out = head.loss(pred, target, torch.zeros(2, 3))
    assert out['loss_dense'].item() == 0.0
    assert out['loss_dense'].grad_fn is not None
    out['loss_dense'].backward()
    assert torch.count_nonzero(pred.grad) == 0


def test_running_correlation_momentum():
    head = GaussianMIHead(unigrad_lambda=1.0, corr_momentum=0.9, feat_dim=5).double()
    batches = [_data((3, 4, 5), seed=s) for s in (4, 5, 6)]
    corrs = [reference_loss(p, t, w, 1.0)[1] for p, t, w in batches]
    running = corrs[0]  # initialised with the first batch (UniGrad)
    for (pred, target, weight), corr in zip(batches, corrs):
        if corr is not corrs[0]:
            running = 0.9 * running + 0.1 * corr
        out = head.loss(pred, target, weight)
        ref, _ = reference_loss(pred, target, weight, 1.0, corr=running)
        torch.testing.assert_close(out['loss_dense'], ref)
    torch.testing.assert_close(head.running_corr, running)
    assert 'running_corr' in head.state_dict()
    head.eval()  # evaluation must not move the running statistics
    head.loss(*_data((3, 4, 5), seed=7))
    torch.testing.assert_close(head.running_corr, running)


def test_target_gradient_and_normalize_pred():
    pred, target, weight = _data((5, 4), seed=8)
    target.requires_grad_()
    head = GaussianMIHead()
    head.loss(pred.requires_grad_(), target, weight)['loss_dense'].backward()
    assert target.grad is None  # stop-gradient target

    head = GaussianMIHead(detach_target=False, normalize_target=False, normalize_pred=True)
    t = target.detach().clone().requires_grad_()
    out = head.loss(pred, t, weight)['loss_dense']
    ref, _ = reference_loss(layer_norm_no_affine(pred), t, weight, 0.0, False)
    torch.testing.assert_close(out, ref)
    out.backward()
    assert t.grad is not None and torch.count_nonzero(t.grad) > 0


def test_low_precision_inputs_are_computed_in_float32():
    pred, target, weight = _data((4, 3, 8), seed=9)
    head = GaussianMIHead(unigrad_lambda=0.1)
    out = head.loss(pred.bfloat16(), target.bfloat16(), weight)['loss_dense']
    assert out.dtype == torch.float32
    ref, _ = reference_loss(pred.bfloat16().double(), target.bfloat16().double(), weight, 0.1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


def test_registry_and_bad_inputs():
    head = MODELS.build(dict(type='m3i_mm.GaussianMIHead', loss_name='loss_dense_same'))
    assert isinstance(head, GaussianMIHead)
    with pytest.raises(ValueError, match='containing "loss"'):
        GaussianMIHead(loss_name='dense')
    with pytest.raises(ValueError, match='feat_dim'):
        GaussianMIHead(unigrad_lambda=0.1, corr_momentum=0.9)
    with pytest.raises(ValueError, match='average'):
        GaussianMIHead(average='batch')
    with pytest.raises(ValueError, match='target shape'):
        head.loss(torch.randn(2, 3, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match='weight must be a tensor of shape'):
        head.loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match='non-negative'):
        head.loss(torch.randn(2, 4), torch.randn(2, 4), -torch.ones(2))
    with pytest.raises(ValueError, match=r'\(N, D\) or \(N, L, D\)'):
        head.loss(torch.randn(4), torch.randn(4))


def test_bool_mask_and_autocast():
    pred, target, weight = _data((3, 4, 8), seed=10)
    head = GaussianMIHead(unigrad_lambda=0.02)
    ref, _ = reference_loss(pred, target, weight, 0.02)
    pred32, target32 = pred.float(), target.float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = head.loss(pred32, target32, weight.bool())['loss_dense']
    # computed in fp32 despite autocast: agrees with the float64 reference to fp32 accuracy
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
