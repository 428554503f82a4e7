"""One NaN/Inf rule for every DCNv3 backend (a diverging run must show, on every device).

The rule (also in ``m3i_mm/ops/dcnv3/triton_kernels.py``): for point k of pixel p, group g,
* a NaN offset (dx or dy) or mask makes the output of (p, g) NaN in every channel of g;
* a NaN offset (a NaN location) makes the point's offset gradients (dx and dy) and mask
  gradient NaN, and sends nothing to grad_input (there is no pixel to send it to);
* a NaN mask makes the point's offset gradients NaN (they are scaled by the mask) and the
  input gradient of its in-image corners NaN; its mask gradient is the (finite) sample;
* a +-Inf offset puts the point outside the image: it samples 0 (exactly as if its mask were
  0), its offset and mask gradients are 0; with an infinite mask too the output is NaN;
* a non-finite input value makes every output whose in-image bilinear corners include it
  non-finite, as in the naive float64 reference (0 * inf = NaN included). The corners of a
  location are floor(loc) and floor(loc) + 1 on each axis, so a location in [-1, size) has
  one in the image: exactly at -1 it reads pixel 0 with weight 0; below -1 or at size and
  beyond it reads nothing. The offset has a slope only in the open range (-1, size): its
  gradient is 0 elsewhere, even where a weight-0 corner is NaN.
Every backend that can run here is checked: ``pytorch``, ``triton`` (interpreter on CPU),
``cpu`` (the C++ extension, when it builds) and, on a GPU, ``cuda``.
"""
import math
import os

import numpy as np
import pytest
import torch

from m3i_mm.ops.dcnv3 import dcnv3
from m3i_mm.ops.dcnv3.function import BACKENDS, triton_available
from tests.ops.dcnv3.reference import dcnv3_naive
from tests.ops.dcnv3.test_dcnv3_op import make_inputs

GROUPS, CHANNELS, POINTS = 2, 8, 9


def _runnable(backend: str):
    if backend == 'pytorch':
        return None
    if backend == 'triton':
        if not triton_available():
            return 'needs triton'
        if not torch.cuda.is_available() and os.environ.get('TRITON_INTERPRET') != '1':
            return 'needs a CUDA device or TRITON_INTERPRET=1'
        return None
    if backend == 'cuda':
        return None if torch.cuda.is_available() else 'needs a CUDA device'
    if backend == 'cpu':
        from m3i_mm.ops.dcnv3 import cpu_ext
        return None if cpu_ext.extension_available() else \
            'the CPU extension cannot be built here (no C++ compiler, or switched off)'
    return f'no runner for backend {backend!r} in this test'


def _device(backend: str) -> str:
    if backend == 'cuda' or (backend == 'triton' and torch.cuda.is_available()):
        return 'cuda'
    return 'cpu'


BACKEND_PARAMS = [pytest.param(b, marks=pytest.mark.skipif(_runnable(b) is not None,
                                                           reason=_runnable(b) or ''))
                  for b in BACKENDS]


def _inputs(backend, dtype=torch.float32, seed=0):
    x, off, m = make_inputs(1, 5, 6, GROUPS, CHANNELS, offset_std=1.0, dtype=dtype,
                            device=_device(backend), seed=seed)
    return x, off, m


def _run(backend, x, off, m, need=(True, True, True)):
    leaves = [t.detach().clone().requires_grad_(r) for t, r in zip((x, off, m), need)]
    out = dcnv3(*leaves, group=GROUPS, backend=backend)
    grad = torch.ones_like(out)
    out.backward(grad)
    return out.detach().cpu(), [None if t.grad is None else t.grad.cpu() for t in leaves]


def _off_index(g, k, axis):
    return (g * POINTS + k) * 2 + axis


@pytest.mark.parametrize('backend', BACKEND_PARAMS)
@pytest.mark.parametrize('where', ['dx', 'dy', 'mask'])
def test_nan_offset_or_mask_makes_its_group_nan(backend, where):
    x, off, m = _inputs(backend)
    y, xx, g, k = 2, 3, 1, 4
    if where == 'mask':
        m[0, y, xx, g * POINTS + k] = math.nan
    else:
        off[0, y, xx, _off_index(g, k, 0 if where == 'dx' else 1)] = math.nan
    out, (gx, goff, gm) = _run(backend, x, off, m)
    group = slice(g * CHANNELS, (g + 1) * CHANNELS)
    assert out[0, y, xx, group].isnan().all(), f'{backend}: NaN {where} was hidden'
    finite = torch.ones_like(out, dtype=torch.bool)
    finite[0, y, xx, group] = False
    assert out[finite].isfinite().all(), f'{backend}: NaN leaked beyond its (pixel, group)'
    assert goff[0, y, xx, _off_index(g, k, 0)].isnan(), f'{backend}: grad dx hides the NaN'
    assert goff[0, y, xx, _off_index(g, k, 1)].isnan(), f'{backend}: grad dy hides the NaN'
    others = torch.ones_like(goff, dtype=torch.bool)
    others[0, y, xx, _off_index(g, k, 0):_off_index(g, k, 1) + 1] = False
    assert goff[others].isfinite().all()
    if where == 'mask':  # a real location: the NaN reaches the input gradient
        assert gm[0, y, xx, g * POINTS + k].isfinite(), 'd out / d mask is the sample'
        assert not gx.isfinite().all(), f'{backend}: NaN mask hidden from grad_input'
    else:  # no location: no sample, nothing sent to the input
        assert gm[0, y, xx, g * POINTS + k].isnan(), f'{backend}: grad mask hides the NaN'
        assert gx.isfinite().all(), f'{backend}: a NaN location scattered into grad_input'


@pytest.mark.parametrize('backend', BACKEND_PARAMS)
@pytest.mark.parametrize('value', [math.inf, -math.inf])
def test_infinite_offset_samples_zero(backend, value):
    x, off, m = _inputs(backend)
    y, xx, g, k = 3, 1, 0, 7
    off[0, y, xx, _off_index(g, k, 1)] = value
    out, (gx, goff, gm) = _run(backend, x, off, m)
    assert out.isfinite().all()
    without = m.clone()
    without[0, y, xx, g * POINTS + k] = 0  # the point switched off instead
    off_finite = off.clone()
    off_finite[0, y, xx, _off_index(g, k, 1)] = 0
    ref, (ref_gx, _, _) = _run(backend, x, off_finite, without)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    assert goff[0, y, xx, _off_index(g, k, 0)] == 0 and goff[0, y, xx, _off_index(g, k, 1)] == 0
    assert gm[0, y, xx, g * POINTS + k] == 0
    torch.testing.assert_close(gx, ref_gx, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('backend', BACKEND_PARAMS)
def test_infinite_offset_with_infinite_mask_is_nan(backend):
    x, off, m = _inputs(backend)
    off[0, 1, 1, _off_index(0, 2, 0)] = math.inf
    m[0, 1, 1, 2] = math.inf
    out, _ = _run(backend, x, off, m)
    assert out[0, 1, 1, :CHANNELS].isnan().all()


@pytest.mark.parametrize('backend', BACKEND_PARAMS)
@pytest.mark.parametrize('value', [math.inf, math.nan])
def test_non_finite_input_reaches_the_outputs_that_sample_it(backend, value):
    x, off, m = _inputs(backend, dtype=torch.float64, seed=2)
    off = off.round()  # integer locations: corners with weight 0 must still propagate
    x[0, 2, 3, 5] = value
    out, _ = _run(backend, x, off, m)
    ref = dcnv3_naive(x.cpu().numpy(), off.cpu().numpy(), m.cpu().numpy(), group=GROUPS)
    np.testing.assert_array_equal(out.isfinite().numpy(), np.isfinite(ref))
    assert not np.isfinite(ref).all()  # the case is not vacuous


@pytest.mark.parametrize('scale', [0.0, -1.0, math.nan, math.inf])
def test_offset_scale_must_be_finite_and_positive(scale):
    x, off, m = make_inputs(1, 4, 4, 1, 2)
    with pytest.raises(ValueError, match=r'offset_scale must be a finite number > 0'):
        dcnv3(x, off, m, group=1, offset_scale=scale, backend='pytorch')
    with pytest.raises(TypeError, match='offset_scale must be a number'):
        dcnv3(x, off, m, group=1, offset_scale='1.0', backend='pytorch')


def _border_case(h: int, w: int, seed: int):
    """Inputs whose sampling points sit on every edge case of the image border (at -2,
    in (-2, -1), at -1, in (-1, 0), at size - 1, in (size - 1, size), at size, beyond),
    on whole and half pixels, with a NaN or Inf input value at a border pixel of every
    channel (group 1: the channels are independent maps)."""
    gen = np.random.default_rng(seed)
    points, channels = 9, 4
    x = torch.randn(1, h, w, channels, dtype=torch.float64, generator=torch.Generator()
                    .manual_seed(seed))
    for c, (y, xx) in enumerate([(0, 0), (0, w - 1), (h - 1, 0), (h // 2, 0)]):
        x[0, y, xx, c] = math.nan if c % 2 == 0 else math.inf
    spots = lambda size: np.array([-2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, size - 1.5,
                                   size - 1.0, size - 0.5, size, size + 0.5])
    target_x = gen.choice(spots(w), size=(1, h, w, points))
    target_y = gen.choice(spots(h), size=(1, h, w, points))
    grid = [(i - 1, j - 1) for i in range(3) for j in range(3)]  # x-major, as the op
    centre_y, centre_x = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    off = np.empty((1, h, w, points, 2))
    for k, (gx, gy) in enumerate(grid):
        off[0, :, :, k, 0] = target_x[0, :, :, k] - centre_x - gx
        off[0, :, :, k, 1] = target_y[0, :, :, k] - centre_y - gy
    mask = torch.rand(1, h, w, points, dtype=torch.float64,
                      generator=torch.Generator().manual_seed(seed + 1))
    return x, torch.from_numpy(off.reshape(1, h, w, points * 2)), mask


@pytest.mark.parametrize('seed', range(4))
def test_non_finite_input_at_the_border_follows_one_rule_on_every_backend(seed):
    """The PyTorch backend spread a NaN input where a location below -1 was clamped onto
    pixel 0; the CPU kernel skipped locations exactly at -1. Outputs must match the naive
    reference's finiteness, and gradients must be non-finite at the same places on every
    backend."""
    runnable = [b for b in BACKENDS if _runnable(b) is None and _device(b) == 'cpu']
    assert 'pytorch' in runnable
    x, off, m = _border_case(5, 6, seed)
    ref = dcnv3_naive(x.numpy(), off.numpy(), m.numpy(), group=1)
    assert not np.isfinite(ref).all() and np.isfinite(ref).any()
    patterns = {}
    for backend in runnable:
        leaves = [t.clone().requires_grad_() for t in (x, off, m)]
        out = dcnv3(*leaves, group=1, backend=backend)
        np.testing.assert_array_equal(out.detach().isfinite().numpy(), np.isfinite(ref),
                                      err_msg=f'{backend}: outputs')
        out.backward(torch.ones_like(out))
        patterns[backend] = [t.grad.isfinite() for t in leaves]
    first = runnable[0]
    for backend in runnable[1:]:
        for name, a, b in zip(('input', 'offset', 'mask'), patterns[first], patterns[backend]):
            assert torch.equal(a, b), f'{name} gradient: {first} and {backend} differ at ' \
                f'{(a != b).nonzero()[:5].tolist()}'
