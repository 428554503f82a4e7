"""m3i_mm as users install it: sdist -> wheel -> ``pip install --target`` (not editable),
then used from another directory - the model zoo, the configs and tools in
``m3i_mm/.mim``, the demo entry point, and openmim's ``mim list / search / download /
train / test`` on the installed package.

The subprocesses get ``PYTHONPATH=<install>`` only, so the installed copy is imported, not
this checkout (nor the editable install of the environment); each test checks that.
"""
import hashlib
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
from typing import List

import pytest
import yaml

from m3i_mm.zoo import load_index
from tests.conftest import REPO

pytestmark = pytest.mark.slow
TINY_CLS_CONFIG = 'internimage-tiny_m3i-pre_1xb4-5e_demo-cls.py'


def build_ignore(folder: str, names: List[str]) -> List[str]:
    """Not copied to build the sdist: what a checkout may hold besides its sources (run
    folders at its top, build products anywhere)."""
    top = {'.git', '.venv', 'work_dirs', 'data', 'build', 'dist', '.pytest_cache'}
    return [n for n in names if (n in top and osp.samefile(folder, REPO)) or n == '__pycache__'
            or n.endswith(('.egg-info', '.pth', '.so', '.pyc'))]


def _run(cmd: List[str], cwd: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, (f'{" ".join(cmd)}: exit {res.returncode}\n'
                                 f'{res.stdout[-3000:]}\n{res.stderr[-5000:]}')
    return res


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(site folder, environment, working directory elsewhere, sdist path)."""
    base = tmp_path_factory.mktemp('packaging')
    source, dist, wheels, site = (str(base / name) for name in ('src', 'dist', 'wheels', 'site'))
    shutil.copytree(REPO, source, ignore=build_ignore)
    build_env = dict(os.environ, M3I_MM_BUILD_CUDA_OPS='0')  # no CUDA compile in a test
    _run([sys.executable, 'setup.py', '-q', 'sdist', '-d', dist], source, build_env)
    sdist = [osp.join(dist, f) for f in os.listdir(dist) if f.endswith('.tar.gz')]
    assert len(sdist) == 1, os.listdir(dist)
    _run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
          '--no-index', sdist[0], '-w', wheels], str(base), build_env)
    _run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
          '--target', site, *[osp.join(wheels, f) for f in os.listdir(wheels)]], str(base),
         build_env)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(PYTHONPATH=site, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               NO_PROXY='127.0.0.1,localhost', no_proxy='127.0.0.1,localhost',
               PYTHONWARNINGS='ignore')
    elsewhere = base / 'elsewhere'
    elsewhere.mkdir()
    return site, env, str(elsewhere), sdist[0]


def test_sdist_and_wheel_carry_configs_model_index_and_tools(installed):
    site, env, elsewhere, sdist = installed
    import tarfile
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split('/', 1)[1] for name in tar.getnames() if '/' in name}
    assert {'requirements/runtime.txt', 'model-index.yml', 'tools/train.py',
            'configs/internimage/metafile.yml', 'm3i_mm/ops/dcnv3/csrc/dcnv3_cpu.cpp'} <= in_sdist
    mim = osp.join(site, 'm3i_mm', '.mim')
    expected = ['model-index.yml']
    for folder in ('configs', 'tools'):
        for root, _, files in os.walk(osp.join(REPO, folder)):
            expected += [osp.relpath(osp.join(root, f), REPO) for f in files
                         if f.endswith(('.py', '.yml', '.md', '.sh')) and f != 'install_deps.py']
    assert len(expected) > 130
    for rel in expected:
        with open(osp.join(REPO, rel), 'rb') as a, open(osp.join(mim, rel), 'rb') as b:
            assert a.read() == b.read(), rel
    assert not osp.exists(osp.join(mim, 'tools', 'install_deps.py'))
    for package_file in ('zoo/data/imagenet22k_to_1k.txt', 'ops/dcnv3/csrc/dcnv3_cpu.cpp',
                         'ops/dcnv3/csrc/dcnv3_cuda.cu'):
        assert osp.isfile(osp.join(site, 'm3i_mm', package_file)), package_file
    assert os.access(osp.join(mim, 'tools', 'dist_train.sh'), os.X_OK)


def test_installed_zoo_configs_and_tools_work_from_another_directory(installed):
    site, env, elsewhere, _ = installed
    code = ('import m3i_mm, m3i_mm.zoo as zoo\n'
            'from m3i_mm.utils.package_data import data_root\n'
            'entry = zoo.get_entry("internimage_t_1k_224")\n'
            'print(m3i_mm.__file__, data_root(), len(zoo.load_index()), entry.source)\n')
    out = _run([sys.executable, '-c', code], elsewhere, env).stdout.split()
    mim = osp.join(site, 'm3i_mm', '.mim')
    assert out == [osp.join(site, 'm3i_mm', '__init__.py'), mim, str(len(load_index())),
                   osp.join(mim, 'configs', 'internimage', 'metafile.yml')]

    # m3i://NAME resolves in the installed index (offline: the download is refused, by name)
    code = ('import m3i_mm\nfrom mmengine.runner import CheckpointLoader\n'
            'CheckpointLoader.load_checkpoint("m3i://internimage_t_1k_224")\n')
    res = subprocess.run([sys.executable, '-c', code], cwd=elsewhere, capture_output=True,
                         text=True, env=dict(env, M3I_MM_OFFLINE='1',
                                             M3I_MM_HOME=osp.join(elsewhere, 'home')))
    assert res.returncode != 0 and 'UnknownEntryError' not in res.stderr
    assert 'internimage_t_1k_224' in res.stderr and 'M3I_MM_OFFLINE' in res.stderr

    tools = osp.join(mim, 'tools')
    listing = _run([sys.executable, osp.join(tools, 'zoo.py'), 'list'], elsewhere, env).stdout
    assert re.search(r'^internimage_t_1k_224 +Image Classification +224', listing, re.M)
    usage = _run([sys.executable, osp.join(tools, 'train.py'), '--help'], elsewhere, env).stdout
    assert usage.startswith('usage: train.py')
    demo = _run([sys.executable, '-m', 'm3i_mm.demo', '--help'], elsewhere, env).stdout
    assert '--pretrain-iters' in demo and 'else the current directory' in demo
    code = ('from m3i_mm.demo import pipeline as p\n'
            'print(*[p.PRETRAIN_CONFIG, p.DET_CONFIG, p.SEG_CONFIG, p.TRAIN, p.TEST, '
            'p.EXTRACT], sep="\\n")\n')
    for path in _run([sys.executable, '-c', code], elsewhere, env).stdout.split():
        assert path.startswith(mim + os.sep) and osp.isfile(path), path


def _mim(args: List[str], cwd: str, env: dict) -> str:
    return _run([sys.executable, '-m', 'mim', *args], cwd, env, timeout=900).stdout


def test_mim_list_and_search(installed):
    pytest.importorskip('mim', reason='needs openmim (requirements/tests.txt)')
    site, env, elsewhere, _ = installed
    from m3i_mm import __version__
    rows = [line.split() for line in _mim(['list'], elsewhere, env).splitlines()]
    assert ['m3i-mm', __version__] in [row[:2] for row in rows]
    out = _mim(['search', 'm3i_mm', '--valid-config'], elsewhere, env)
    listed = re.findall(r"'([^']+)'", out.split('valid config ids:')[1])
    assert sorted(listed) == sorted(load_index())
    out = _mim(['search', 'm3i_mm', '--model', 'upernet internimage', '--field', 'config',
                'ade20k/miou'], elsewhere, env)
    assert 'config id: upernet_internimage_t_512_160k_ade20k' in out
    assert re.search(r'ade20k/miou\s+47.9', out)


def test_mim_download_from_a_loopback_server(installed, tmp_path):
    """mim reads the installed model index, downloads the weights and dumps the entry's
    config from m3i_mm/.mim/configs. The installed metafile's URL is pointed at a loopback
    server for the test (restored afterwards)."""
    pytest.importorskip('mim', reason='needs openmim (requirements/tests.txt)')
    from tests.zoo.conftest import LoopbackServer, checkpoint_bytes, tiny_state_dict
    site, env, elsewhere, _ = installed
    metafile = osp.join(site, 'm3i_mm', '.mim', 'configs', 'internimage', 'metafile.yml')
    original = open(metafile).read()
    data = checkpoint_bytes({'model': tiny_state_dict(seed=3)})
    server = LoopbackServer()
    try:
        url = server.serve('/OpenGVLab/internimage_t_1k_224.pth', data)
        meta = yaml.safe_load(original)
        for model in meta['Models']:
            if model['Name'] == 'internimage_t_1k_224':
                model['Weights'] = url
        with open(metafile, 'w') as f:
            yaml.safe_dump(meta, f, sort_keys=False)
        dest = tmp_path / 'downloads'
        out = _mim(['download', 'm3i_mm', '--config', 'internimage_t_1k_224', '--dest',
                    str(dest)], elsewhere, env)
    finally:
        server.close()
        with open(metafile, 'w') as f:
            f.write(original)
    assert 'Successfully downloaded internimage_t_1k_224.pth' in out
    assert hashlib.sha256((dest / 'internimage_t_1k_224.pth').read_bytes()).hexdigest() == \
        hashlib.sha256(data).hexdigest()
    dumped = (dest / 'internimage_t_1k_224.py').read_text()
    assert "type='m3i_mm.InternImage'" in dumped and "arch='t'" in dumped


def test_mim_train_and_test_a_tiny_config_on_the_cpu(installed, tmp_path):
    """mim finds the config among the installed ones by its file name, and runs the
    installed tools/train.py and tools/test.py (launcher none, CPU)."""
    pytest.importorskip('mim', reason='needs openmim (requirements/tests.txt)')
    from m3i_mm.demo.photo_datasets import write_classification_folder
    site, env, _, _ = installed
    write_classification_folder(str(tmp_path / 'data' / 'demo' / 'cls'))
    options = ['--cfg-options', 'model.backbone.init_cfg=None', 'train_cfg.max_epochs=1',
               'train_cfg.val_interval=1', 'param_scheduler.1.begin=0',
               'param_scheduler.1.end=1', 'default_hooks.checkpoint.interval=1']
    out = _mim(['train', 'm3i_mm', TINY_CLS_CONFIG, '--work-dir', 'wd', *options],
               str(tmp_path), env)
    mim = osp.join(site, 'm3i_mm', '.mim')
    assert f'will use {osp.join(mim, "configs", "demo", TINY_CLS_CONFIG)} instead' in out
    assert f'Training command is {sys.executable} {osp.join(mim, "tools", "train.py")}' in out
    assert '[m3i_mm] rank 0/1 finished training at iter 4' in out
    assert (tmp_path / 'wd' / 'epoch_1.pth').is_file()
    out = _mim(['test', 'm3i_mm', TINY_CLS_CONFIG, '--checkpoint', 'wd/epoch_1.pth',
                '--work-dir', 'wd_test', '--cfg-options', 'model.backbone.init_cfg=None'],
               str(tmp_path), env)
    assert f'Testing command is {sys.executable} {osp.join(mim, "tools", "test.py")}' in out
    top1 = float(re.search(r'"accuracy/top1": ([0-9.]+)', out).group(1))
    assert 0.0 <= top1 <= 100.0
