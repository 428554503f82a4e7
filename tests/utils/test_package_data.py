"""m3i_mm.utils.package_data: configs, model index and tools of a checkout or an install."""
import os.path as osp

from m3i_mm.utils import package_data
from tests.conftest import REPO


def test_a_checkout_is_its_own_data_root():
    assert package_data.checkout_root() == REPO
    assert package_data.data_root() == REPO
    assert package_data.data_path('model-index.yml') == osp.join(REPO, 'model-index.yml')


def fake_install(tmp_path, monkeypatch, with_data: bool = True) -> str:
    """site-packages/m3i_mm with (or without) its .mim copy, seen from the resolver."""
    package = tmp_path / 'site-packages' / 'm3i_mm'
    mim = package / '.mim'
    (mim / 'configs' / 'demo').mkdir(parents=True)
    if with_data:
        (mim / 'model-index.yml').write_text('Import: []\n')
        (mim / 'configs' / 'demo' / 'x.py').write_text('a = 1\n')
    monkeypatch.setattr(package_data, 'PACKAGE_DIR', str(package))
    monkeypatch.setattr(package_data, 'MIM_DIR', str(mim))
    return str(mim)


def test_an_installed_package_reads_its_mim_folder(tmp_path, monkeypatch):
    mim = fake_install(tmp_path, monkeypatch)
    assert package_data.checkout_root() is None
    assert package_data.data_root() == mim
    monkeypatch.chdir(tmp_path)
    assert package_data.find_config('configs/demo/x.py') == osp.join(mim, 'configs/demo/x.py')
    assert package_data.find_config('configs/demo/y.py') == 'configs/demo/y.py'  # not there
    assert package_data.find_config('/abs/configs/demo/x.py') == '/abs/configs/demo/x.py'


def test_a_file_of_the_current_directory_wins(tmp_path, monkeypatch):
    fake_install(tmp_path, monkeypatch)
    (tmp_path / 'configs' / 'demo').mkdir(parents=True)
    (tmp_path / 'configs' / 'demo' / 'x.py').write_text('a = 2\n')
    monkeypatch.chdir(tmp_path)
    assert package_data.find_config('configs/demo/x.py') == 'configs/demo/x.py'


def test_an_install_without_data_still_points_at_mim(tmp_path, monkeypatch):
    """A broken install: the resolver names where the files should be (the zoo's error
    then says the model index is missing there)."""
    mim = fake_install(tmp_path, monkeypatch, with_data=False)
    assert package_data.data_path('model-index.yml') == osp.join(mim, 'model-index.yml')
