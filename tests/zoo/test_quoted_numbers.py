"""Every official number the model index and the README's zoo tables quote names its source:
a file of OpenGVLab/InternImage and the table in it (issue 23, item 6).

The numbers themselves were checked against those tables when they were written (the official
repository is not available at test time); here, each metafile entry with a number must name
its sources, and each README row must quote only its entry's numbers (or those a source's
`Note` names) and cite files and tables that its entry lists.
"""
import glob
import os.path as osp
import re

import pytest
import yaml

from tests.conftest import REPO

#: README.md at the top level, or the README of a part (or of a dataset's configs) of the
#: official repository.
OFFICIAL_FILE = re.compile(
    r'(README\.md|(classification|detection|segmentation)(/configs/[a-z0-9_]+)?/README\.md)')
NUMBER = re.compile(r'(?<![\w.])\d+\.\d+(?![\w.])')


def metafile_models() -> dict:
    models = {}
    for path in sorted(glob.glob(osp.join(REPO, 'configs', '*', 'metafile.yml'))):
        with open(path) as f:
            for model in yaml.safe_load(f)['Models']:
                models[model['Name']] = model
    return models


MODELS = metafile_models()


def quoted_numbers(model: dict) -> list:
    metadata = model.get('Metadata') or {}
    numbers = [v for r in model.get('Results') or [] for v in r['Metrics'].values()]
    return numbers + [metadata[k] for k in ('Parameters', 'FLOPs') if metadata.get(k)]


@pytest.mark.parametrize('name', sorted(MODELS))
def test_every_entry_with_numbers_names_its_official_tables(name):
    model = MODELS[name]
    assert quoted_numbers(model), f'{name} quotes no number: why is it in the index?'
    sources = model.get('Source')
    assert isinstance(sources, list) and sources, f'{name} has no Source'
    for source in sources:
        assert set(source) <= {'File', 'Table', 'Note'}, source
        assert OFFICIAL_FILE.fullmatch(source['File']), source
        assert isinstance(source['Table'], str) and source['Table'].strip(), source


def zoo_rows() -> list:
    """(line, model, official, source, name) of every row of the README's official zoo
    tables."""
    with open(osp.join(REPO, 'README.md')) as f:
        text = f.read()
    start = text.index('### Official detection and segmentation checkpoints')
    end = text.index('**Comparing a run with the official one.**', start)
    rows = []
    for line in text[start:end].splitlines():
        if not line.startswith('| ') or line.startswith('| model |'):
            continue
        cells = [c.strip() for c in line.strip('|').split(' | ')]
        assert len(cells) == 4, line
        name = re.search(r'm3i://(\S+)', cells[3]).group(1)
        rows.append((line, cells[0], cells[1], cells[2], name))
    return rows


ROWS = zoo_rows()


def test_the_zoo_tables_have_a_source_column():
    assert len(ROWS) == 33
    names = {row[4] for row in ROWS}
    assert names <= set(MODELS)


@pytest.mark.parametrize('row', ROWS, ids=[f'{r[1]} ({r[4]})' for r in ROWS])
def test_every_number_of_a_zoo_row_is_its_entrys_and_sourced(row):
    line, model_cell, official, source, name = row
    model = MODELS[name]
    notes = ' '.join(s.get('Note', '') for s in model['Source'])
    allowed = {f'{v:.1f}' for v in quoted_numbers(model) if isinstance(v, float)}
    allowed |= set(NUMBER.findall(notes))
    numbers = NUMBER.findall(official)
    assert numbers, line
    for number in numbers:
        assert number in allowed, (number, name, sorted(allowed))
    # every number also stands in the source cell's explanation or the entry's results
    cited = re.findall(r'`([^`]+\.md)` "([^"]+)"', source)
    assert cited, f'no source in: {line}'
    listed = {(s['File'], s['Table']) for s in model['Source']}
    for pair in cited:
        assert pair in listed, (pair, name, sorted(listed))
    for number in NUMBER.findall(source):  # numbers explained in the source cell
        assert number in allowed, (number, name)


def test_a_number_without_source_is_refused():
    """The check can fail: an invented number, or a source the entry does not list."""
    line, model_cell, official, source, name = next(r for r in ROWS if r[4].startswith(
        'upernet_internimage_t'))
    model = MODELS[name]
    allowed = {f'{v:.1f}' for v in quoted_numbers(model) if isinstance(v, float)}
    assert '47.9' in allowed and '48.0' not in allowed
    listed = {(s['File'], s['Table']) for s in model['Source']}
    assert ('detection/README.md', 'Dataset: COCO') not in listed
