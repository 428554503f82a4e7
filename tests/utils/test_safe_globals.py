"""mmengine checkpoints load with torch.load(weights_only=True) once m3i_mm is imported."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import m3i_mm  # noqa: F401


def make_checkpoint(path):
    hub = MessageHub.get_instance('safe_globals_test')
    for i in range(5):
        hub.update_scalar('train/loss', np.float64(1.0 / (i + 1)))
    hub.update_info('iter', 5)
    ckpt = dict(meta=dict(iter=5, seed=np.int64(3)), state_dict=dict(w=torch.ones(2)),
                message_hub=hub.state_dict())
    torch.save(ckpt, path)
    return ckpt


def test_message_hub_checkpoint_loads_weights_only(tmp_path):
    path = str(tmp_path / 'ckpt.pth')
    make_checkpoint(path)
    loaded = torch.load(path, weights_only=True)
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer)
    assert buf.mean(5) == pytest.approx(np.mean([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]))
    assert buf.min() == pytest.approx(0.2) and loaded['meta']['seed'] == 3


def test_without_the_allow_list_torch_refuses(tmp_path):
    """The allow-list is what makes it work (a fresh interpreter without m3i_mm fails)."""
    path = str(tmp_path / 'ckpt.pth')
    make_checkpoint(path)
    code = f'import torch; torch.load({path!r}, weights_only=True)'
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert res.returncode != 0 and 'Weights only load failed' in res.stderr


class _Exploit:
    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


class _ExploitOther:
    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')  # an allowed class, but not HistoryBuffer


@pytest.mark.parametrize('payload', [_Exploit(), _ExploitOther()])
def test_getattr_stays_restricted(tmp_path, payload):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        torch.save({'x': payload}, f)
    with pytest.raises(TypeError, match='is not allowed; only public methods of mmengine'):
        torch.load(str(path), weights_only=True)
