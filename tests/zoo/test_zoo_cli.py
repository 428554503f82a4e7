"""tools/zoo.py list | download | verify, run as users run it (and in-process for errors)."""
import importlib.util
import os.path as osp

import pytest

from tests.conftest import REPO, run_tool
from tests.zoo.conftest import checkpoint_bytes, model_entry, sha256_hex, tiny_state_dict


def load_cli():
    spec = importlib.util.spec_from_file_location('zoo_cli', osp.join(REPO, 'tools', 'zoo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def served_entries(server, write_index):
    """A pinned and an unpinned entry whose URLs only work through the server as a mirror."""
    pinned = checkpoint_bytes({'model': tiny_state_dict(seed=7)})
    unpinned = checkpoint_bytes({'model': tiny_state_dict(seed=8)})
    server.serve('/mirror/main/cli_pinned.pth', pinned)
    server.serve('/mirror/main/cli_unpinned.pth', unpinned)
    write_index([model_entry('cli_pinned', 'http://127.0.0.1:9/main/cli_pinned.pth',
                             sha256_hex(pinned)),
                 model_entry('cli_unpinned', 'http://127.0.0.1:9/main/cli_unpinned.pth')])
    return pinned, unpinned


def check_ok(res):
    assert res.returncode == 0, f'exit {res.returncode}\n{res.stdout}\n{res.stderr}'


def test_list_download_verify(server, served_entries, zoo_home, tmp_path):
    pinned, _ = served_entries
    res = run_tool(['tools/zoo.py', 'download', 'cli_pinned', '--mirror',
                    server.base + '/mirror'], cwd=str(tmp_path))
    check_ok(res)
    path = res.stdout.strip().splitlines()[-1]
    assert path == str(zoo_home / 'checkpoints' / 'cli_pinned.pth')
    with open(path, 'rb') as f:
        assert f.read() == pinned

    res = run_tool(['tools/zoo.py', 'verify', 'cli_pinned'], cwd=str(tmp_path))
    check_ok(res)
    assert f'cli_pinned: OK, sha256 {sha256_hex(pinned)} matches the model index' in res.stdout

    res = run_tool(['tools/zoo.py', 'list'], cwd=str(tmp_path))
    check_ok(res)
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:]}
    assert rows['cli_pinned'][-2:] == ['pinned', 'yes']
    assert rows['cli_unpinned'][-2:] == ['unpinned', 'no']
    assert rows['internimage_t_1k_224'] == ['internimage_t_1k_224', 'Image', 'Classification',
                                            '224', 'Top', '1', 'Accuracy', '83.5', 'unpinned',
                                            'no']
    lines = {line.split()[0]: line for line in res.stdout.splitlines()[1:]}
    assert 'box AP 64.5, box AP (TTA) 65.0' in lines['dino_4scale_cbinternimage_h_objects365_coco']
    assert rows['internimage_h_jointto22k_384'][1:3] == ['Pre-training', '384']


def test_verify_reports_unpinned_and_mismatch(server, served_entries, zoo_home, capsys):
    _, unpinned = served_entries
    cli = load_cli()
    assert cli.main(['verify', 'cli_unpinned']) == 1
    assert 'cli_unpinned: not cached' in capsys.readouterr().err

    mirror = ['--mirror', server.base + '/mirror']
    assert cli.main(['download', 'cli_unpinned', *mirror]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert cli.main(['verify', 'cli_unpinned']) == 0
    assert (f'cli_unpinned: OK (unpinned), sha256 {sha256_hex(unpinned)} matches the hash '
            'recorded at the first download') in capsys.readouterr().out

    with open(path, 'r+b') as f:
        f.seek(1000)
        f.write(b'tampered')
    assert cli.main(['verify', 'cli_unpinned']) == 1
    assert 'cli_unpinned: MISMATCH' in capsys.readouterr().err


def test_unknown_name_suggests(served_entries, capsys):
    assert load_cli().main(['download', 'cli_pined']) == 1
    err = capsys.readouterr().err
    assert "no model-zoo entry named 'cli_pined'" in err and "Did you mean: cli_pinned" in err


def test_trust_records_a_file_put_into_the_cache_by_hand(served_entries, zoo_home, capsys):
    """An unrecorded file is refused until it is downloaded again or explicitly trusted."""
    _, unpinned = served_entries
    cli = load_cli()
    path = zoo_home / 'checkpoints' / 'cli_unpinned.pth'
    path.parent.mkdir(parents=True)
    path.write_bytes(unpinned)  # copied in by hand, without its .sha256 record
    assert cli.main(['verify', 'cli_unpinned']) == 1
    assert 'cli_unpinned: UNVERIFIED' in capsys.readouterr().err
    assert cli.main(['trust', 'cli_unpinned']) == 0
    assert f'recorded sha256 {sha256_hex(unpinned)} now, as asked' in capsys.readouterr().out
    assert cli.main(['verify', 'cli_unpinned']) == 0
