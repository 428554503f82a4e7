"""tools/analysis/effective_receptive_field.py: a checkpoint next to random init, with local
files and official-format zoo weights (loopback), a real PNG, the radii, one-line errors."""
import json

import numpy as np
import pytest
from PIL import Image

from m3i_mm.utils.errors import UsageError
from tests.conftest import run_tool
from tests.tools.analysis_fixtures import (config_path, deformed_backbone_state, load_tool,
                                           save_checkpoint, serve_official_entry)
from tests.zoo.conftest import server, zoo_home  # noqa: F401

tool = load_tool('effective_receptive_field')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    state = deformed_backbone_state(seed=3)
    return save_checkpoint(str(tmp_path_factory.mktemp('ckpt') / 'backbone.pth'), state), state


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    """A directory with three of the shipped photos (and a file that is not an image)."""
    from m3i_mm.demo.photo_datasets import load_photo
    root = tmp_path_factory.mktemp('photos')
    for name in ('chelsea', 'astronaut', 'coffee'):
        Image.fromarray(load_photo(name)).save(root / f'{name}.png')
    (root / 'notes.txt').write_text('not an image')
    return str(root)


def run(tmp_path, *argv):
    out, record = tmp_path / 'erf.png', tmp_path / 'erf.json'
    tool.main([*map(str, argv), '--out', str(out), '--json', str(record)])
    with open(record) as f:
        return out, json.load(f)


def test_checkpoint_next_to_random_init(checkpoint, photos, tmp_path):
    path, _ = checkpoint
    out, record = run(tmp_path, config_path('detector'), path, '--images', photos,
                      '--size', 64, '--stage', 2)
    assert [p.rsplit('/', 1)[1] for p in record['images']] == ['astronaut.png', 'chelsea.png',
                                                               'coffee.png']
    assert record['centre'] == [32.0, 32.0]  # stage 2 of 64 px: 4 x 4 cells, cell 2 -> 32 px
    radii = list(record['fields'].values())
    assert list(record['fields']) == [path, 'random init']
    for r in radii:
        assert 0 <= r['r50'] <= r['r90'] <= r['r99'] <= 32 * np.sqrt(2)
    assert radii[0] != radii[1]
    with Image.open(out) as png:
        pixels = np.asarray(png.convert('RGB'), dtype=np.float64)
    assert pixels.shape == (500, 900, 3) and pixels.std() > 20


def test_random_init_is_reproducible_and_official_weights_load(checkpoint, photos, tmp_path,
                                                                server, zoo_home, monkeypatch):
    path, state = checkpoint
    name = serve_official_entry(server, tmp_path, monkeypatch, state)
    args = ['--images', photos, '--num-images', 2, '--size', 64, '--stage', 1]
    _, local = run(tmp_path, config_path('classifier'), path, *args)
    _, zoo = run(tmp_path, config_path('classifier'), name, *args)
    assert len(zoo['images']) == 2
    assert zoo['fields'][name] == pytest.approx(local['fields'][path], abs=1e-6)
    assert zoo['fields']['random init'] == local['fields']['random init']


def test_errors(checkpoint, photos, tmp_path):
    path, _ = checkpoint
    with pytest.raises(UsageError, match='no weights to compare with random init'):
        tool.main([config_path('m3i'), '--images', photos])
    with pytest.raises(UsageError, match='stage 5 does not exist'):
        tool.main([config_path('m3i'), path, '--images', photos, '--stage', '5'])
    with pytest.raises(UsageError, match='no images'):
        tool.main([config_path('m3i'), path, '--images', str(tmp_path)])
    res = run_tool(['tools/analysis/effective_receptive_field.py', config_path('m3i'), path,
                    '--images', str(tmp_path / 'missing')], cwd=str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[0].startswith('error: image or directory not found')
    assert 'Traceback' not in res.stderr
