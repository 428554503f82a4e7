"""The EMA target encoder gives deterministic targets in train mode, whatever the online
model's stochastic depth and dropout (SiameseIM builds its momentum encoder without drop
path; the teachers of EMA-target methods are deterministic)."""
import torch
import torch.nn as nn

import pytest

from m3i_mm.models.selfsup.m3i import is_stochastic_layer, stochastic_layers_off
from tests.models.selfsup.m3i_fixtures import build_tiny, photo_batch

SIAMESEIM = 'special_cases/m3i-siameseim_internimage-t_16xb128-100k_in1k.py'


def drop_path_model():
    """SiameseIM's special case, tiny, with stochastic depth 0.5 and dropout 0.2 on."""
    model = build_tiny(SIAMESEIM, backbone=dict(drop_path_rate=0.5, drop_rate=0.2))
    model.train()
    data = model.data_preprocessor(photo_batch(), True)
    return model, data['inputs'][:, 1]


def test_target_tokens_are_deterministic_in_train_mode_with_drop_path():
    model, views = drop_path_model()
    target = model.target_encoder.module
    stochastic = [m for m in target.modules() if is_stochastic_layer(m)]
    assert any(getattr(m, 'drop_prob', 0) > 0 for m in stochastic)  # drop path is on
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in stochastic)  # dropout too
    assert all(m.training for m in stochastic)

    first, second = model.target_tokens(views), model.target_tokens(views)
    assert torch.equal(first, second)
    # the same as the target encoder in eval mode (it has no batch-statistics layers)
    target.eval()
    torch.testing.assert_close(model.target_tokens(views), first, rtol=0, atol=0)
    target.train()
    # the layers are left in train mode, and a plain train-mode pass is stochastic: the test
    # would see a target encoder that ran its drop path
    assert all(m.training for m in stochastic)
    with torch.no_grad():
        plain = [target[1](target[0](views)) for _ in range(2)]
    assert not torch.equal(plain[0], plain[1])
    # the online encoder keeps its stochastic depth
    with torch.no_grad():
        online = [model.encode(views)[0] for _ in range(2)]
    assert not torch.equal(online[0], online[1])


def test_stochastic_layers_are_recognised_by_type_and_name():
    from mmcv.cnn.bricks import DropPath as MMCVDropPath

    class DropPath(nn.Identity):  # another library's stochastic depth (e.g. timm's)
        pass

    for layer in (nn.Dropout(0.1), nn.Dropout2d(0.1), nn.AlphaDropout(0.1), DropPath(),
                  MMCVDropPath(0.1)):
        assert is_stochastic_layer(layer), layer
    for layer in (nn.LayerNorm(4), nn.BatchNorm2d(4), nn.Linear(2, 2), nn.Identity()):
        assert not is_stochastic_layer(layer), layer


def test_a_failing_target_pass_leaves_the_layers_in_train_mode():
    model, views = drop_path_model()
    target = model.target_encoder.module
    stochastic = [m for m in target.modules() if is_stochastic_layer(m)]

    def broken(*args, **kwargs):
        assert not any(m.training for m in stochastic)  # off during the pass
        raise RuntimeError('out of memory (simulated)')

    target[0].forward = broken
    with pytest.raises(RuntimeError, match='simulated'):
        model.target_tokens(views)
    assert stochastic and all(m.training for m in stochastic)
    # layers already in eval mode are not switched on by the restore
    stochastic[0].eval()
    with stochastic_layers_off(target):
        pass
    assert not stochastic[0].training and all(m.training for m in stochastic[1:])
