"""tools/model_converters/publish_model.py on a real checkpoint of a tiny Runner run with EMA."""
import datetime
import hashlib
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.runner import Runner
from sklearn.datasets import load_digits
from torch import nn

from m3i_mm.zoo import load_checkpoint_file
from tests.conftest import REPO, run_tool

SCRIPT = 'tools/model_converters/publish_model.py'


class Digits(torch.utils.data.Dataset):
    """scikit-learn's bundled 8x8 digits as flat vectors."""

    def __init__(self):
        digits = load_digits()
        self.x = torch.tensor(digits.data, dtype=torch.float32) / 16
        self.y = torch.tensor(digits.target)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


class DigitsClassifier(BaseModel):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, inputs, labels, mode='loss'):
        logits = self.fc(self.norm(inputs))
        return {'loss': F.cross_entropy(logits, labels)} if mode == 'loss' else logits


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Six SGD iterations with an EMAHook; the checkpoint and the in-memory weights."""
    work_dir = tmp_path_factory.mktemp('publish')
    runner = Runner(
        model=DigitsClassifier(), work_dir=str(work_dir), experiment_name='publish_test',
        train_dataloader=dict(dataset=Digits(), batch_size=32, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', by_epoch=False, milestones=[4]),
        train_cfg=dict(by_epoch=False, max_iters=6),
        custom_hooks=[dict(type='EMAHook', momentum=0.3)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=6, by_epoch=False)),
        randomness=dict(seed=0))
    runner.train()
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
    online = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    ema = {k: v.detach().clone() for k, v in ema_hook.ema_model.module.state_dict().items()}
    return str(work_dir / 'iter_6.pth'), online, ema


def load_script():
    spec = importlib.util.spec_from_file_location('publish_model', osp.join(REPO, SCRIPT))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def only_release(out_dir, name) -> str:
    files = os.listdir(out_dir)
    assert len(files) == 1, files  # no temporary file left behind
    match = re.match(rf'^{name}_(\d{{8}})-([0-9a-f]{{8}})\.pth$', files[0])
    assert match, files[0]
    path = osp.join(out_dir, files[0])
    with open(path, 'rb') as f:
        assert match.group(2) == hashlib.sha256(f.read()).hexdigest()[:8]
    today = datetime.date.today()
    assert match.group(1) in {d.strftime('%Y%m%d') for d in (today, today - datetime.timedelta(1))}
    return path


def assert_weights(actual: dict, expected: dict):
    assert set(actual) == set(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def test_source_checkpoint_has_what_must_be_dropped(trained):
    ckpt = load_checkpoint_file(trained[0])  # mmengine checkpoints need m3i_mm's allow-list
    assert {'optimizer', 'param_schedulers', 'message_hub', 'ema_state_dict'} <= set(ckpt)
    assert 'steps' in ckpt['ema_state_dict']


def test_ema_weights(trained, tmp_path):
    ckpt_path, online, ema = trained
    assert any(not torch.equal(online[k], ema[k]) for k in online)  # the test can tell them apart
    out_dir = str(tmp_path / 'ema')
    assert load_script().main([ckpt_path, out_dir, '--name', 'digits-ema', '--weights', 'ema']) == 0
    release = torch.load(only_release(out_dir, 'digits-ema'), weights_only=True)
    assert set(release) == {'meta', 'state_dict'}
    assert_weights(release['state_dict'], ema)
    assert release['meta']['iter'] == 6 and 'hook_msgs' not in release['meta']
    assert release['meta']['publish']['weights'] == 'ema'


def test_auto_takes_ema_when_present(trained, tmp_path):
    ckpt_path, _, ema = trained
    out_dir = str(tmp_path / 'auto')
    assert load_script().main([ckpt_path, out_dir, '--name', 'digits']) == 0
    assert_weights(torch.load(only_release(out_dir, 'digits'), weights_only=True)['state_dict'],
                   ema)


def test_online_weights_via_the_command_line(trained, tmp_path):
    """Run as users do; the release then loads with plain torch, without m3i_mm."""
    ckpt_path, online, _ = trained
    out_dir = str(tmp_path / 'online')
    res = run_tool([SCRIPT, ckpt_path, out_dir, '--name', 'digits-online', '--weights',
                    'online'], cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    path = only_release(out_dir, 'digits-online')
    assert 'publishing online weights' in res.stdout
    code = ('import sys, torch; ckpt = torch.load(sys.argv[1], weights_only=True); '
            'assert "m3i_mm" not in sys.modules; print(sorted(ckpt["meta"]))')
    plain = subprocess.run([sys.executable, '-c', code, path], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert_weights(torch.load(path, weights_only=True)['state_dict'], online)


def test_ema_asked_but_absent(trained, tmp_path, capsys):
    ckpt = load_checkpoint_file(trained[0])
    del ckpt['ema_state_dict']
    no_ema = str(tmp_path / 'no_ema.pth')
    torch.save(ckpt, no_ema)
    out_dir = tmp_path / 'out'
    assert load_script().main([no_ema, str(out_dir), '--name', 'x', '--weights', 'ema']) == 1
    assert 'has no "ema_state_dict"' in capsys.readouterr().err
    assert not out_dir.exists()


def test_release_is_readable_by_others(trained, tmp_path):
    """Releases were written with mkstemp's 0o600: only their owner could read them."""
    old = os.umask(0o022)
    try:
        assert load_script().main([trained[0], str(tmp_path), '--name', 'shared']) == 0
    finally:
        os.umask(old)
    assert os.stat(only_release(str(tmp_path), 'shared')).st_mode & 0o777 == 0o644


def test_empty_state_dict_is_refused(trained, tmp_path, capsys):
    """An empty state dict was published with exit status 0."""
    ckpt = load_checkpoint_file(trained[0])
    ckpt['state_dict'] = {}
    ckpt.pop('ema_state_dict')
    empty = str(tmp_path / 'empty.pth')
    torch.save(ckpt, empty)
    out_dir = tmp_path / 'out'
    assert load_script().main([empty, str(out_dir), '--name', 'x']) == 1
    assert 'its "state_dict" is empty: there are no weights to publish' in capsys.readouterr().err
    assert not out_dir.exists()
