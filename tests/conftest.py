import os
import os.path as osp
import socket
import subprocess
import sys
from typing import List, Optional

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors; it is chosen
# when a kernel is defined, so it must be set before m3i_mm's Triton module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

# Tests never reach the network: the Hugging Face libraries read these when they are
# imported. Tests of the zoo's downloads (from a loopback server) clear them.
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['TRANSFORMERS_OFFLINE'] = '1'

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEST_CONFIGS = osp.join(REPO, 'tests', 'data', 'configs')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (Linux /proc; a zombie nobody reaped has ended)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] not in ('Z', 'X')
    except OSError:
        return False


def run_tool(args: List[str], cwd: str, env: Optional[dict] = None,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a repo tool (``tools/train.py ...`` or a ``.sh``) as users do, in ``cwd``."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHON=sys.executable,
                    OMP_NUM_THREADS='1', **(env or {}))
    full_env['PYTHONPATH'] = REPO + os.pathsep + full_env.get('PYTHONPATH', '')
    script = osp.join(REPO, args[0])
    cmd = ['bash', script, *args[1:]] if script.endswith('.sh') else [sys.executable, script,
                                                                      *args[1:]]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def tiny_cls_workspace(tmp_path):
    """A directory holding ``data/tiny_cls``: 4 classes x 4 crops of 4 skimage photos."""
    from m3i_mm.demo.photo_datasets import write_classification_folder
    write_classification_folder(str(tmp_path / 'data' / 'tiny_cls'))
    return tmp_path
