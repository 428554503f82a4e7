"""m3i_mm's one cache root, shared by the zoo, the compiled extensions and the installer."""
import os.path as osp

from m3i_mm.ops.dcnv3 import cpu_ext
from m3i_mm.utils.cache_dir import cache_dir, cache_root
from m3i_mm.zoo import zoo_home


def test_root_follows_m3i_mm_home_and_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv('M3I_MM_HOME', str(tmp_path / 'home'))
    assert cache_root() == str(tmp_path / 'home')
    monkeypatch.delenv('M3I_MM_HOME')
    monkeypatch.setenv('HOME', str(tmp_path / 'user'))
    assert cache_root() == str(tmp_path / 'user' / '.cache' / 'm3i_mm')


def test_subfolders_are_created_on_request_and_every_user_shares_the_root(monkeypatch, tmp_path):
    monkeypatch.setenv('M3I_MM_HOME', str(tmp_path))
    path = cache_dir('torch_extensions', 'x')
    assert path == str(tmp_path / 'torch_extensions' / 'x') and not osp.exists(path)
    assert cache_dir('torch_extensions', 'x', create=True) == path and osp.isdir(path)
    assert zoo_home() == str(tmp_path)
    assert cpu_ext.build_dir().startswith(str(tmp_path / 'torch_extensions') + osp.sep)
