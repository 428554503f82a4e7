"""Downloads against a loopback HTTP server serving real checkpoint files."""
import errno
import hashlib
import importlib.util
import json
import multiprocessing
import os
import os.path as osp
import queue as queue_module
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from m3i_mm.zoo import (ChecksumMismatchError, DownloadError, OfflineError, ZooEntry,
                        apply_mirror, cache_path, download_checkpoint, get_entry)
from tests.conftest import REPO
from tests.zoo import _workers
from tests.zoo.conftest import (checkpoint_bytes, model_entry, sha256_hex, tiny_state_dict)

FAST = dict(progress=False, retry_delay=0.0)


@pytest.fixture(scope='module')
def payload():
    """A real checkpoint in the official container layout, and its sha256."""
    data = checkpoint_bytes({'model': tiny_state_dict(seed=0)})
    assert len(data) > 200_000  # big enough that a half-way cut is a real interruption
    return data, sha256_hex(data)


def cache_files(cache_dir) -> list:
    return sorted(os.listdir(cache_dir)) if osp.isdir(cache_dir) else []


def test_good_download_verifies_and_is_reused(server, write_index, zoo_home, payload):
    data, sha = payload
    url = server.serve('/ckpt/good.pth', data)
    write_index([model_entry('good', url, sha)])
    path = download_checkpoint('good', **FAST)
    assert path == str(zoo_home / 'checkpoints' / 'good.pth')
    with open(path, 'rb') as f:
        assert f.read() == data
    with open(path + '.sha256') as f:
        assert f.read() == f'{sha}  good.pth\n'  # sha256sum format
    assert download_checkpoint('good', **FAST) == path
    assert len(server.requests_for('/ckpt/good.pth')) == 1  # the second call used the cache
    assert cache_files(zoo_home / 'checkpoints') == ['good.pth', 'good.pth.lock',
                                                     'good.pth.sha256']


def test_truncated_response_fails_and_leaves_no_final_file(server, write_index, payload):
    data, sha = payload
    url = server.serve('/ckpt/cut.pth', data, mode='truncate')
    write_index([model_entry('cut', url, sha)])
    with pytest.raises(DownloadError, match=rf'truncated: the connection closed after '
                                            rf'{len(data) // 2} of {len(data)} bytes'):
        download_checkpoint('cut', retries=0, **FAST)
    path = cache_path(get_entry('cut'))
    assert not osp.exists(path)
    assert osp.getsize(path + '.part') == len(data) // 2  # kept for a later resume


def test_corrupted_bytes_are_refused_and_deleted(server, write_index, payload):
    data, sha = payload
    url = server.serve('/ckpt/bad.pth', data, mode='corrupt')
    write_index([model_entry('bad', url, sha)])
    with pytest.raises(ChecksumMismatchError, match=f'pins {sha}; refusing it'):
        download_checkpoint('bad', **FAST)
    path = cache_path(get_entry('bad'))
    assert cache_files(osp.dirname(path)) == ['bad.pth.lock']  # no final file, no .part


def test_404_fails_clearly_and_leaves_nothing(server, write_index, payload):
    url = server.base + '/ckpt/missing.pth'
    write_index([model_entry('missing', url, payload[1])])
    with pytest.raises(DownloadError, match=r'HTTP 404 \(Not Found\) for .*/ckpt/missing.pth'):
        download_checkpoint('missing', **FAST)
    assert cache_files(osp.dirname(cache_path(get_entry('missing')))) == ['missing.pth.lock']
    assert len(server.requests_for('/ckpt/missing.pth')) == 1  # a 404 is not retried


def test_interrupted_download_resumes_with_a_range_request(server, write_index, payload):
    data, sha = payload
    url = server.serve('/ckpt/flaky.pth', data, mode='die_once')
    write_index([model_entry('flaky', url, sha)])
    with pytest.raises(DownloadError, match='kept at .*flaky.pth.part; run the download again'):
        download_checkpoint('flaky', retries=0, **FAST)
    path = download_checkpoint('flaky', retries=0, **FAST)
    first, second = server.requests_for('/ckpt/flaky.pth')
    assert first[1] is None
    assert second[1] == f'bytes={len(data) // 2}-'  # only the missing half was asked for
    assert second[2] == '"%s"' % hashlib.sha1(data).hexdigest()  # If-Range validator
    with open(path, 'rb') as f:
        assert f.read() == data
    assert not osp.exists(path + '.part')


def test_retry_within_one_call_resumes(server, write_index, payload):
    data, sha = payload
    url = server.serve('/ckpt/flaky2.pth', data, mode='die_once')
    write_index([model_entry('flaky2', url, sha)])
    path = download_checkpoint('flaky2', retries=1, **FAST)
    assert [r[1] for r in server.requests_for('/ckpt/flaky2.pth')] == [
        None, f'bytes={len(data) // 2}-']
    with open(path, 'rb') as f:
        assert f.read() == data


def test_partial_file_of_an_older_version_is_not_spliced(server, write_index, payload):
    """The file changed between attempts: If-Range makes the server send it whole."""
    old, _ = payload
    new = checkpoint_bytes({'model': tiny_state_dict(seed=1)})
    assert len(new) == len(old) and new != old
    url = server.serve('/ckpt/moving.pth', old, mode='die_once')
    write_index([model_entry('moving', url)])  # unpinned: only HTTP validators can tell
    with pytest.raises(DownloadError):
        download_checkpoint('moving', retries=0, **FAST)
    server.serve('/ckpt/moving.pth', new)
    path = download_checkpoint('moving', retries=0, **FAST)
    with open(path, 'rb') as f:
        assert f.read() == new


def write_stale_part(path: str, url: str, content: bytes, total=None):
    """A partial download left by an earlier run, without HTTP validators to check it."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path + '.part', 'wb') as f:
        f.write(content)
    with open(path + '.part.json', 'w') as f:
        json.dump({'url': url, 'total': total, 'etag': None, 'last_modified': None}, f)


def test_complete_unverified_part_is_verified_without_the_network(server, write_index, payload):
    data, sha = payload
    url = server.serve('/ckpt/done.pth', data)
    write_index([model_entry('done', url, sha)])
    path = cache_path(get_entry('done'))
    write_stale_part(path, url, data, total=len(data))
    assert download_checkpoint('done', retries=0, **FAST) == path
    assert server.requests == []
    with open(path, 'rb') as f:
        assert f.read() == data


def test_stale_prefix_is_caught_by_the_pin_and_downloaded_again(server, write_index, payload):
    data, sha = payload
    url = server.serve('/ckpt/stale.pth', data)
    write_index([model_entry('stale', url, sha)])
    path = cache_path(get_entry('stale'))
    write_stale_part(path, url, b'\xff' * 1000)  # not a prefix of the file
    assert download_checkpoint('stale', retries=0, **FAST) == path
    assert [r[1] for r in server.requests_for('/ckpt/stale.pth')] == ['bytes=1000-', None]
    with open(path, 'rb') as f:
        assert f.read() == data


def test_part_longer_than_the_file_starts_over(server, write_index, payload):
    data, sha = payload
    url = server.serve('/ckpt/long.pth', data)
    write_index([model_entry('long', url, sha)])
    path = cache_path(get_entry('long'))
    write_stale_part(path, url, b'\x00' * (len(data) + 10))
    assert download_checkpoint('long', retries=0, **FAST) == path  # HTTP 416, then afresh
    assert [r[1] for r in server.requests_for('/ckpt/long.pth')] == [
        f'bytes={len(data) + 10}-', None]
    with open(path, 'rb') as f:
        assert f.read() == data


def test_server_errors_are_retried(server, write_index, payload):
    data, sha = payload
    url = server.serve('/ckpt/busy.pth', data, mode='fail_once')
    write_index([model_entry('busy', url, sha)])
    download_checkpoint('busy', retries=1, **FAST)
    assert len(server.requests_for('/ckpt/busy.pth')) == 2


def test_unpinned_entry_is_recorded_then_checked(server, write_index, payload, caplog):
    data, sha = payload
    url = server.serve('/ckpt/unpinned.pth', data)
    write_index([model_entry('unpinned', url)])
    path = download_checkpoint('unpinned', **FAST)
    with open(path + '.sha256') as f:
        assert f.read().split()[0] == sha  # trust on first use
    with open(path, 'r+b') as f:  # the cached file changes behind our back
        f.seek(100)
        f.write(b'\x00\x01\x02')
    with pytest.raises(ChecksumMismatchError, match=rf'unpinned.pth.sha256 records {sha}'):
        download_checkpoint('unpinned', **FAST)
    assert len(server.requests_for('/ckpt/unpinned.pth')) == 1


def test_force_downloads_again(server, write_index, payload):
    data, sha = payload
    url = server.serve('/ckpt/again.pth', data)
    write_index([model_entry('again', url, sha)])
    path = download_checkpoint('again', **FAST)
    with open(path, 'wb') as f:
        f.write(b'garbage')
    with pytest.raises(ChecksumMismatchError, match='--force'):
        download_checkpoint('again', **FAST)
    assert download_checkpoint('again', force=True, **FAST) == path
    with open(path, 'rb') as f:
        assert f.read() == data


@pytest.mark.parametrize('variable', ['M3I_MM_OFFLINE', 'HF_HUB_OFFLINE'])
def test_offline_mode(server, write_index, payload, monkeypatch, variable):
    data, sha = payload
    url = server.serve('/ckpt/off.pth', data)
    write_index([model_entry('off', url, sha)])
    monkeypatch.setenv(variable, '1')
    expected = cache_path(get_entry('off'))
    with pytest.raises(OfflineError, match=rf"entry 'off' needs the network: it is not cached "
                                           rf'at {expected}\. Download it where the network'):
        download_checkpoint('off', **FAST)
    assert server.requests == []
    monkeypatch.delenv(variable)
    download_checkpoint('off', **FAST)
    monkeypatch.setenv(variable, '1')
    assert download_checkpoint('off', **FAST) == expected  # cached files work offline


def test_apply_mirror_forms():
    url = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/internimage_t_1k_224.pth'
    assert apply_mirror(url, None) == url
    assert apply_mirror(url, 'https://hf-mirror.com') == (
        'https://hf-mirror.com/OpenGVLab/InternImage/resolve/main/internimage_t_1k_224.pth')
    assert apply_mirror(url, 'http://10.0.0.1:8000/hf/') == (
        'http://10.0.0.1:8000/hf/OpenGVLab/InternImage/resolve/main/internimage_t_1k_224.pth')
    prefix = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/=http://m/flat/'
    assert apply_mirror(url, prefix) == 'http://m/flat/internimage_t_1k_224.pth'
    assert apply_mirror('https://example.org/x.pth', prefix) == 'https://example.org/x.pth'
    assert apply_mirror('https://h.org/x.pth?download=true', 'https://m.org') == (
        'https://m.org/x.pth?download=true')
    with pytest.raises(ValueError, match='must be a base URL'):
        apply_mirror(url, 'hf-mirror.com')


@pytest.mark.parametrize('form', ['base', 'prefix'])
def test_mirror_env_redirects_the_download(server, write_index, payload, monkeypatch, form):
    data, sha = payload
    server.serve('/mirror/OpenGVLab/resolve/main/m.pth', data)
    unreachable = 'http://127.0.0.1:9/OpenGVLab/resolve/main/m.pth'  # discard port: refused
    write_index([model_entry('mirrored', unreachable, sha)])
    mirror = (server.base + '/mirror' if form == 'base'
              else f'http://127.0.0.1:9/={server.base}/mirror/')
    monkeypatch.setenv('M3I_MM_ZOO_MIRROR', mirror)
    path = download_checkpoint('mirrored', retries=0, **FAST)
    with open(path, 'rb') as f:
        assert f.read() == data
    assert len(server.requests_for('/mirror/OpenGVLab/resolve/main/m.pth')) == 1


def test_unreachable_host_fails_clearly(write_index, payload):
    write_index([model_entry('nowhere', 'http://127.0.0.1:9/x.pth', payload[1])])
    with pytest.raises(DownloadError, match=r'cannot reach http://127.0.0.1:9/x.pth .*'
                                            r'gave up after 2 attempts'):
        download_checkpoint('nowhere', retries=1, **FAST)
    assert not osp.exists(cache_path(get_entry('nowhere')))


def _results(queue, count):
    results = []
    for _ in range(count):
        try:
            results.append(queue.get(timeout=90))
        except queue_module.Empty:
            pytest.fail(f'only {len(results)} of {count} processes reported: {results}')
    return results


def test_two_processes_download_the_same_file_once(server, tmp_path, payload, zoo_home):
    data, sha = payload
    url = server.serve('/ckpt/shared.pth', data, chunk_delay=0.05)  # ~0.25 s on the wire
    entry = ZooEntry(name='shared', url=url, sha256=sha)
    cache_dir = str(tmp_path / 'cache')
    ctx = multiprocessing.get_context('spawn')
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_workers.download_after_barrier,
                         args=(barrier, queue, entry, cache_dir)) for _ in range(2)]
    for p in procs:
        p.start()
    results = _results(queue, 2)
    for p in procs:
        p.join(timeout=30)
    expected = osp.join(cache_dir, 'shared.pth')
    assert results == [('ok', expected), ('ok', expected)], results
    with open(expected, 'rb') as f:
        assert f.read() == data
    assert len(server.requests_for('/ckpt/shared.pth')) == 1  # the second one waited, reused


def test_distributed_rank0_downloads_others_wait(server, tmp_path, payload, zoo_home):
    data, sha = payload
    good = ZooEntry(name='dist_good', url=server.serve('/ckpt/dist.pth', data, chunk_delay=0.05),
                    sha256=sha)
    missing = ZooEntry(name='dist_missing', url=server.base + '/ckpt/nothing.pth', sha256=sha)
    cache_dir = str(tmp_path / 'cache')
    ctx = multiprocessing.get_context('spawn')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_workers.distributed_download,
                         args=(rank, 2, str(tmp_path / 'dist_init'), queue, [good, missing],
                               cache_dir)) for rank in range(2)]
    for p in procs:
        p.start()
    results = {(rank, name): outcome for rank, name, outcome in _results(queue, 4)}
    for p in procs:
        p.join(timeout=30)
    expected = osp.join(cache_dir, 'dist_good.pth')
    assert results[0, 'dist_good'] == ('ok', expected)
    assert results[1, 'dist_good'] == ('ok', expected)
    assert len(server.requests_for('/ckpt/dist.pth')) == 1  # only rank 0 downloaded
    assert results[0, 'dist_missing'][1].startswith('DownloadError: HTTP 404')
    assert 'local rank 0 of this node did not produce' in results[1, 'dist_missing'][1]
    assert len(server.requests_for('/ckpt/nothing.pth')) == 1


# ------------------------------------------------------------------ issue 13
def test_a_cached_unpinned_file_without_its_record_is_refused(server, write_index, payload):
    """The zoo re-trusted a corrupted cached file once its .sha256 record was gone."""
    from m3i_mm.zoo import UnverifiedFileError
    data, sha = payload
    url = server.serve('/ckpt/tofu.pth', data)
    write_index([model_entry('tofu', url)])
    path = download_checkpoint('tofu', **FAST)
    with open(path, 'r+b') as f:  # the file is damaged ...
        f.seek(100)
        f.write(b'\x00\x01\x02')
    for record in ('', 'not a hash\n', None):  # ... and its record is emptied, garbled, gone
        if record is None:
            os.remove(path + '.sha256')
        else:
            with open(path + '.sha256', 'w') as f:
                f.write(record)
        with pytest.raises(UnverifiedFileError, match=r'cannot be verified: its sha256 record '
                                                      r'.*tofu.pth.sha256 (is empty or garbled|'
                                                      r'does not exist).*--force.*zoo.py trust'):
            download_checkpoint('tofu', **FAST)
    assert len(server.requests_for('/ckpt/tofu.pth')) == 1
    assert download_checkpoint('tofu', force=True, **FAST) == path  # a new download is fine
    with open(path, 'rb') as f:
        assert f.read() == data


class _HubHandler(BaseHTTPRequestHandler):
    """``/{repo}/resolve/{revision}/{file}`` as the Hugging Face Hub answers it (HEAD for the
    metadata, then GET), with a token required for the repository ``gated/*``."""

    def _answer(self, body_wanted: bool):
        hub: 'HubServer' = self.server.owner
        hub.requests.append((self.command, self.path, self.headers.get('Authorization')))
        match = re.match(r'^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$', self.path)
        data = hub.files.get((match.group(1), match.group(3))) if match else None
        if match and match.group(1).startswith('gated/') and \
                self.headers.get('Authorization') != f'Bearer {hub.token}':
            self.send_response(401)
            self.send_header('X-Error-Code', 'GatedRepo')
            self.send_header('X-Error-Message', 'Access to this model is restricted.')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        if data is None:
            self.send_response(404)
            self.send_header('X-Error-Code', 'EntryNotFound')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        self.send_response(200)
        self.send_header('X-Repo-Commit', 'c0ffee' + '0' * 34)
        self.send_header('ETag', '"%s"' % hashlib.sha256(data).hexdigest())
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if body_wanted:
            self.wfile.write(data)

    def do_HEAD(self):
        self._answer(False)

    def do_GET(self):
        self._answer(True)

    def log_message(self, *args):
        pass


class HubServer:
    def __init__(self, token: str) -> None:
        import threading
        self.files, self.requests, self.token = {}, [], token
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), _HubHandler)
        self.httpd.owner = self
        self.endpoint = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch, zoo_home):
    """A loopback Hub as HF_ENDPOINT, an empty HF cache, a token in HF_TOKEN."""
    import huggingface_hub.constants as hf_constants
    server = HubServer(token='hf_test_token')
    monkeypatch.setenv('HF_ENDPOINT', server.endpoint)
    monkeypatch.setenv('HF_TOKEN', 'hf_test_token')
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path / 'hf' / 'hub'))
    # huggingface_hub read HF_HUB_OFFLINE (set for the test session) when it was imported
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', False)
    yield server
    server.close()


def hub_url(repo: str, name: str) -> str:
    return f'https://huggingface.co/{repo}/resolve/main/{name}'


def test_hub_entries_use_hf_endpoint_token_and_cache(hub, write_index, payload, tmp_path,
                                                     monkeypatch):
    data, sha = payload
    hub.files[('gated/m3i', 'w.pth')] = data
    write_index([model_entry('hub_pinned', hub_url('gated/m3i', 'w.pth'), sha)])
    path = download_checkpoint('hub_pinned', **FAST)
    assert path.startswith(str(tmp_path / 'hf' / 'hub' / 'models--gated--m3i' / 'snapshots'))
    with open(path, 'rb') as f:
        assert f.read() == data
    assert {r[0] for r in hub.requests} == {'HEAD', 'GET'}
    assert all(r[2] == 'Bearer hf_test_token' for r in hub.requests)
    count = len(hub.requests)
    assert download_checkpoint('hub_pinned', **FAST) == path  # from the cache: no request
    assert len(hub.requests) == count
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    assert download_checkpoint('hub_pinned', **FAST) == path


def test_hub_errors_name_the_convention_to_use(hub, write_index, payload, monkeypatch):
    from m3i_mm.zoo import OfflineError
    data, sha = payload
    hub.files[('gated/m3i', 'w.pth')] = data
    write_index([model_entry('hub_gated', hub_url('gated/m3i', 'w.pth'), sha),
                 model_entry('hub_missing', hub_url('open/m3i', 'nothing.pth'), sha)])
    monkeypatch.delenv('HF_TOKEN')
    with pytest.raises(DownloadError, match='gated or private .* set HF_TOKEN'):
        download_checkpoint('hub_gated', **FAST)
    with pytest.raises(DownloadError, match=r'nothing.pth of open/m3i \(revision main\) is not '
                                            r'on the Hub at http://127.0.0.1'):
        download_checkpoint('hub_missing', **FAST)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(OfflineError, match='not in the Hugging Face cache'):
        download_checkpoint('hub_gated', **FAST)


def test_hub_downloads_are_verified_on_top(hub, write_index, payload):
    data, sha = payload
    hub.files[('open/m3i', 'bad.pth')] = data[:-10] + b'0123456789'
    hub.files[('open/m3i', 'tofu.pth')] = data
    write_index([model_entry('hub_bad', hub_url('open/m3i', 'bad.pth'), sha),
                 model_entry('hub_tofu', hub_url('open/m3i', 'tofu.pth'))])
    with pytest.raises(ChecksumMismatchError, match=f'pins {sha}'):
        download_checkpoint('hub_bad', **FAST)
    from huggingface_hub import try_to_load_from_cache
    assert try_to_load_from_cache('open/m3i', 'bad.pth') is None  # not left in the HF cache
    path = download_checkpoint('hub_tofu', **FAST)
    record = cache_path(get_entry('hub_tofu')) + '.sha256'
    with open(record) as f:
        assert f.read().split()[0] == sha  # trust on first use, recorded in our cache
    with open(osp.realpath(path), 'r+b') as f:
        f.seek(100)
        f.write(b'\x00\x01\x02')
    with pytest.raises(ChecksumMismatchError, match='hub_tofu.pth.sha256 records'):
        download_checkpoint('hub_tofu', **FAST)


def test_hub_entries_with_an_explicit_mirror_keep_the_plain_download(server, write_index,
                                                                     payload, zoo_home):
    data, sha = payload
    server.serve('/OpenGVLab/X/resolve/main/m.pth', data)
    write_index([model_entry('hub_mirrored', hub_url('OpenGVLab/X', 'm.pth'), sha)])
    path = download_checkpoint('hub_mirrored', mirror=server.base, **FAST)
    assert path == str(zoo_home / 'checkpoints' / 'hub_mirrored.pth')


ERROR_PAGE = b'<!DOCTYPE html><html><body>Rate limit exceeded, try again later.</body></html>'


def test_an_error_page_is_refused_before_it_is_cached(server, write_index, payload):
    """An HTML page served with status 200 for an unpinned entry was cached, its hash
    recorded, and `zoo.py verify` said OK."""
    url = server.serve('/ckpt/page.pth', ERROR_PAGE)
    write_index([model_entry('page', url)])
    with pytest.raises(DownloadError, match=r"download of zoo entry 'page' from .*/ckpt/page.pth "
                                            r"is not a PyTorch checkpoint \(78 bytes starting "
                                            r"with b'<!DO'\).*refusing it. Nothing was saved"):
        download_checkpoint('page', **FAST)
    path = cache_path(get_entry('page'))
    assert cache_files(osp.dirname(path)) == ['page.pth.lock']  # no file, record or part
    server.serve('/ckpt/page.pth', payload[0])  # the real file later: fine
    assert download_checkpoint('page', **FAST) == path


def test_a_cached_file_that_is_not_a_checkpoint_fails_verification(server, write_index,
                                                                   payload):
    """Such a file cached before downloads were checked, with its hash recorded."""
    from m3i_mm.zoo import CheckpointReadError
    from m3i_mm.zoo.download import _record_sha256
    url = server.serve('/ckpt/old_page.pth', payload[0])
    write_index([model_entry('old_page', url)])
    path = cache_path(get_entry('old_page'))
    os.makedirs(osp.dirname(path))
    with open(path, 'wb') as f:
        f.write(ERROR_PAGE)
    _record_sha256(path + '.sha256', sha256_hex(ERROR_PAGE), 'old_page.pth')
    with pytest.raises(CheckpointReadError, match=r'old_page.pth of zoo entry .* is not a '
                                                  r'PyTorch checkpoint .*--force'):
        download_checkpoint('old_page', **FAST)
    tool = importlib.util.spec_from_file_location('zoo_tool', osp.join(REPO, 'tools', 'zoo.py'))
    zoo_tool = importlib.util.module_from_spec(tool)
    tool.loader.exec_module(zoo_tool)
    assert zoo_tool.main(['verify', 'old_page']) == 1


def test_training_logs_are_not_checked_as_checkpoints(server, write_index, zoo_home):
    entry = ZooEntry(name='run.log', url=server.serve('/logs/run.log.json', b'{"a": 1}\n'),
                     is_checkpoint=False)
    path = download_checkpoint(entry, cache_dir=str(zoo_home / 'logs'), **FAST)
    with open(path, 'rb') as f:
        assert f.read() == b'{"a": 1}\n'


def test_an_error_page_from_the_hub_is_refused(hub, write_index):
    hub.files[('open/m3i', 'page.pth')] = ERROR_PAGE
    write_index([model_entry('hub_page', hub_url('open/m3i', 'page.pth'))])
    with pytest.raises(DownloadError, match=r'page.pth from the Hugging Face Hub is not a '
                                            r'PyTorch checkpoint'):
        download_checkpoint('hub_page', **FAST)
    from huggingface_hub import try_to_load_from_cache
    assert try_to_load_from_cache('open/m3i', 'page.pth') is None
    assert not osp.exists(cache_path(get_entry('hub_page')) + '.sha256')


@pytest.mark.parametrize('code', [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_an_unwritable_cache_is_one_clear_error(server, write_index, payload, zoo_home,
                                                monkeypatch, code):
    """It ended in a PermissionError traceback. (Simulated: the tests run as root, which
    may write anywhere; tests/tools/test_train_test_tools.py mounts a real read-only one.)"""
    from m3i_mm.zoo import CacheWriteError
    url = server.serve('/ckpt/nowhere.pth', payload[0])
    write_index([model_entry('nowhere', url)])
    real_makedirs = os.makedirs

    def makedirs(path, *args, **kwargs):
        if str(path).startswith(str(zoo_home)):
            raise OSError(code, os.strerror(code), str(path))
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, 'makedirs', makedirs)
    with pytest.raises(CacheWriteError, match=rf"zoo entry 'nowhere': cannot write to the zoo "
                                              rf"cache {zoo_home}/checkpoints \(.*\): "
                                              rf"{os.strerror(code)}. Set M3I_MM_HOME"):
        download_checkpoint('nowhere', **FAST)
