"""The Triton DCNv3 kernels against the float64 reference, forward and backward.

Without a GPU they run in Triton's interpreter (``TRITON_INTERPRET=1``, set by
``tests/conftest.py``) on CPU tensors; on a CUDA machine the same tests run compiled.
"""
import os

import pytest
import torch

from m3i_mm.ops.dcnv3 import dcnv3
from m3i_mm.ops.dcnv3.function import triton_available
from tests.ops.dcnv3.reference import dcnv3_naive_torch
from tests.ops.dcnv3.test_dcnv3_op import make_inputs

pytestmark = pytest.mark.skipif(
    not triton_available() or not (torch.cuda.is_available()
                                   or os.environ.get('TRITON_INTERPRET') == '1'),
    reason='needs triton with a CUDA device or TRITON_INTERPRET=1')
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'

# (n, h, w, group, gc, kernel, stride, pad, dilation, offset_scale, remove_center, offset_std)
CASES = {
    'internimage-16': (1, 5, 7, 2, 16, 3, 1, 1, 1, 1.0, False, 2.0),
    'h-width-32-batch1': (1, 6, 5, 1, 32, 3, 1, 1, 1, 1.0, False, 2.0),
    'non-pow2-24': (1, 5, 6, 2, 24, 3, 1, 1, 1, 1.0, False, 2.0),
    'tiny-3-channels': (2, 6, 5, 2, 3, 3, 1, 1, 1, 1.0, False, 2.0),
    'far-out-of-bounds': (1, 4, 5, 2, 16, 3, 1, 2, 1, 1.0, False, 25.0),
    'remove-center-scale2': (1, 5, 8, 3, 8, 3, 2, 0, 1, 2.0, True, 1.0),
    'k5-s2-d2': (1, 9, 6, 2, 8, 5, 2, 2, 2, 0.5, False, 2.0),
    'non-square-kernel': (1, 6, 6, 2, 8, (3, 5), 1, 1, 1, 1.0, False, 1.0),
}


def _args(case):
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    kernel = (k, k) if isinstance(k, int) else k
    return dict(kernel_size=kernel, stride=s, padding=p, dilation=d, group=g,
                group_channels=gc, offset_scale=scale, remove_center=rc)


def _reference(x, off, m, case):
    a = _args(case)
    s, p, d = a['stride'], a['padding'], a['dilation']
    return dcnv3_naive_torch(x, off, m, a['kernel_size'], (s, s), (p, p), (d, d), a['group'],
                             a['group_channels'], a['offset_scale'], a['remove_center'])


def _forward_backward(fn, inputs, grad, need=(True, True, True)):
    leaves = [t.detach().clone().requires_grad_(r) for t, r in zip(inputs, need)]
    out = fn(*leaves)
    out.backward(grad)
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize('name', list(CASES))
def test_float64_forward_and_gradients_match_the_reference(name):
    case = CASES[name]
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    inputs = make_inputs(n, h, w, g, gc, k, s, p, d, rc, std, seed=3)
    ref_leaves = [t.clone().requires_grad_(True) for t in inputs]
    ref_out = _reference(*ref_leaves, case)
    grad = torch.randn_like(ref_out)
    ref_out.backward(grad)
    out, grads = _forward_backward(
        lambda *t: dcnv3(*t, **_args(case), backend='triton'),
        [t.to(DEVICE) for t in inputs], grad.to(DEVICE))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.cpu(), ref_out.detach(), rtol=1e-10, atol=1e-10)
    for name_, got, want in zip(('input', 'offset', 'mask'), grads, ref_leaves):
        torch.testing.assert_close(got.cpu(), want.grad, rtol=1e-9, atol=1e-9,
                                   msg=lambda m: f'grad of {name_}: {m}')


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 3e-3),
                                       (torch.bfloat16, 2e-2)])
def test_low_precision_error_is_bounded(dtype, tol):
    """fp32/fp16/bf16 inputs: relative error against float64 on the same (rounded) inputs.

    Tolerances: fp32 1e-5; fp16 3e-3 and bf16 2e-2, a few units of the output format's
    rounding (2**-11, 2**-8), since the kernels accumulate in float32 and round once.
    """
    case = CASES['internimage-16']
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    inputs = [t.to(dtype) for t in make_inputs(n, h, w, g, gc, k, s, p, d, rc, 1.0, seed=5)]
    ref_leaves = [t.double().requires_grad_(True) for t in inputs]
    ref = _reference(*ref_leaves, case)
    grad = torch.randn_like(ref).to(dtype)
    ref.backward(grad.double())
    out, grads = _forward_backward(lambda *t: dcnv3(*t, **_args(case), backend='triton'),
                                   [t.to(DEVICE) for t in inputs], grad.to(DEVICE))
    assert out.dtype == dtype and all(gr.dtype == dtype for gr in grads)
    pairs = [('output', out, ref.detach())] + [
        (f'grad {nm}', gr, lf.grad) for nm, gr, lf in zip(('input', 'offset', 'mask'), grads,
                                                         ref_leaves)]
    for what, got, want in pairs:
        err = (got.cpu().double() - want).norm() / want.norm()
        assert err <= tol, f'{what}: relative error {err:.2e} > {tol:.0e} for {dtype}'


def test_offset_and_mask_gradients_without_input_gradient():
    case = CASES['internimage-16']
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    inputs = [t.to(DEVICE) for t in make_inputs(n, h, w, g, gc, k, s, p, d, rc, std, seed=7)]
    grad = torch.randn(n, h, w, g * gc, dtype=torch.float64, device=DEVICE)
    fn = lambda *t: dcnv3(*t, **_args(case), backend='triton')  # noqa: E731
    _, full = _forward_backward(fn, inputs, grad)
    _, part = _forward_backward(fn, inputs, grad, need=(False, True, True))
    assert part[0] is None
    torch.testing.assert_close(part[1], full[1])
    torch.testing.assert_close(part[2], full[2])


def test_misaligned_offsets_and_64_bit_indexing_give_the_same_result(monkeypatch):
    """The paths the launcher picks for unusual tensors: offsets whose (dx, dy) pairs are
    not word-aligned (read one by one) and 64-bit index arithmetic (used from 2**31
    elements; forced here on a small problem)."""
    from m3i_mm.ops.dcnv3 import triton_kernels
    case = CASES['internimage-16']
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    x, off, m = make_inputs(n, h, w, g, gc, k, s, p, d, rc, std, dtype=torch.float32,
                            device=DEVICE, seed=11)
    grad = torch.randn_like(x)
    fn = lambda *t: dcnv3(*t, **_args(case), backend='triton')  # noqa: E731
    want_out, want_grads = _forward_backward(fn, (x, off, m), grad)
    shifted = torch.empty(off.numel() + 1, dtype=off.dtype, device=DEVICE)[1:].view(off.shape)
    shifted.copy_(off)
    assert not triton_kernels.can_pair(shifted)
    got_out, got_grads = _forward_backward(fn, (x, shifted, m), grad)
    torch.testing.assert_close(got_out, want_out, rtol=0, atol=0)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # atomics: order may differ
    monkeypatch.setattr(triton_kernels, 'needs_wide_index', lambda *tensors: True)
    wide_out, wide_grads = _forward_backward(fn, (x, off, m), grad)
    torch.testing.assert_close(wide_out, want_out, rtol=0, atol=0)
    for a, b in zip(wide_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_both_tile_orientations_compute_the_same(monkeypatch):
    """The pixel axis of the channel tiles follows the installed Triton (rows_axis); both
    orientations are exercised here whatever Triton is installed."""
    from m3i_mm.ops.dcnv3 import triton_kernels
    case = CASES['non-pow2-24']
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    inputs = [t.to(DEVICE) for t in make_inputs(n, h, w, g, gc, k, s, p, d, rc, std, seed=13)]
    grad = torch.randn(n, h, w, g * gc, dtype=torch.float64, device=DEVICE)
    fn = lambda *t: dcnv3(*t, **_args(case), backend='triton')  # noqa: E731
    results = []
    for axis in (0, 1):
        monkeypatch.setattr(triton_kernels, 'rows_axis', lambda axis=axis: axis)
        results.append(_forward_backward(fn, inputs, grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_empty_batch_launches_nothing():
    x, off, m = make_inputs(1, 5, 5, 2, 16, dtype=torch.float32, device=DEVICE)
    x, off, m = (t[:0].requires_grad_(True) for t in (x, off, m))
    out = dcnv3(x, off, m, group=2, backend='triton')
    assert out.shape == (0, 5, 5, 32)
    out.sum().backward()
    assert x.grad.shape == x.shape and off.grad.shape == off.shape


def test_launch_table_covers_the_model_widths():
    """Every InternImage group width (16 for T..XL, 32 for H/G) and dtype size has a table
    entry on every GPU generation, a program's tile stays between 512 and 4096 elements and
    a pixel row spans at most two threads; newer GPUs than the table's use the newest
    table."""
    from m3i_mm.ops.dcnv3.triton_kernels import LAUNCH_TABLES, launch_config
    for arch, table in LAUNCH_TABLES.items():
        for width in (16, 32):
            for size in (2, 4):
                assert (width, size) in table
                for backward in (False, True):
                    cfg = launch_config(width, size, backward, arch=arch)
                    assert 512 <= cfg.block_q * cfg.block_c <= 4096, (arch, cfg)
                    assert cfg.block_q % (16 * cfg.num_warps) == 0, (arch, cfg)
    assert launch_config(16, 4, True, arch=100) == launch_config(16, 4, True, arch=90)
    assert launch_config(16, 4, True, arch=86) == launch_config(16, 4, True, arch=80)
    assert launch_config(16, 4, True, arch=75) == launch_config(16, 4, True, arch=80)
    odd = launch_config(24, 4, backward=False)
    assert odd.block_c == 32
    assert launch_config(16, 2, backward=False).vec == 8  # 16-byte loads
    assert launch_config(16, 4, backward=True).vec == 4
    assert launch_config(16, 2, backward=True).vec == 4  # loads match fp32 atomics
    assert launch_config(16, 2, backward=True, input_grad=False).vec == 8
    assert launch_config(3, 4, backward=False).vec == 4 and launch_config(3, 4, False).block_c == 4
