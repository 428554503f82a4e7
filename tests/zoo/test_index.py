"""model-index.yml and the metafiles: OpenMMLab format, and what our reader makes of them."""
import os.path as osp
import re

import modelindex
import pytest
import yaml

from m3i_mm.zoo import (IndexFormatError, UnknownEntryError, get_entry, list_converters,
                        load_index)
from m3i_mm.zoo.index import DEFAULT_INDEX, PRETRAINING_TASK
from tests.conftest import REPO
from tests.zoo.conftest import model_entry

OFFICIAL_BASE = 'https://huggingface.co/OpenGVLab/InternImage/resolve/main/'


@pytest.fixture(scope='module')
def official():
    """modelindex's and our reading of the repository's index."""
    return modelindex.load(osp.join(REPO, 'model-index.yml')), load_index([DEFAULT_INDEX])


def test_index_parses_with_modelindex_and_every_model_has_a_url(official):
    mi, _ = official
    assert mi.check(silent=True) == []
    assert len(mi.models) >= 11
    for model in mi.models:
        assert model.weights.startswith('https://'), model.name


def test_our_reader_sees_the_same_entries_as_modelindex(official):
    mi, entries = official
    assert [m.name for m in mi.models] == list(entries)
    for model in mi.models:
        entry = entries[model.name]
        assert entry.url == model.weights
        assert entry.converter == model.data.get('Converter')  # extra fields survive modelindex
        assert entry.sha256 == model.data.get('Sha256')
        assert entry.resolution == model.metadata.data.get('Resolution')
        if model.results:
            result = model.results[0]
            assert (entry.task, entry.dataset, dict(entry.metrics)) == (
                result.task, result.dataset, result.metrics)
        else:
            assert entry.task == PRETRAINING_TASK and not entry.metrics


def test_official_entries_match_their_published_file_names(official):
    """Each official entry is named after its file on huggingface.co and has a resolution."""
    _, entries = official
    expected_variants = {'t', 's', 'b', 'l', 'xl', 'h', 'g'}
    classifiers = {n for n, e in entries.items() if 'Top 1 Accuracy' in e.metrics}
    assert {re.match(r'internimage_([a-z]+)_', n).group(1) for n in classifiers} == (
        expected_variants)
    for name, entry in entries.items():
        assert entry.url == f'{OFFICIAL_BASE}{name}.pth'
        assert entry.converter == 'internimage'
        assert entry.resolution == int(name.rsplit('_', 1)[1][-3:])  # ..._224, ..._192to384


def test_m3i_metafile_holds_the_m3i_pretrained_h(official):
    _, entries = official
    entry = entries['internimage_h_jointto22k_384']
    assert entry.collection == 'M3I'
    assert entry.source == osp.join(REPO, 'configs', 'm3i', 'metafile.yml')
    with open(entry.source) as f:
        model = yaml.safe_load(f)['Models'][0]
    assert {'LAION-400M', 'YFCC-15M', 'CC12M', 'ImageNet-21k'} <= set(
        model['Metadata']['Training Data'])


def test_every_named_converter_is_registered(official):
    _, entries = official
    needed = {e.converter for e in entries.values() if e.converter}
    missing = needed - set(list_converters())
    source = osp.join(REPO, 'm3i_mm', 'zoo', 'internimage.py')
    with open(source) as f:
        if missing == {'internimage'} and 'register_converter' not in f.read():
            pytest.skip("m3i_mm/zoo/internimage.py does not register the 'internimage' "
                        'converter yet (written by the InternImage backbone work)')
    assert not missing, f'converters named in the index but not registered: {missing}'


def test_user_index_adds_entries(write_index):
    path = write_index([model_entry('my_model', 'https://example.org/my_model.pth', 'ab' * 32)])
    entries = load_index()
    assert 'internimage_t_1k_224' in entries and 'my_model' in entries
    entry = get_entry('my_model')
    assert (entry.source, entry.sha256, entry.resolution, entry.metrics) == (
        path, 'ab' * 32, 32, {'Top 1 Accuracy': 12.5})


def test_duplicate_names_are_an_error(write_index):
    path = write_index([model_entry('internimage_t_1k_224', 'https://example.org/x.pth')])
    with pytest.raises(IndexFormatError, match=r"'internimage_t_1k_224' is defined twice: in "
                                               rf'.*metafile.yml and in {re.escape(path)}'):
        load_index()


@pytest.mark.parametrize('field, value, message', [
    ('Sha256', 'abc', 'must be 64 hex digits'),
    ('Weights', 'ftp://example.org/x.pth', 'must be an http\\(s\\) or file URL'),
    ('Name', 'bad name', 'must be letters, digits'),
])
def test_malformed_entries_are_named(write_index, field, value, message):
    item = model_entry('broken', 'https://example.org/x.pth')
    item[field] = value
    path = write_index([item])
    with pytest.raises(IndexFormatError, match=f'{re.escape(path)}.*{message}'):
        load_index()


def test_missing_import_is_named(tmp_path):
    index = tmp_path / 'model-index.yml'
    index.write_text('Import:\n  - configs/nothing/metafile.yml\n')
    with pytest.raises(IndexFormatError, match=r'not found: .*configs/nothing/metafile.yml '
                                               rf'\(imported by {re.escape(str(index))}\)'):
        load_index([str(index)])


def test_import_cycles_are_named(tmp_path):
    (tmp_path / 'a.yml').write_text('Import:\n  - b.yml\n')
    (tmp_path / 'b.yml').write_text('Import:\n  - a.yml\n')
    with pytest.raises(IndexFormatError, match=r'a.yml imports itself \(through .*b.yml\)'):
        load_index([str(tmp_path / 'a.yml')])


def test_a_metafile_imported_twice_is_a_duplicate(tmp_path):
    (tmp_path / 'm.yml').write_text(yaml.safe_dump(
        {'Models': [model_entry('once', 'https://example.org/once.pth')]}))
    (tmp_path / 'index.yml').write_text('Import:\n  - m.yml\n  - m.yml\n')
    with pytest.raises(IndexFormatError, match="'once' is defined twice"):
        load_index([str(tmp_path / 'index.yml')])


def test_unknown_name_suggests_close_matches(zoo_home):
    with pytest.raises(UnknownEntryError, match="'internimage_t_1k' .*Did you mean: "
                                                'internimage_t_1k_224'):
        get_entry('internimage_t_1k')
