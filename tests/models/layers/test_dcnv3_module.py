"""The DCNv3 module: official parameter names and initialisation, forward semantics."""
import pytest
import torch
import torch.nn.functional as F

from m3i_mm.models.layers import DCNv3


def box_mean(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean with zero padding of a channels-last map (independent of the op)."""
    c = x.shape[-1]
    weight = torch.full((c, 1, 3, 3), 1 / 9, dtype=x.dtype)
    return F.conv2d(x.permute(0, 3, 1, 2), weight, padding=1, groups=c).permute(0, 2, 3, 1)


def test_parameter_names_follow_the_official_module():
    names = {n for n, _ in DCNv3(16, group=2, center_feature_scale=True).named_parameters()}
    assert names == {
        'offset.weight', 'offset.bias', 'mask.weight', 'mask.bias', 'input_proj.weight',
        'input_proj.bias', 'output_proj.weight', 'output_proj.bias', 'dw_conv.conv.weight',
        'dw_conv.conv.bias', 'dw_conv.norm.weight', 'dw_conv.norm.bias',
        'center_feature_scale_proj_weight', 'center_feature_scale_proj_bias'
    }
    m = DCNv3(16, group=2, dw_kernel_size=5, remove_center=True)
    assert m.offset.weight.shape == (2 * 8 * 2, 16) and m.mask.weight.shape == (2 * 8, 16)
    assert m.dw_conv.conv.weight.shape == (16, 1, 5, 5)


def test_a_1x1_kernel_without_its_centre_is_refused_at_construction():
    """It has no sampling point left (the Triton backend returned zeros)."""
    with pytest.raises(ValueError, match='remove_center with a 1x1 kernel leaves no sampling'):
        DCNv3(16, kernel_size=1, pad=0, group=2, remove_center=True)
    DCNv3(16, kernel_size=1, pad=0, group=2)  # the centre alone is a valid kernel


def test_at_init_dcnv3_is_a_box_filter_between_the_projections():
    torch.manual_seed(0)
    m = DCNv3(8, group=2, backend='pytorch').double()
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)
    expected = m.output_proj(box_mean(m.input_proj(x)))
    torch.testing.assert_close(m(x), expected)


def test_center_feature_scale_starts_as_an_even_blend():
    torch.manual_seed(0)
    m = DCNv3(8, group=2, center_feature_scale=True, backend='pytorch').double()
    x = torch.randn(1, 4, 4, 8, dtype=torch.float64)
    projected = m.input_proj(x)
    expected = m.output_proj(0.5 * box_mean(projected) + 0.5 * projected)
    torch.testing.assert_close(m(x), expected)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = DCNv3(8, group=2, center_feature_scale=True, backend='pytorch')
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    m(torch.randn(2, 5, 5, 8)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_configs_and_inputs_are_named():
    with pytest.raises(ValueError, match='divisible by group'):
        DCNv3(10, group=3)
    with pytest.raises(ValueError, match='needs stride=1'):
        DCNv3(8, group=2, stride=2)
    with pytest.raises(ValueError, match=r'expects \(N, H, W, 8\)'):
        DCNv3(8, group=2)(torch.randn(1, 8, 4, 4).permute(0, 2, 3, 1)[..., :4])


@pytest.mark.parametrize('backend', ['pytorch', 'auto'])
def test_an_empty_batch_runs_forward_and_backward(backend):
    m = DCNv3(16, group=2, center_feature_scale=True, backend=backend)
    x = torch.randn(0, 5, 4, 16, requires_grad=True)
    out = m(x)
    assert out.shape == (0, 5, 4, 16)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in m.parameters())


def test_the_cpu_extension_and_the_pytorch_path_agree_inside_the_module():
    from m3i_mm.ops.dcnv3 import cpu_ext
    if not cpu_ext.extension_available():
        pytest.skip('the DCNv3 CPU extension cannot be built here (no C++ compiler)')
    torch.manual_seed(0)
    module = DCNv3(32, group=2, center_feature_scale=True, backend='pytorch').double()
    for p in module.parameters():  # non-zero offsets/masks, unlike the init
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 6, 5, 32, dtype=torch.float64, requires_grad=True)
    results = []
    for backend in ('pytorch', 'cpu'):
        module.backend = backend
        out = module(x)
        results.append([out, *torch.autograd.grad(out.square().sum(),
                                                  [x, *module.parameters()])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_eager_inference_paths_compute_what_training_computes():
    """In eager inference the module runs its offset/mask branch through the CPU extension's
    fused kernel (depth-wise conv, LayerNorm, GELU), activations in place and the conv with
    a channels-last copy of its weight; the result matches the autograd path."""
    from m3i_mm.models.layers import DepthwiseConvNormAct
    from m3i_mm.ops.dcnv3 import cpu_ext
    torch.manual_seed(0)
    for dtype, kernel, bias in [(torch.float64, 3, True), (torch.float64, 5, False),
                                (torch.float32, 3, True)]:
        branch = DepthwiseConvNormAct(24, kernel).to(dtype)
        if not bias:
            branch.conv.bias = None
        for p in branch.parameters():
            torch.nn.init.normal_(p, std=0.5)
        x = torch.randn(2, 7, 5, 24, dtype=dtype)
        expected = branch(x)
        with torch.inference_mode():
            assert branch._fused(x) == cpu_ext.extension_available()
            out = branch(x)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(out, expected, rtol=tol, atol=tol)


def test_inference_follows_every_kind_of_weight_update():
    """No stale channels-last copy: in-place updates through ``.data`` (EMA averaging,
    mmengine's EMAHook swap) do not bump the version counter and must still be seen."""
    from m3i_mm.models.layers import ChannelsLastConv2d
    torch.manual_seed(0)
    conv = ChannelsLastConv2d(8, 16, 3, stride=2, padding=1)
    x = torch.randn(1, 9, 9, 8).permute(0, 3, 1, 2)  # a channels-last view
    with torch.inference_mode():
        first = conv(x)
    torch.testing.assert_close(first, torch.nn.functional.conv2d(x, conv.weight, conv.bias, 2,
                                                                  1))
    with torch.no_grad():
        conv.weight.mul_(2)  # in place: same storage, new version
    with torch.inference_mode():
        torch.testing.assert_close(conv(x) - conv.bias.view(1, -1, 1, 1),
                                   2 * (first - conv.bias.view(1, -1, 1, 1)))
    conv.weight.data.mul_(0.5)  # through .data: same storage, same version
    with torch.no_grad():
        torch.testing.assert_close(conv(x), first)
    conv.load_state_dict({'weight': torch.zeros_like(conv.weight), 'bias': conv.bias.detach()})
    with torch.inference_mode():
        torch.testing.assert_close(conv(x), conv.bias.view(1, -1, 1, 1).expand_as(first))
    assert 'weight' in conv.state_dict() and len(conv.state_dict()) == 2


def test_the_fused_offset_branch_follows_the_dcnv3_backend(monkeypatch):
    """The native dw-conv+LN+GELU kernel runs only where the op itself runs natively
    (backend 'cpu'); with backend 'pytorch' nothing native is used."""
    from m3i_mm.ops.dcnv3 import cpu_ext
    if not cpu_ext.extension_available():
        pytest.skip(f'the CPU extension is unavailable here: {cpu_ext.unavailable_reason()}')
    calls = []
    real = cpu_ext.dwconv_norm_gelu
    monkeypatch.setattr(cpu_ext, 'dwconv_norm_gelu',
                        lambda *args: calls.append(1) or real(*args))
    x = torch.randn(1, 6, 6, 16)
    for backend, expected in (('pytorch', 0), ('cpu', 1), ('auto', 2)):
        module = DCNv3(16, group=2, backend=backend)
        with torch.inference_mode():
            module(x)
        assert len(calls) == expected, backend
    monkeypatch.setenv('M3I_MM_DCNV3_BACKEND', 'pytorch')  # the override reaches it too
    with torch.inference_mode():
        DCNv3(16, group=2)(x)
    assert len(calls) == 2


@pytest.mark.parametrize('backend', ['pytorch', 'cpu'])
def test_offsets_and_masks_are_what_forward_samples_with(backend):
    """The op, given the projected input and the returned offsets and (normalised) masks,
    reproduces the module's output: they are the ones forward uses."""
    from m3i_mm.ops.dcnv3 import dcnv3
    from m3i_mm.ops.dcnv3.cpu_ext import extension_available
    if backend == 'cpu' and not extension_available():
        pytest.skip('the DCNv3 CPU extension does not build here (no C++ compiler)')
    torch.manual_seed(0)
    m = DCNv3(8, group=2, offset_scale=2.0, backend=backend)
    for linear in (m.offset, m.mask):
        torch.nn.init.normal_(linear.weight, std=0.5)
    x = torch.randn(1, 5, 6, 8)
    with torch.no_grad():
        offset, mask = m.offsets_and_masks(x)
        assert offset.shape == (1, 5, 6, 2 * 9 * 2) and mask.shape == (1, 5, 6, 2 * 9)
        torch.testing.assert_close(mask.view(1, 5, 6, 2, 9).sum(-1), torch.ones(1, 5, 6, 2))
        core = dcnv3(m.input_proj(x), offset, mask, 3, 1, 1, 1, 2, 4, 2.0, backend='pytorch')
        torch.testing.assert_close(m.output_proj(core), m(x), rtol=1e-5, atol=1e-5)
