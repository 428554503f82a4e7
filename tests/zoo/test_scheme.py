"""``m3i://NAME`` through mmengine's checkpoint loading, and safe (weights_only) loading."""
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from mmengine.runner import CheckpointLoader, load_checkpoint

from m3i_mm.zoo import UnsafeCheckpointError, ZooError, load_checkpoint_file
from tests.conftest import REPO
from tests.zoo.conftest import (TinyNet, checkpoint_bytes, model_entry, sha256_hex,
                                tiny_state_dict)


def assert_same_weights(model: torch.nn.Module, expected: dict):
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


@pytest.fixture
def official_entry(server, write_index):
    """An entry whose file looks like an official one: weights under 'model', 'module.' keys."""
    weights = tiny_state_dict(seed=3)
    data = checkpoint_bytes({'model': OrderedDict(('module.' + k, v) for k, v in weights.items()),
                             'epoch': 299})
    url = server.serve('/hub/tiny_official.pth', data)
    write_index([model_entry('tiny_official', url, sha256_hex(data))])
    return weights


def test_scheme_is_registered_with_mmengine():
    assert CheckpointLoader._get_checkpoint_loader('m3i://anything').__name__ == (
        'load_from_m3i_zoo')


def test_load_checkpoint_with_the_scheme_converts_and_loads(official_entry):
    torch.manual_seed(100)
    model = TinyNet()
    assert not torch.equal(model.fc.weight, official_entry['fc.weight'])
    load_checkpoint(model, 'm3i://tiny_official', map_location='cpu', strict=True)
    assert_same_weights(model, official_entry)


def test_pretrained_init_cfg_with_the_scheme(official_entry):
    torch.manual_seed(101)
    model = TinyNet(init_cfg=dict(type='Pretrained', checkpoint='m3i://tiny_official'))
    assert not torch.equal(model.fc.weight, official_entry['fc.weight'])
    model.init_weights()
    assert_same_weights(model, official_entry)


def test_pretrained_init_cfg_with_prefix(server, write_index):
    """mmdet/mmseg style: the file holds a whole detector; only 'backbone.' is taken."""
    weights = tiny_state_dict(seed=4)
    detector = {**{'backbone.' + k: v for k, v in weights.items()},
                'neck.lateral.weight': torch.ones(2)}
    data = checkpoint_bytes({'state_dict': detector, 'meta': {'epoch': 12}})
    url = server.serve('/hub/detector.pth', data)
    write_index([model_entry('tiny_detector', url, sha256_hex(data), converter=None)])
    torch.manual_seed(102)
    model = TinyNet(init_cfg=dict(type='Pretrained', checkpoint='m3i://tiny_detector',
                                  prefix='backbone.'))
    assert not torch.equal(model.fc.weight, weights['fc.weight'])
    model.init_weights()
    assert_same_weights(model, weights)


class Payload:
    """A class no allow-list includes."""


def test_checkpoint_with_unknown_globals_is_refused(server, write_index):
    data = checkpoint_bytes({'model': tiny_state_dict(seed=5), 'extra': Payload()})
    url = server.serve('/hub/evil.pth', data)
    write_index([model_entry('tiny_evil', url, sha256_hex(data))])
    with pytest.raises(UnsafeCheckpointError,
                       match=r'pickles .*tests\.zoo\.test_scheme\.Payload, which the '
                             r'weights_only allow-list') as raised:
        load_checkpoint(TinyNet(), 'm3i://tiny_evil')
    assert '\n' not in str(raised.value) and '\t' not in str(raised.value)  # one line


def test_mmengine_checkpoints_load_safely(tmp_path):
    """The loader keeps m3i_mm's allow-list: mmengine's message hub objects are fine."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('zoo_scheme_test')
    hub.update_scalar('train/loss', 0.5)
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'message_hub': hub.state_dict()}, path)
    loaded = load_checkpoint_file(str(path))
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 0.5


def test_entry_without_converter_must_hold_a_dict(server, write_index):
    data = checkpoint_bytes([torch.ones(2)])
    url = server.serve('/hub/list.pth', data)
    write_index([model_entry('tiny_list', url, sha256_hex(data), converter=None)])
    with pytest.raises(ZooError, match="holds a list, not a dict of tensors; name a Converter"):
        load_checkpoint(TinyNet(), 'm3i://tiny_list')


def test_unknown_name_through_the_scheme(write_index):
    write_index([model_entry('tiny_official', 'http://127.0.0.1:9/x.pth')])
    with pytest.raises(ZooError, match="no model-zoo entry named 'tiny_oficial'.*"
                                       'Did you mean: tiny_official'):
        load_checkpoint(TinyNet(), 'm3i://tiny_oficial')


def test_import_stays_light_and_registers_lazily():
    """``import m3i_mm`` does not import mmengine.runner, yet m3i:// works once it is."""
    code = ('import sys, m3i_mm\n'
            'assert "mmengine.runner" not in sys.modules, "m3i_mm imported mmengine.runner"\n'
            'from mmengine.runner import CheckpointLoader\n'
            'print(CheckpointLoader._get_checkpoint_loader("m3i://x").__name__)\n')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == 'load_from_m3i_zoo'
