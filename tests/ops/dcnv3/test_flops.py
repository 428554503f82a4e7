"""The DCNv3 FLOP rule: counted by mmengine's counter, one count whichever backend runs,
equal to the hand formula (5 multiply-adds per sampled value: 4 bilinear weights + mask)."""
import pytest
import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info

from m3i_mm.models.layers.dcnv3 import DCNv3
from m3i_mm.ops.dcnv3 import cpu_ext, dcnv3
from m3i_mm.ops.dcnv3.flops import dcnv3_flops
from m3i_mm.ops.dcnv3.function import triton_available, triton_interpreting


def backends():
    params = ['pytorch']
    params.append(pytest.param('cpu', marks=pytest.mark.skipif(
        not cpu_ext.extension_available(), reason='needs the DCNv3 CPU extension (a C++ '
        'compiler)')))
    params.append(pytest.param('triton', marks=pytest.mark.skipif(
        not triton_available() or not (torch.cuda.is_available() or triton_interpreting()),
        reason='needs Triton and a CUDA device or TRITON_INTERPRET=1')))
    return params


class Core(nn.Module):
    """The op alone, at a geometry InternImage does not use (stride, dilation, no centre)."""

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backend

    def forward(self, x, offset, mask):
        return dcnv3(x, offset, mask, kernel_size=3, stride=2, padding=1, dilation=2, group=3,
                     remove_center=True, backend=self.backend)


def test_formula():
    assert dcnv3_flops(2, 4, 3, 3, 8, 4) == 5 * 2 * 4 * 3 * 3 * 8 * 4 == 11520


@pytest.mark.parametrize('backend', backends())
def test_core_count_is_the_hand_formula(backend):
    # input 2 x 9 x 7, 3 groups of 4 channels; kernel 3, stride 2, pad 1, dilation 2:
    # H_out = (9 + 2 - 5) // 2 + 1 = 4, W_out = (7 + 2 - 5) // 2 + 1 = 3; 9 - 1 = 8 points
    x = torch.randn(2, 9, 7, 12)
    offset = torch.randn(2, 4, 3, 3 * 8 * 2)
    mask = torch.rand(2, 4, 3, 3 * 8)
    with torch.no_grad():
        analyzer = FlopAnalyzer(Core(backend), (x, offset, mask))
        analyzer.unsupported_ops_warnings(False)
        assert analyzer.total() == 5 * 2 * (4 * 3) * 3 * 8 * 4  # N, out pixels, G, P, C'
        assert not analyzer.unsupported_ops()


@pytest.mark.parametrize('backend', backends())
def test_module_count_through_get_model_complexity_info(backend):
    """What every OpenMMLab get_flops tool calls counts the whole DCNv3 module, the core
    once, whichever backend runs."""
    n, h, w, c, g, k_dw = 1, 6, 5, 16, 2, 3
    module = DCNv3(channels=c, group=g, dw_kernel_size=k_dw, backend=backend).eval()
    x = torch.randn(n, h, w, c)
    with torch.no_grad():
        flops = get_model_complexity_info(module, inputs=(x, ), show_table=False,
                                          show_arch=False)['flops']
    pixels, points = n * h * w, 9
    expected = (2 * pixels * c * c  # input_proj, output_proj
                + pixels * c * g * points * 2  # offset
                + pixels * c * g * points  # mask
                + pixels * c * k_dw * k_dw  # depth-wise conv
                + 5 * pixels * c  # LayerNorm (mmengine's rule: 5 per element with affine)
                + 5 * pixels * g * points * (c // g))  # the core
    assert flops == expected


def test_traced_graph_runs_like_the_eager_module():
    """The pytorch backend is one node in a jit trace; the traced module still computes
    the same values and gradients."""
    torch.manual_seed(0)
    module = DCNv3(channels=8, group=2, backend='pytorch')
    nn.init.normal_(module.offset.weight, std=0.5)
    x = torch.randn(2, 5, 4, 8, requires_grad=True)
    traced = torch.jit.trace(module, (x, ), check_trace=False)
    kinds = [node.kind() for node in traced.inlined_graph.nodes()]
    assert kinds.count('m3i_mm::dcnv3_forward') == 1 and 'aten::embedding_bag' not in kinds
    out_traced, out = traced(x), module(x)
    torch.testing.assert_close(out_traced, out)
    grad_traced = torch.autograd.grad(out_traced.square().sum(), x)[0]
    grad = torch.autograd.grad(out.square().sum(), x)[0]
    torch.testing.assert_close(grad_traced, grad)
