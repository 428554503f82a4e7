"""The DCNv3 CPU extension (``backend='cpu'``): parity with the naive float64 reference,
gradients, the banded input-gradient scatter, non-finite values, build and fallback."""
import numpy as np
import pytest
import torch

from m3i_mm.ops.dcnv3 import cpu_ext, dcnv3, make_geometry, resolve_backend
from tests.ops.dcnv3.reference import dcnv3_naive
from tests.ops.dcnv3.test_dcnv3_op import CASES, make_inputs


@pytest.fixture(scope='module', autouse=True)
def extension():
    """Skip only where no compiler exists; with one, a failing build fails the tests."""
    if not cpu_ext.enabled():
        pytest.skip(f'the CPU extension is switched off ({cpu_ext.ENV_SWITCH}=0)')
    try:
        return cpu_ext.load_extension()  # compiled on first use, or by make install
    except cpu_ext.ExtensionUnavailable:
        if cpu_ext.compiler() is None:
            pytest.skip('needs a C++ compiler (the "cpu" DCNv3 backend compiles on first use)')
        raise


# (n, h, w, group, gc, kernel, stride, pad, dilation, offset_scale, remove_center, offset_std)
EXTRA_CASES = [
    (2, 7, 9, 3, 16, 3, 1, 1, 1, 1.0, False, 2.0),     # group width 16 (compiled constant)
    (1, 6, 5, 2, 32, 3, 1, 1, 1, 2.0, True, 3.0),      # width 32, remove_center, scale 2
    (1, 5, 7, 2, 12, 3, 1, 1, 1, 0.5, False, 30.0),    # width 12, nearly all outside
    (0, 5, 5, 2, 16, 3, 1, 1, 1, 1.0, False, 1.0),     # empty batch
]
ALL_CASES = CASES + EXTRA_CASES


def leaves(case, dtype=torch.float64):
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    return [t.to(dtype).requires_grad_(True)
            for t in make_inputs(n, h, w, g, gc, k, s, p, d, rc, std)]


def call(case, tensors, backend='cpu'):
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    return dcnv3(*tensors, k, s, p, d, g, gc, scale, rc, backend=backend)


@pytest.mark.parametrize('case', ALL_CASES)
def test_forward_matches_naive_reference(case):
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    x, off, m = leaves(case)
    out = call(case, (x, off, m))
    kernel = (k, k) if isinstance(k, int) else k
    ref = dcnv3_naive(x.detach().numpy(), off.detach().numpy(), m.detach().numpy(), kernel,
                      (s, s), (p, p), (d, d), g, gc, scale, rc)
    assert out.dtype == torch.float64 and out.shape == ref.shape
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)


def softmax_over_points_np(logits: np.ndarray, points: int) -> np.ndarray:
    grouped = logits.reshape(*logits.shape[:-1], logits.shape[-1] // points, points)
    exp = np.exp(grouped - grouped.max(-1, keepdims=True))
    return (exp / exp.sum(-1, keepdims=True)).reshape(logits.shape)


@pytest.mark.parametrize('case', ALL_CASES[::2])
@pytest.mark.parametrize('backend', ['cpu', 'pytorch'])
def test_fused_mask_softmax_matches_softmax_then_reference(case, backend):
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    x, off, logits = (t.detach() for t in leaves(case))
    logits = (logits - 0.5) * 8  # logits of either sign, some far apart
    kernel = (k, k) if isinstance(k, int) else k
    out = dcnv3(x, off, logits, k, s, p, d, g, gc, scale, rc, backend=backend,
                softmax_mask=True)
    masks = softmax_over_points_np(logits.numpy(), kernel[0] * kernel[1] - int(rc))
    ref = dcnv3_naive(x.numpy(), off.numpy(), masks, kernel, (s, s), (p, p), (d, d), g, gc,
                      scale, rc)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('case', [CASES[0], CASES[3], EXTRA_CASES[3]])
def test_gradcheck_with_fused_mask_softmax(case):
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    tensors = leaves(case)
    assert torch.autograd.gradcheck(
        lambda *t: dcnv3(*t, k, s, p, d, g, gc, scale, rc, backend='cpu', softmax_mask=True),
        tensors, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize('case', CASES + EXTRA_CASES[3:])  # non-square kernel included
def test_gradcheck(case):
    tensors = leaves(case)
    assert torch.autograd.gradcheck(lambda *t: call(case, t), tensors, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize('case', EXTRA_CASES)
@pytest.mark.parametrize('softmax_mask', [False, True])
def test_backward_matches_the_pytorch_path_for_every_band_count(case, softmax_mask):
    """The banded scatter (private buffers summed in band order) equals the direct one."""
    n, h, w, g, gc, k, s, p, d, scale, rc, std = case
    tensors = leaves(case)
    out = dcnv3(*tensors, k, s, p, d, g, gc, scale, rc, backend='pytorch',
                softmax_mask=softmax_mask)
    grad_out = torch.randn_like(out)
    expected = torch.autograd.grad(out, tensors, grad_out)
    geo = make_geometry(g * gc, k, s, p, d, g, gc, scale, rc)
    detached = [t.detach() for t in tensors]
    for bands in (1, 2, 3, h):
        got = cpu_ext.dcnv3_backward_cpu(*detached, grad_out, geo, True, bands, softmax_mask)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    got = cpu_ext.dcnv3_backward_cpu(*detached, grad_out, geo, False, 2, softmax_mask)
    torch.testing.assert_close(got[1:], expected[1:], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('group_channels', [16, 32])  # both widths compiled as constants
def test_results_do_not_depend_on_the_thread_count(group_channels):
    case = (1, 24, 11, 3, group_channels, 3, 1, 1, 1, 1.0, False, 2.0)
    tensors = leaves(case, torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):  # 3 (image, group) pairs: 1 band on 1 thread, 3 bands on 2
            torch.set_num_threads(count)
            out = call(case, tensors)
            results.append([out] + list(torch.autograd.grad(out, tensors, torch.ones_like(out))))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('dtype,rtol', [(torch.float32, 1e-6), (torch.bfloat16, 5e-3),
                                        (torch.float16, 1e-3)])
@pytest.mark.parametrize('softmax_mask', [False, True])
@pytest.mark.parametrize('group_channels', [16, 32])  # T's and H's group widths
def test_low_precision_against_float64(dtype, rtol, softmax_mask, group_channels):
    """Against float64 on the same (rounded) inputs: only the arithmetic may differ (in
    float32 also the vectorised exp of the fused softmax)."""
    case = (2, 8, 7, 2, group_channels, 3, 1, 1, 1, 1.0, False, 1.5)
    low = [t.detach().to(dtype).requires_grad_(True) for t in leaves(case)]
    if softmax_mask:  # logits of either sign, up to e^-40 apart
        low[2] = ((low[2].detach() - 0.5) * 40).to(dtype).requires_grad_(True)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in low]

    def call(tensors, backend):
        return dcnv3(*tensors, group=2, backend=backend, softmax_mask=softmax_mask)

    ref = call(ref_leaves, 'pytorch')
    grad_out = torch.randn_like(ref).to(dtype)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out.double())
    out = call(low, 'cpu')
    grads = torch.autograd.grad(out, low, grad_out)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    for a, b in zip([out, *grads], [ref, *ref_grads]):
        assert (a.double() - b).norm() / b.norm() <= rtol


def test_non_finite_values_follow_the_shared_rule():
    """NaN location -> NaN for that (pixel, group) only, no NaN in grad_input; an infinite
    location is outside the map; a NaN mask poisons its pixel and group."""
    x, off, m = make_inputs(1, 5, 6, 2, 16, dtype=torch.float32)
    off, m = off.clone(), m.clone()
    off[0, 1, 1, 0] = float('nan')          # group 0, point 0, dx
    off[0, 3, 4, 18 + 2 * 4 + 1] = float('inf')  # group 1, point 4, dy
    m[0, 2, 2, 9 + 3] = float('nan')        # group 1, point 3
    out = dcnv3(x, off, m, group=2, backend='cpu')
    nan_at = out.isnan().nonzero().tolist()
    assert sorted({tuple(i[:3]) + (i[3] // 16, ) for i in nan_at}) == [(0, 1, 1, 0), (0, 2, 2, 1)]
    assert out[0, 1, 1, :16].isnan().all() and out[0, 2, 2, 16:].isnan().all()
    far = off.detach().clone()
    far[0, 3, 4, 18 + 2 * 4 + 1] = 1e6
    far[0, 1, 1, 0] = 0
    clean_m = m.detach().clone()
    clean_m[0, 2, 2, 9 + 3] = 0
    expected = dcnv3(x.detach(), far, clean_m, group=2, backend='pytorch')
    finite = ~out.isnan()
    torch.testing.assert_close(out[finite], expected[finite])
    tensors = [t.requires_grad_(True) for t in (x, off, clean_m)]
    out = dcnv3(*tensors, group=2, backend='cpu')
    grad_x, grad_off, grad_m = torch.autograd.grad(out.nan_to_num().sum(), tensors)
    assert not grad_x.isnan().any()
    assert grad_off[0, 1, 1, :2].isnan().all() and grad_m[0, 1, 1, 0].isnan()
    assert (grad_off[0, 3, 4, 18 + 8:18 + 10] == 0).all() and grad_m[0, 3, 4, 9 + 4] == 0


def test_a_nan_mask_logit_poisons_its_group_only():
    x, off, logits = make_inputs(1, 5, 6, 2, 16, dtype=torch.float32)
    logits = logits.clone()
    logits[0, 2, 3, 9 + 4] = float('nan')
    out = dcnv3(x, off, logits, group=2, backend='cpu', softmax_mask=True)
    assert out[0, 2, 3, 16:].isnan().all() and int(out.isnan().sum()) == 16
    expected = dcnv3(x, off, logits, group=2, backend='pytorch', softmax_mask=True)
    torch.testing.assert_close(out, expected, equal_nan=True)


def test_compile_and_export_see_one_custom_op():
    import torch._dynamo
    case = (1, 5, 6, 2, 4, 3, 1, 1, 1, 1.0, False, 2.0)
    tensors = leaves(case, torch.float32)
    ref = call(case, tensors)
    ref_grads = torch.autograd.grad(ref.square().sum(), tensors)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *t: call(case, t), backend='aot_eager', fullgraph=True)
    out = compiled(*tensors)
    torch.testing.assert_close(out, ref)
    for a, b in zip(torch.autograd.grad(out.square().sum(), tensors), ref_grads):
        torch.testing.assert_close(a, b)

    class Core(torch.nn.Module):
        def forward(self, x, off, m):
            return call(case, (x, off, m), backend='auto')

    program = torch.export.export(Core(), tuple(t.detach() for t in tensors))
    assert 'm3i_mm_dcnv3_cpu.forward.default' in {str(n.target) for n in program.graph.nodes}


def test_auto_picks_the_extension_on_cpu_and_the_switch_turns_it_off(monkeypatch):
    assert resolve_backend('auto', torch.device('cpu')) == 'cpu'
    monkeypatch.setenv(cpu_ext.ENV_SWITCH, '0')
    monkeypatch.setattr(cpu_ext, '_unavailable', None)
    cpu_ext.load_extension.cache_clear()
    try:
        assert resolve_backend('auto', torch.device('cpu')) == 'pytorch'
        with pytest.raises(ValueError, match='"cpu" is unavailable: switched off by '
                           'M3I_MM_DCNV3_CPU_EXT=0'):
            resolve_backend('cpu', torch.device('cpu'))
        with pytest.raises(ValueError, match='"cpu" runs on CPU tensors, got meta'):
            resolve_backend('cpu', torch.device('meta'))
    finally:
        cpu_ext.load_extension.cache_clear()


@pytest.mark.parametrize('compiler,reason', [
    ('/nonexistent/c++', 'no C++ compiler (/nonexistent/c++ not found'),
    ('false', 'its build failed'),
])
def test_without_a_working_compiler_auto_falls_back_with_one_log_line(
        monkeypatch, tmp_path, compiler, reason):
    monkeypatch.setenv('M3I_MM_HOME', str(tmp_path))  # an empty cache: nothing prebuilt
    monkeypatch.setenv('CXX', compiler)
    monkeypatch.setattr(cpu_ext, '_unavailable', None)
    logged = []
    monkeypatch.setattr(cpu_ext, '_log', logged.append)
    cpu_ext.load_extension.cache_clear()
    try:
        assert resolve_backend('auto', torch.device('cpu')) == 'pytorch'
        assert resolve_backend('auto', torch.device('cpu')) == 'pytorch'
        failures = [line for line in logged if 'unavailable' in line]
        assert len(failures) == 1 and reason in failures[0] and '"pytorch"' in failures[0]
        if compiler == 'false':  # remembered: the next process does not try again
            cpu_ext.load_extension.cache_clear()
            with pytest.raises(cpu_ext.ExtensionUnavailable, match='failed before .*build.log'):
                cpu_ext.load_extension()
        x, off, m = make_inputs(1, 4, 4, 2, 3)
        torch.testing.assert_close(dcnv3(x, off, m, group=2),
                                   dcnv3(x, off, m, group=2, backend='pytorch'))
    finally:
        cpu_ext.load_extension.cache_clear()


def test_direct_calls_with_inconsistent_shapes_are_refused():
    """The compiled op checks the sizes it indexes by, so a call that bypasses the Python
    checks (torch.ops directly) gets an error, not an out-of-bounds read."""
    x, off, m = make_inputs(1, 5, 5, 2, 16, dtype=torch.float32)
    geo = make_geometry(32, 3, 1, 1, 1, 2, 16, 1.0, False)
    forward = torch.ops.m3i_mm_dcnv3_cpu.forward
    with pytest.raises(RuntimeError, match='offset has 34 channels, expected group x points x 2 = 36'):
        forward(x, off[..., :34], m, *geo.as_args(), False)
    with pytest.raises(RuntimeError, match='mask has 17 channels, expected group x points = 18'):
        forward(x, off, m[..., :17], *geo.as_args(), False)
    with pytest.raises(RuntimeError, match='mask is 4x5 but offset is 5x5'):
        forward(x, off, m[:, :4], *geo.as_args(), False)
    with pytest.raises(RuntimeError, match='must be positive'):
        forward(x, off, m, 3, 3, 0, 1, 1, 1, 1, 1, 2, 16, 1.0, False, False)
    grad_out = torch.ones(1, 5, 5, 32)
    with pytest.raises(RuntimeError, match=r'grad_out has shape \[1, 5, 4, 32\]'):
        torch.ops.m3i_mm_dcnv3_cpu.backward(grad_out[:, :, :4], x, off, m, *geo.as_args(),
                                            False, True, 0)


def test_half_input_with_float32_offsets_locates_in_float32():
    """bf16 features with float32 offsets and masks (a direct call with mixed dtypes): the
    points are located from the float32 offsets, so the result equals the float64
    reference on the same values up to the bf16 rounding of the output, as the pytorch path
    does; rounding the offsets to bf16 first would move points by up to 1/32 px."""
    case = (1, 8, 8, 2, 16, 3, 1, 1, 1, 1.0, False, 6.0)  # offsets of a few pixels
    x, off, m = [t.detach() for t in leaves(case)]
    x16 = x.to(torch.bfloat16)
    off32, m32 = off.float(), m.float()
    leaves16 = [x16.requires_grad_(True), off32.requires_grad_(True), m32.requires_grad_(True)]
    ref = call(case, [x16.detach().double(), off32.detach().double(), m32.detach().double()],
               'pytorch')
    out = call(case, leaves16)
    assert out.dtype == torch.bfloat16
    error = ((out.double() - ref).norm() / ref.norm()).item()
    assert error <= 4e-3, error  # bf16 output rounding (2**-9 relative) and no more
    rounded = call(case, [x16.detach(), off32.detach().to(torch.bfloat16),
                          m32.detach().to(torch.bfloat16)])
    assert ((rounded.double() - ref).norm() / ref.norm()).item() > 2 * error  # the test has teeth
    grads = torch.autograd.grad(out.float().sum(), leaves16)
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.float32, torch.float32]


def test_the_build_cache_is_keyed_by_the_source_not_its_folder(tmp_path, monkeypatch):
    """An installed copy of the same source (a wheel in another environment) reuses the
    build; a changed source gets its own."""
    first = cpu_ext.build_dir()
    copy = tmp_path / 'installed' / 'dcnv3_cpu.cpp'
    copy.parent.mkdir()
    copy.write_bytes(open(cpu_ext.SOURCE, 'rb').read())
    monkeypatch.setattr(cpu_ext, 'SOURCE', str(copy))
    assert cpu_ext.build_dir() == first
    copy.write_bytes(copy.read_bytes() + b'\n// changed\n')
    assert cpu_ext.build_dir() != first
