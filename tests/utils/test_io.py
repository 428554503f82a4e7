"""m3i_mm.utils.io: atomic, durable writes and the checks of checkpoint files."""
import os
import os.path as osp
import stat

import pytest
import torch

from m3i_mm.utils import io as m3i_io
from m3i_mm.utils.io import (atomic_torch_save, atomic_write, atomic_write_text, commit_path,
                             remove_stale_temporaries, temporary_path,
                             unreadable_checkpoint_reason)


@pytest.fixture
def synced(monkeypatch):
    """The paths (files and directories) whose descriptors were fsync-ed."""
    paths = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: paths.append(os.readlink(
        f'/proc/self/fd/{fd}')) or real_fsync(fd))
    return paths


def test_atomic_write_syncs_file_and_directory_and_keeps_default_permissions(tmp_path, synced):
    target = tmp_path / 'out' / 'a.txt'
    old_umask = os.umask(0o022)
    try:
        atomic_write_text(str(target), 'hello')
    finally:
        os.umask(old_umask)
    assert target.read_text() == 'hello'
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644  # not mkstemp's 0o600
    assert len(synced) == 2 and synced[1] == str(target.parent)  # the data, then the rename
    tmp = osp.basename(synced[0])
    assert osp.dirname(synced[0]) == str(target.parent) and tmp.startswith('.a.txt.tmp-')
    assert os.listdir(target.parent) == ['a.txt']


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / 'a.pth'
    atomic_torch_save({'x': torch.ones(2)}, str(target))
    with pytest.raises(RuntimeError, match='disk full'):
        with atomic_write(str(target)) as f:
            f.write(b'partial')
            raise RuntimeError('disk full')
    assert torch.equal(torch.load(target, weights_only=True)['x'], torch.ones(2))
    assert os.listdir(tmp_path) == ['a.pth']
    with pytest.raises(ValueError, match='whole files'):
        with atomic_write(str(target), mode='ab'):
            pass


def test_commit_replaces_a_directory_and_stale_temporaries_are_removed(tmp_path):
    final = tmp_path / 'ckpt'
    final.mkdir()
    (final / 'old').write_text('old')
    tmp = temporary_path(str(final))
    os.makedirs(tmp)
    with open(osp.join(tmp, 'new'), 'w') as f:
        f.write('new')
    commit_path(tmp, str(final))
    assert os.listdir(final) == ['new'] and sorted(os.listdir(tmp_path)) == ['ckpt']
    # a killed writer (another pid) left these; the current process's own are kept
    for name in ('.iter_4.pth.tmp-99999999-0a1b2c3d', '.ckpt.tmp-99999999-0a1b2c3d.old',
                 '.x.tmp-1'):
        (tmp_path / name).write_text('')
    # killed between commit_path's two renames: the moved-aside directory is all there is
    (tmp_path / '.gone.tmp-99999999-0a1b2c3d.old').mkdir()
    (tmp_path / '.gone.tmp-99999999-0a1b2c3d.old' / 'weights').write_text('old')
    mine = temporary_path(str(tmp_path / 'y'))
    assert mine != temporary_path(str(tmp_path / 'y'))  # fresh per call: pids get reused
    open(mine, 'w').close()
    (tmp_path / '.hidden').write_text('')
    removed = remove_stale_temporaries(str(tmp_path))
    assert sorted(removed) == ['.ckpt.tmp-99999999-0a1b2c3d.old',
                               '.gone.tmp-99999999-0a1b2c3d.old',
                               '.iter_4.pth.tmp-99999999-0a1b2c3d', '.x.tmp-1']
    assert sorted(os.listdir(tmp_path)) == sorted(['.hidden', 'ckpt', 'gone', osp.basename(mine)])
    assert (tmp_path / 'gone' / 'weights').read_text() == 'old'
    # keep_pid=-1 (a run that has not started writing): this process's own go too
    assert remove_stale_temporaries(str(tmp_path), keep_pid=-1) == [osp.basename(mine)]


def test_unreadable_checkpoint_reasons(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.zeros(3)}, good)
    assert unreadable_checkpoint_reason(str(good)) is None
    legacy = tmp_path / 'legacy.pth'
    torch.save({'w': torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    assert unreadable_checkpoint_reason(str(legacy)) is None
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    assert 'is empty (0 bytes)' in unreadable_checkpoint_reason(str(empty))
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    assert 'truncated or damaged zip archive' in unreadable_checkpoint_reason(str(cut))
    text = tmp_path / 'notes.pth'
    text.write_text('epoch 12: loss 0.3\n')
    assert 'is not a PyTorch checkpoint' in unreadable_checkpoint_reason(str(text))
    assert unreadable_checkpoint_reason(str(tmp_path / 'nope.pth')) == 'does not exist'
    assert 'is a directory' in unreadable_checkpoint_reason(str(tmp_path))


def test_the_fsdp2_strategy_and_converters_use_this_writer():
    """One implementation: nobody else renames temporaries into place."""
    from m3i_mm.engine.strategies import fsdp2
    assert fsdp2.atomic_torch_save is m3i_io.atomic_torch_save
    assert fsdp2.commit_path is m3i_io.commit_path
