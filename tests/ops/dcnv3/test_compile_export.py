"""DCNv3 under torch.compile (no graph breaks), torch.export and ONNX (onnxruntime)."""
import os

import numpy as np
import pytest
import torch

from m3i_mm.models.layers import DCNv3
from m3i_mm.ops.dcnv3.function import triton_available

BACKENDS = ['pytorch'] + (['triton'] if triton_available() and (
    torch.cuda.is_available() or os.environ.get('TRITON_INTERPRET') == '1') else [])


def random_module(backend: str, channels: int = 8, group: int = 2) -> DCNv3:
    torch.manual_seed(0)
    module = DCNv3(channels=channels, group=group, backend=backend)
    for p in module.parameters():  # non-zero offsets/masks, unlike the init
        torch.nn.init.normal_(p, std=0.2)
    return module


@pytest.mark.parametrize('backend', BACKENDS)
def test_compile_fullgraph_matches_eager(backend):
    import torch._dynamo
    module = random_module(backend)
    x = torch.randn(2, 5, 6, 8, requires_grad=True)
    ref = module(x)
    ref.square().sum().backward()
    grad_ref = x.grad.clone()
    x.grad = None
    torch._dynamo.reset()
    compiled = torch.compile(module, backend='aot_eager', fullgraph=True)  # fails on a break
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, grad_ref)


@pytest.mark.parametrize('backend', BACKENDS)
def test_torch_export(backend):
    module = random_module(backend).eval()
    x = torch.randn(1, 6, 4, 8)
    program = torch.export.export(module, (x, ))
    targets = {str(node.target) for node in program.graph.nodes}
    if backend == 'pytorch':
        assert any('embedding_bag' in t for t in targets)
    else:
        assert 'm3i_mm.dcnv3_forward.default' in targets
    torch.testing.assert_close(program.module()(x), module(x))


@pytest.mark.parametrize('dynamo', [True, False], ids=['dynamo', 'torchscript'])
def test_onnx_export_runs_in_onnxruntime(tmp_path, dynamo):
    import onnxruntime as ort  # a test requirement (requirements/tests.txt)
    module = random_module('pytorch', channels=16).eval()
    x = torch.randn(1, 9, 7, 16)
    with torch.no_grad():
        ref = module(x).numpy()
    path = str(tmp_path / 'dcnv3.onnx')
    torch.onnx.export(module, (x, ), path, dynamo=dynamo, opset_version=18)
    session = ort.InferenceSession(path)
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
