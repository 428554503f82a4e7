"""tools/model_converters/m3i_to_backbone.py: EMA or online backbone of an M3I checkpoint,
loadable by downstream configs through ``init_cfg=dict(type='Pretrained', prefix='backbone.')``."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.registry import init_default_scope

from m3i_mm.zoo import ConverterError, extract_m3i_backbone
from tests.conftest import run_tool
from tests.models.selfsup.m3i_fixtures import TINY_ARCH, build_tiny

FULL = 'm3i_internimage-t_16xb128-100k_in1k-cc12m.py'
TOOL = 'tools/model_converters/m3i_to_backbone.py'


@pytest.fixture(scope='module')
def m3i_checkpoint(tmp_path_factory):
    """A saved M3I training checkpoint whose EMA and online backbones differ."""
    from mmengine.logging import MessageHub
    MessageHub.get_current_instance().update_info('max_iters', 100)  # cosine EMA schedule
    model = build_tiny(FULL)
    online = torch.nn.Sequential(model.backbone, model.neck)
    model.target_encoder.update_parameters(online)  # the first update copies (as in training)
    with torch.no_grad():  # an "optimiser step" on the online weights, then an EMA update
        for param in model.backbone.parameters():
            param.add_(0.1 * torch.randn_like(param))
    model.target_encoder.update_parameters(online)
    path = str(tmp_path_factory.mktemp('m3i') / 'iter_10.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(iter=10, seed=0)), path)
    return path, model


def tiny_backbone(checkpoint: str):
    from m3i_mm.models import InternImage
    init_default_scope('mmpretrain')
    backbone = InternImage(arch=copy.deepcopy(TINY_ARCH), out_indices=(2, 3),
                           init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                                         prefix='backbone.'))
    backbone.init_weights()
    return backbone


@pytest.mark.parametrize('weights', ['ema', 'online'])
def test_extracted_backbone_loads_through_pretrained_init_cfg(m3i_checkpoint, tmp_path, weights):
    src, model = m3i_checkpoint
    out = str(tmp_path / 'backbone.pth')
    res = run_tool([TOOL, src, out, '--weights', weights], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert f'({weights} weights)' in res.stdout
    source = model.target_encoder.module[0] if weights == 'ema' else model.backbone
    loaded = tiny_backbone(out)
    expected = {k: v for k, v in source.state_dict().items() if k != 'mask_token'}
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def test_ema_and_online_weights_differ_and_auto_picks_ema(m3i_checkpoint):
    src, _ = m3i_checkpoint
    checkpoint = torch.load(src, weights_only=True)
    ema = extract_m3i_backbone(checkpoint, 'ema')['state_dict']
    online = extract_m3i_backbone(checkpoint, 'online')['state_dict']
    auto = extract_m3i_backbone(checkpoint, 'auto')
    assert auto['meta']['m3i_backbone']['weights'] == 'ema' and auto['meta']['iter'] == 10
    assert set(ema) == set(online) and all(k.startswith('backbone.') for k in ema)
    assert 'backbone.mask_token' not in ema
    assert any(not torch.equal(ema[k], online[k]) for k in ema)


def test_clear_errors(tmp_path):
    model = build_tiny('special_cases/m3i-supervised_internimage-t_16xb128-100k_in1k.py')
    assert not model.uses_ema  # the supervised special case has no EMA target encoder
    checkpoint = dict(state_dict=model.state_dict())
    with pytest.raises(ConverterError, match='no EMA weights'):
        extract_m3i_backbone(checkpoint, 'ema')
    assert extract_m3i_backbone(checkpoint)['meta']['m3i_backbone']['weights'] == 'online'
    with pytest.raises(ConverterError, match='is it an M3I pre-training checkpoint'):
        extract_m3i_backbone(dict(state_dict={'head.fc.weight': torch.zeros(2)}))
    with pytest.raises(ConverterError, match="weights must be"):
        extract_m3i_backbone(checkpoint, 'best')
    res = run_tool([TOOL, str(tmp_path / 'missing.pth'), str(tmp_path / 'out.pth')],
                   cwd=str(tmp_path))
    assert res.returncode == 2 and 'checkpoint not found' in res.stderr
    assert not osp.exists(tmp_path / 'out.pth')
