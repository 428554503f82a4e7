"""m3i_mm.ops.dcnv3: parity with a naive float64 reference, gradients, backends, errors."""
import itertools
import os

import numpy as np
import pytest
import torch

from m3i_mm.ops.dcnv3 import dcnv3, make_geometry, resolve_backend
from m3i_mm.ops.dcnv3.function import triton_available
from tests.ops.dcnv3.reference import dcnv3_naive

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
needs_triton = pytest.mark.skipif(
    not triton_available() or not (torch.cuda.is_available()
                                   or os.environ.get('TRITON_INTERPRET') == '1'),
    reason='needs triton with a CUDA device or TRITON_INTERPRET=1')


def make_inputs(n=2, h=6, w=5, group=2, gc=3, kernel=3, stride=1, pad=1, dilation=1,
                remove_center=False, offset_std=2.0, dtype=torch.float64, device='cpu',
                seed=0):
    gen = torch.Generator().manual_seed(seed)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    out_h = (h + 2 * pad - (dilation * (kh - 1) + 1)) // stride + 1
    out_w = (w + 2 * pad - (dilation * (kw - 1) + 1)) // stride + 1
    points = kh * kw - int(remove_center)
    x = torch.randn(n, h, w, group * gc, generator=gen, dtype=torch.float64)
    offset = torch.randn(n, out_h, out_w, group * points * 2, generator=gen,
                         dtype=torch.float64) * offset_std
    mask = torch.rand(n, out_h, out_w, group * points, generator=gen, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (x, offset, mask)]


# (n, h, w, group, gc, kernel, stride, pad, dilation, offset_scale, remove_center, offset_std)
CASES = [
    (2, 6, 5, 2, 3, 3, 1, 1, 1, 1.0, False, 2.0),      # the InternImage setting, odd W
    (1, 7, 7, 1, 4, 1, 1, 0, 1, 1.0, False, 1.5),      # 1x1 kernel, batch 1
    (2, 9, 6, 2, 2, 5, 2, 2, 2, 0.5, False, 2.0),      # 5x5, stride 2, dilation 2
    (1, 5, 8, 3, 2, 3, 2, 0, 1, 2.0, True, 1.0),       # remove_center, offset_scale 2
    (2, 4, 3, 2, 3, 3, 1, 2, 1, 1.0, False, 25.0),     # offsets far out of bounds
    (1, 3, 3, 1, 2, 5, 1, 2, 1, 1.0, True, 0.5),       # 5x5 remove_center on a tiny map
    (1, 6, 6, 2, 2, (3, 5), 1, 1, 1, 1.0, False, 1.0),  # non-square kernel (pad 1 both ways)
]


def run_case(case, backend, dtype=torch.float64, device='cpu'):
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    x, off, m = make_inputs(n, h, w, g, gc, k, s, p, d, rc, std, dtype, device)
    out = dcnv3(x, off, m, k, s, p, d, g, gc, scale, rc, backend=backend)
    return (x, off, m), out


@pytest.mark.parametrize('case', CASES)
def test_pytorch_matches_naive_reference(case):
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    (x, off, m), out = run_case(case, 'pytorch')
    kernel = (k, k) if isinstance(k, int) else k
    ref = dcnv3_naive(x.numpy(), off.numpy(), m.numpy(), kernel, (s, s), (p, p), (d, d), g,
                      gc, scale, rc)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_reference_sees_the_geometry():
    """Sanity of the test oracle itself: zero offsets, uniform masks = a 3x3 box mean."""
    x = torch.arange(1 * 5 * 5 * 1, dtype=torch.float64).view(1, 5, 5, 1)
    off = torch.zeros(1, 5, 5, 18, dtype=torch.float64)
    m = torch.full((1, 5, 5, 9), 1 / 9, dtype=torch.float64)
    ref = dcnv3_naive(x.numpy(), off.numpy(), m.numpy(), group=1)
    padded = np.pad(x[0, :, :, 0].numpy(), 1)
    box = np.array([[padded[i:i + 3, j:j + 3].mean() for j in range(5)] for i in range(5)])
    np.testing.assert_allclose(ref[0, :, :, 0], box)
    out = dcnv3(x, off, m, 3, 1, 1, 1, 1, 1, backend='pytorch')
    np.testing.assert_allclose(out[0, :, :, 0].numpy(), box)


@pytest.mark.parametrize('case', CASES[:5])
def test_pytorch_gradcheck(case):
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    x, off, m = make_inputs(n, h, w, g, gc, k, s, p, d, rc, std)
    for t in (x, off, m):
        t.requires_grad_(True)
    fn = lambda a, b, c: dcnv3(a, b, c, k, s, p, d, g, gc, scale, rc, backend='pytorch')  # noqa
    assert torch.autograd.gradcheck(fn, (x, off, m), eps=1e-6, atol=1e-7)


def test_pytorch_partial_gradients():
    """Only the inputs that need a gradient get one (and they match the full backward)."""
    x, off, m = make_inputs()
    full = [t.clone().requires_grad_(True) for t in (x, off, m)]
    dcnv3(*full, group=2, backend='pytorch').square().sum().backward()
    for which in range(3):
        part = [t.clone().requires_grad_(i == which) for i, t in enumerate((x, off, m))]
        dcnv3(*part, group=2, backend='pytorch').square().sum().backward()
        for i, t in enumerate(part):
            if i == which:
                torch.testing.assert_close(t.grad, full[i].grad)
            else:
                assert t.grad is None


@pytest.mark.parametrize('dtype,rtol', [(torch.float32, 1e-5), (torch.float16, 1e-2),
                                        (torch.bfloat16, 1e-2)])
def test_pytorch_low_precision_outside_autocast(dtype, rtol):
    x, off, m = make_inputs(2, 8, 7, 2, 8, offset_std=1.0)
    ref = dcnv3(x, off, m, group=2, backend='pytorch')
    out = dcnv3(x.to(dtype), off.to(dtype), m.to(dtype), group=2, backend='pytorch')
    assert out.dtype == dtype
    rel = (out.double() - ref).norm() / ref.norm()
    assert rel <= rtol


def test_autocast_cpu_bfloat16_runs_in_bfloat16():
    x, off, m = make_inputs(1, 6, 6, 2, 8, dtype=torch.float32)
    ref = dcnv3(x, off, m, group=2, backend='pytorch')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = dcnv3(x, off, m, group=2, backend='pytorch')
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).norm() / ref.norm() <= 1e-2


# The Triton kernels against the float64 reference: tests/ops/dcnv3/test_triton_kernels.py


@needs_triton
def test_triton_gradcheck_through_the_custom_op():
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    x, off, m = make_inputs(1, 4, 5, 2, 2, device=device)
    for t in (x, off, m):
        t.requires_grad_(True)
    fn = lambda a, b, c: dcnv3(a, b, c, group=2, backend='triton')  # noqa: E731
    # fast mode (random projections of the Jacobian): the interpreter is slow on CPU
    assert torch.autograd.gradcheck(fn, (x, off, m), eps=1e-6, atol=1e-7,
                                    fast_mode=not torch.cuda.is_available())


def test_errors_name_the_problem():
    x, off, m = make_inputs()
    with pytest.raises(ValueError, match='6 channels but group x group_channels = 4 x 2'):
        dcnv3(x, off, m, group=4, group_channels=2, backend='pytorch')
    with pytest.raises(ValueError, match=r'offset must have shape .* got \(2, 6, 5, 35\)'):
        dcnv3(x, off[..., :-1], m, group=2, backend='pytorch')
    with pytest.raises(ValueError, match='mask must have shape'):
        dcnv3(x, off, m[:, :-1], group=2, backend='pytorch')
    with pytest.raises(TypeError, match='input must be a floating-point tensor'):
        dcnv3(x.long(), off, m, group=2, backend='pytorch')
    with pytest.raises(ValueError, match='4-D channels-last'):
        dcnv3(x[0], off, m, group=2, backend='pytorch')
    with pytest.raises(ValueError, match='mask is on meta but input is on cpu'):
        dcnv3(x, off, m.to('meta'), group=2, backend='pytorch')
    with pytest.raises(ValueError, match=r'remove_center needs an odd square kernel, got \(4, 4\)'):
        dcnv3(x, off, m, kernel_size=4, group=2, remove_center=True, backend='pytorch')
    with pytest.raises(ValueError, match=r'remove_center with a 1x1 kernel leaves no sampling '
                       r'point'):  # Triton returned zeros, PyTorch failed on an empty softmax
        dcnv3(x, off[..., :0], m[..., :0], kernel_size=1, padding=0, group=2,
              remove_center=True, backend='pytorch')
    with pytest.raises(ValueError, match='unknown backend'):
        dcnv3(x, off, m, group=2, backend='tpu')
    with pytest.raises(ValueError, match='too small'):
        dcnv3(x, off, m, kernel_size=9, padding=0, group=2, backend='pytorch')


def test_backend_resolution(monkeypatch):
    from m3i_mm.ops.dcnv3 import cpu_ext
    expected_cpu = 'cpu' if cpu_ext.extension_available() else 'pytorch'
    assert resolve_backend('auto', torch.device('cpu')) == expected_cpu
    monkeypatch.setenv('M3I_MM_DCNV3_BACKEND', 'pytorch')
    assert resolve_backend('auto', torch.device('cpu')) == 'pytorch'
    with pytest.raises(ValueError, match='runs on CUDA tensors'):
        resolve_backend('cuda', torch.device('cpu'))
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    if triton_available():
        with pytest.raises(ValueError, match='"triton" runs on CUDA tensors'):
            resolve_backend('triton', torch.device('cpu'))


def test_geometry_output_size_matches_conv2d():
    for k, s, p, d, h in itertools.product((1, 3, 5), (1, 2), (0, 1, 2), (1, 2), (5, 8)):
        geo = make_geometry(4, k, s, p, d, 2, 2, 1.0, False)
        if (h + 2 * p - (d * (k - 1) + 1)) < 0:
            continue
        expected = torch.nn.functional.conv2d(torch.zeros(1, 1, h, h), torch.zeros(1, 1, k, k),
                                              stride=s, padding=p, dilation=d).shape[-2:]
        assert geo.output_size(h, h) == tuple(expected)


@needs_cuda
@pytest.mark.parametrize('backend', ['triton', 'cuda'])
@pytest.mark.parametrize('dtype,rtol', [(torch.float32, 1e-5), (torch.float16, 1e-2),
                                        (torch.bfloat16, 1e-2)])
def test_gpu_backends_agree_with_pytorch(backend, dtype, rtol):
    x, off, m = make_inputs(2, 14, 13, 4, 16, offset_std=2.0, dtype=torch.float32,
                            device='cuda')
    leaves_ref = [t.clone().requires_grad_(True) for t in (x, off, m)]
    ref = dcnv3(*leaves_ref, group=4, backend='pytorch')
    grad = torch.randn_like(ref)
    ref.backward(grad)
    leaves = [t.clone().to(dtype).requires_grad_(True) for t in (x, off, m)]
    out = dcnv3(*leaves, group=4, backend=backend)
    out.backward(grad.to(dtype))
    assert out.dtype == dtype
    for a, b in [(out, ref)] + list(zip([t.grad for t in leaves], [t.grad for t in leaves_ref])):
        assert (a.float() - b).norm() / b.norm() <= rtol


@needs_cuda
@pytest.mark.parametrize('backend', ['triton', 'cuda'])
def test_gpu_gradcheck(backend):
    x, off, m = make_inputs(1, 5, 6, 2, 4, device='cuda')
    for t in (x, off, m):
        t.requires_grad_(True)
    fn = lambda a, b, c: dcnv3(a, b, c, group=2, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, off, m), eps=1e-6, atol=1e-7)


def test_a_bad_backend_in_the_environment_is_a_usage_error(monkeypatch):
    """M3I_MM_DCNV3_BACKEND=bogus: an error naming the variable and the choices, of the
    kind the tools print as one line (UsageError; still a ValueError)."""
    from m3i_mm.ops.dcnv3 import DCNv3BackendError
    from m3i_mm.utils.errors import UsageError
    monkeypatch.setenv('M3I_MM_DCNV3_BACKEND', 'bogus')
    with pytest.raises(DCNv3BackendError, match=r"M3I_MM_DCNV3_BACKEND='bogus' is not a DCNv3 "
                       r'backend; set it to one of auto, pytorch, triton, cuda, cpu') as info:
        resolve_backend('auto', torch.device('cpu'))
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)
    assert resolve_backend('pytorch', torch.device('cpu')) == 'pytorch'  # explicit wins
