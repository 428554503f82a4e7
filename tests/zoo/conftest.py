"""Fixtures of the zoo tests: a loopback HTTP server (with Range support) serving real
checkpoint files, an isolated zoo home, and a test index pointing at the server."""
import hashlib
import io
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

import pytest
import torch
import yaml
from mmengine.model import BaseModule
from torch import nn

from m3i_mm.zoo import register_converter

TEST_CONVERTER = 'zoo_test_official'


class TinyNet(BaseModule):
    """A small real model (~270 KB of weights) whose checkpoints the server serves."""

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(256, 256)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).flatten(1)[:, :256])


@register_converter(TEST_CONVERTER)
def convert_test_official(checkpoint: dict) -> dict:
    """Like the official InternImage files: weights under 'model', keys maybe 'module.'."""
    weights = checkpoint['model']
    return dict(state_dict={k[len('module.'):] if k.startswith('module.') else k: v
                            for k, v in weights.items()})


def tiny_state_dict(seed: int) -> Dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = TinyNet()
    with torch.no_grad():  # non-default BN statistics, so that buffers are checked too
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    return model.state_dict()


def checkpoint_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ServedFile:
    data: bytes
    mode: str = 'ok'  # ok | truncate | corrupt | die_once | fail_once (HTTP 503 first)
    chunk_delay: float = 0.0
    died: bool = False


class _Handler(BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-`` and ``If-Range`` (ETag), like a CDN; HTTP/1.0 closes
    the connection after each response, so a short body is seen as a dropped connection."""

    def do_GET(self):
        server: 'LoopbackServer' = self.server.owner
        served = server.record(self.path, self.headers.get('Range'), self.headers.get('If-Range'))
        if served is None:
            self.send_error(404, 'Not Found')
            return
        if served.mode == 'fail_once' and not served.died:
            served.died = True
            self.send_error(503, 'Service Unavailable')
            return
        data = served.data
        etag = '"%s"' % hashlib.sha1(data).hexdigest()
        start, status = 0, 200
        requested = self.headers.get('Range')
        if requested and self.headers.get('If-Range') in (None, etag):
            start = int(re.match(r'^bytes=(\d+)-$', requested).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header('Content-Range', f'bytes */{len(data)}')
                self.end_headers()
                return
            status = 206
        body = data[start:]
        if served.mode == 'corrupt':
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
        self.send_response(status)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('ETag', etag)
        self.send_header('Accept-Ranges', 'bytes')
        if status == 206:
            self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        self.end_headers()
        if served.mode == 'truncate' or (served.mode == 'die_once' and not served.died):
            served.died = True
            self.wfile.write(body[:len(body) // 2])  # then the connection closes
            return
        for i in range(0, len(body), 64 * 1024):
            self.wfile.write(body[i:i + 64 * 1024])
            if served.chunk_delay:
                time.sleep(served.chunk_delay)

    def log_message(self, *args):
        pass


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 that records every request it gets."""

    def __init__(self):
        self.files: Dict[str, ServedFile] = {}
        self.requests: List[Tuple[str, Optional[str], Optional[str]]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.base = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()

    def serve(self, path: str, data: bytes, mode: str = 'ok', chunk_delay: float = 0.0) -> str:
        self.files[path] = ServedFile(data, mode, chunk_delay)
        return self.base + path

    def record(self, path, range_header, if_range) -> Optional[ServedFile]:
        with self._lock:
            self.requests.append((path, range_header, if_range))
        return self.files.get(path)

    def requests_for(self, path: str) -> List[Tuple[str, Optional[str], Optional[str]]]:
        with self._lock:
            return [r for r in self.requests if r[0] == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture
def zoo_home(tmp_path, monkeypatch):
    """An empty M3I_MM_HOME, with offline mode and mirrors switched off."""
    home = tmp_path / 'zoo_home'
    monkeypatch.setenv('M3I_MM_HOME', str(home))
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))  # Hub entries: an empty HF cache
    for var in ('M3I_MM_OFFLINE', 'HF_HUB_OFFLINE', 'M3I_MM_ZOO_MIRROR', 'M3I_MM_MODEL_INDEX',
                'HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN'):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def write_index(tmp_path, monkeypatch, zoo_home):
    """Write a user index with the given models and point M3I_MM_MODEL_INDEX at it."""

    def write(models: List[dict], name: str = 'test-index.yml') -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump({'Models': models}, sort_keys=False))
        monkeypatch.setenv('M3I_MM_MODEL_INDEX', str(path))
        return str(path)

    return write


def model_entry(name: str, url: str, sha256: Optional[str] = None,
                converter: Optional[str] = TEST_CONVERTER) -> dict:
    """A metafile ``Models`` item in the OpenMMLab format."""
    item = {'Name': name, 'In Collection': 'ZooTest',
            'Metadata': {'Training Data': 'ImageNet-1k', 'Resolution': 32},
            'Results': [{'Task': 'Image Classification', 'Dataset': 'ImageNet-1k',
                         'Metrics': {'Top 1 Accuracy': 12.5}}],
            'Weights': url}
    if sha256:
        item['Sha256'] = sha256
    if converter:
        item['Converter'] = converter
    return item
