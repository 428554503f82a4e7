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
CLASSIFICATION = ('InternImage', 'M3I')  # collections of the backbone checkpoints


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
        assert entry.config == model.config
        assert entry.converter == model.data.get('Converter')  # extra fields survive modelindex
        assert entry.sha256 == model.data.get('Sha256')
        assert entry.training_log == model.data.get('Training Log')
        assert entry.resolution == model.metadata.data.get('Resolution')
        assert entry.parameters == model.metadata.parameters
        assert [(r.task, r.dataset, dict(r.metrics)) for r in entry.results] == [
            (r.task, r.dataset, r.metrics) for r in model.results or []]
        if model.results:
            result = model.results[0]
            assert (entry.task, entry.dataset, dict(entry.metrics)) == (
                result.task, result.dataset, result.metrics)
        else:
            assert entry.task == PRETRAINING_TASK and not entry.metrics


def test_official_entries_match_their_published_file_names(official):
    """Each official classification entry is named after its file on huggingface.co and has
    a resolution."""
    _, entries = official
    expected_variants = {'t', 's', 'b', 'l', 'xl', 'h', 'g'}
    classifiers = {n for n, e in entries.items() if 'Top 1 Accuracy' in e.metrics}
    assert {re.match(r'internimage_([a-z]+)_', n).group(1) for n in classifiers} == (
        expected_variants)
    for name, entry in entries.items():
        if entry.collection not in CLASSIFICATION:
            continue
        assert entry.url == f'{OFFICIAL_BASE}{name}.pth'
        assert entry.converter == 'internimage'
        assert entry.resolution == int(name.rsplit('_', 1)[1][-3:])  # ..._224, ..._192to384


# name pattern -> (converter, metric names of each result); facts of the official tables
DOWNSTREAM = [
    (r'mask_rcnn_internimage_[tsb]_fpn_[13]x_coco', 'internimage',
     [('Object Detection', 'COCO', ['box AP']), ('Instance Segmentation', 'COCO', ['mask AP'])]),
    (r'cascade_internimage_(l|xl)_fpn_[13]x_coco', 'internimage',
     [('Object Detection', 'COCO', ['box AP']), ('Instance Segmentation', 'COCO', ['mask AP'])]),
    (r'dino_4scale_internimage_[tlhg]_.*coco.*', 'internimage_dino',
     [('Object Detection', 'COCO', ['box AP'])]),
    (r'dino_4scale_cbinternimage_h_objects365_coco', 'cb_internimage_dino',
     [('Object Detection', 'COCO', ['box AP', 'box AP (TTA)'])]),
    (r'dino_4scale_cbinternimage_h_objects365_80classes', 'cb_internimage_dino', []),
    (r'dino_4scale_cbinternimage_h_objects365_lvis', 'cb_internimage_dino',
     [('Object Detection', 'LVIS v1 minival', ['box AP']),
      ('Object Detection', 'LVIS v1', ['box AP', 'box AP (ms)'])]),
    (r'upernet_internimage_(t|s|b)_512_160k_ade20k|upernet_internimage_(l|xl)_640_160k_ade20k|'
     r'upernet_internimage_h_896_160k_ade20k', 'internimage',
     [('Semantic Segmentation', 'ADE20K', ['mIoU', 'mIoU(ms)'])]),
    (r'mask2former_internimage_h_896_80k_cocostuff164k', 'internimage_mask2former',
     [('Semantic Segmentation', 'COCO-Stuff 164k', ['mIoU', 'mIoU(ms)'])]),
    (r'mask2former_internimage_h_896_80k_cocostuff2ade20k', 'internimage_mask2former',
     [('Semantic Segmentation', 'ADE20K', ['mIoU', 'mIoU(ms+flip)'])]),
]


def test_downstream_entries_follow_the_official_tables(official):
    """Named after their official files, the right converter, the published metrics and
    parameter count, a config (but for the Objects365 starting point), and training logs
    on the official host."""
    _, entries = official
    downstream = {n: e for n, e in entries.items() if e.collection not in CLASSIFICATION}
    assert len(downstream) == 26
    for name, entry in downstream.items():
        rules = [r for r in DOWNSTREAM if re.fullmatch(r[0], name)]
        assert len(rules) == 1, (name, rules)
        _, converter, results = rules[0]
        assert entry.url == f'{OFFICIAL_BASE}{name}.pth'
        assert entry.converter == converter, name
        assert [(r.task, r.dataset, list(r.metrics)) for r in entry.results] == results, name
        assert all(0 < v < 100 for r in entry.results for v in r.metrics.values())
        assert entry.parameters and entry.parameters > 40_000_000, name
        assert (entry.config is None) == name.endswith('_80classes'), name
        if entry.config:
            assert entry.config.startswith('configs/') and entry.config.endswith('.py')
        if entry.training_log:
            assert re.fullmatch(r'https://huggingface\.co/OpenGVLab/InternImage/(resolve|raw)/'
                                rf'main/{re.escape(name)}(\.log)?\.json', entry.training_log)
    logged = {n for n, e in downstream.items() if e.training_log}
    # the official tables publish logs for all but these
    assert set(downstream) - logged == {
        'cascade_internimage_l_fpn_1x_coco', 'dino_4scale_internimage_h_objects365_coco',
        'dino_4scale_internimage_g_objects365_coco',
        'dino_4scale_cbinternimage_h_objects365_coco',
        'dino_4scale_cbinternimage_h_objects365_80classes',
        'dino_4scale_cbinternimage_h_objects365_lvis'}


def test_log_entry_is_the_training_log(official):
    _, entries = official
    log = entries['upernet_internimage_t_512_160k_ade20k'].log_entry()
    assert (log.name, log.url, log.file_suffix, log.converter, log.sha256) == (
        'upernet_internimage_t_512_160k_ade20k.log',
        'https://huggingface.co/OpenGVLab/InternImage/raw/main/'
        'upernet_internimage_t_512_160k_ade20k.log.json', '.json', None, None)
    with pytest.raises(UnknownEntryError, match="'internimage_t_1k_224' .* has no "
                                                '"Training Log"'):
        entries['internimage_t_1k_224'].log_entry()


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
    ('Training Log', 'logs/x.log.json', '"Training Log" must be an http\\(s\\) or file URL'),
    ('Config', ['a.py'], '"Config" must be a path'),
    ('Metadata', {'Parameters': '49M'}, '"Metadata.Parameters" must be an integer'),
    ('Results', [{'Task': 'Object Detection', 'Metrics': {'box AP': 'high'}}],
     r'Results\[0\]: "Metrics" must map metric names to numbers'),
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


def test_a_missing_package_index_is_named_in_the_unknown_entry_error(tmp_path, monkeypatch):
    """What `pip install .` gave before the index shipped inside the package: an empty zoo
    and "0 entries in ;" - now the error says which file is missing and what to do."""
    missing = str(tmp_path / 'm3i_mm' / '.mim' / 'model-index.yml')
    monkeypatch.setattr('m3i_mm.zoo.index.DEFAULT_INDEX', missing)
    monkeypatch.delenv('M3I_MM_MODEL_INDEX', raising=False)
    with pytest.raises(UnknownEntryError, match=(
            r"no model-zoo entry named 'internimage_t_1k_224' \(0 entries in ; .*m3i_mm's own "
            rf'model index is missing \(expected at {re.escape(missing)}\): reinstall m3i_mm')):
        get_entry('internimage_t_1k_224')
