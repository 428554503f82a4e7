"""Read the model index (``model-index.yml`` + per-family ``metafile.yml``) into zoo entries.

The files follow the OpenMMLab / ``modelindex`` format (``Import`` lists metafiles; each
metafile has ``Collections`` and ``Models``). Each model becomes a :class:`ZooEntry`.
Fields beyond the standard ones (``modelindex`` keeps unknown fields as they are):

- ``Sha256``: the full sha256 of the file at ``Weights``, when known. Entries without it
  are "unpinned" (see :mod:`m3i_mm.zoo.download` for what that means).
- ``Converter``: the name of the converter applied when the file is loaded
  (:mod:`m3i_mm.zoo.converters`).
- ``Training Log``: URL of the run's JSON training log (mmcv/mmengine ``.log.json``), when
  published; ``tools/analysis/compare_logs.py`` reads it (the name follows the mmaction2
  metafiles).

``Metadata.Resolution`` (input size in pixels) is a custom metadata field as well.

The index read is m3i_mm's ``model-index.yml`` (the checkout's, or the copy an installed
package carries in ``m3i_mm/.mim``; :mod:`m3i_mm.utils.package_data` finds it) plus every
file listed in the environment variable ``M3I_MM_MODEL_INDEX`` (paths separated by
``os.pathsep``), so users can add their own checkpoints.
"""
import os
import os.path as osp
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlparse

import yaml

from ..utils.package_data import data_path
from ..utils.suggest import did_you_mean
from .errors import IndexFormatError, UnknownEntryError

DEFAULT_INDEX = data_path('model-index.yml')
INDEX_ENV = 'M3I_MM_MODEL_INDEX'
PRETRAINING_TASK = 'Pre-training'

_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
_SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_URL_SCHEMES = ('http', 'https', 'file')


@dataclass(frozen=True)
class ZooResult:
    """One published result of an entry (an item of ``Results``).

    Attributes:
        task: e.g. ``'Object Detection'``, ``'Semantic Segmentation'``.
        dataset: e.g. ``'COCO'``, ``'ADE20K'``.
        metrics: e.g. ``{'box AP': 47.2}`` or ``{'mIoU': 47.9, 'mIoU(ms)': 48.1}``.
    """
    task: str
    dataset: Optional[str]
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable checkpoint of the zoo.

    Attributes:
        name: Unique name, used as ``m3i://NAME`` and as the cache file stem.
        url: Where the file is published (``Weights`` in the metafile).
        sha256: Full lowercase sha256 of the file, or None when not known ("unpinned").
        converter: Name of the converter applied on load, or None to load the file as is.
        collection: The ``In Collection`` value.
        task: Task of the first result, or ``'Pre-training'`` for entries without results
            (the OpenMMLab convention for pre-trained-only weights).
        dataset: Dataset of the first result, if any.
        metrics: Metrics of the first result, e.g. ``{'Top 1 Accuracy': 83.5}``.
        resolution: Input resolution in pixels (``Metadata.Resolution``), if given.
        source: The metafile the entry was read from.
        config: ``Config``: the config of this repository with the entry's recipe (relative
            to the repository root), if any.
        parameters: ``Metadata.Parameters``, if given.
        training_log: ``Training Log``: URL of the published JSON training log, if any.
        results: Every item of ``Results`` (``task``/``dataset``/``metrics`` are the first).
        is_checkpoint: Whether the file must be a PyTorch checkpoint (checked before it is
            cached); False for training logs.
    """
    name: str
    url: str
    sha256: Optional[str] = None
    converter: Optional[str] = None
    collection: Optional[str] = None
    task: str = PRETRAINING_TASK
    dataset: Optional[str] = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    resolution: Optional[int] = None
    source: str = ''
    config: Optional[str] = None
    parameters: Optional[int] = None
    training_log: Optional[str] = None
    results: Tuple[ZooResult, ...] = ()
    is_checkpoint: bool = True

    @property
    def pinned(self) -> bool:
        """Whether the index carries the file's sha256."""
        return self.sha256 is not None

    @property
    def file_suffix(self) -> str:
        """Extension of the published file name (``'.pth'`` when the URL has none)."""
        return osp.splitext(urlparse(self.url).path)[1] or '.pth'

    def log_entry(self) -> 'ZooEntry':
        """The training log as an entry of its own, for the zoo's download code.

        Named ``NAME.log`` (cached as ``NAME.log.json``), unpinned, without converter.

        Raises:
            UnknownEntryError: If the entry publishes no training log.
        """
        if self.training_log is None:
            raise UnknownEntryError(
                f'zoo entry {self.name!r} ({self.source}) has no "Training Log": the official '
                'release publishes no training log for it')
        return ZooEntry(name=f'{self.name}.log', url=self.training_log,
                        collection=self.collection, source=self.source, is_checkpoint=False)


def index_paths() -> List[str]:
    """The index files read by default: m3i_mm's, then those in ``M3I_MM_MODEL_INDEX``."""
    paths = [DEFAULT_INDEX] if osp.isfile(DEFAULT_INDEX) else []
    extra = os.environ.get(INDEX_ENV, '')
    paths += [osp.abspath(osp.expanduser(p)) for p in extra.split(os.pathsep) if p.strip()]
    return paths


def load_index(paths: Optional[Sequence[str]] = None) -> Dict[str, ZooEntry]:
    """Read model-index files into entries.

    Args:
        paths: Index files (``model-index.yml`` style or a single metafile). Defaults to
            :func:`index_paths`.

    Returns:
        Entries by name, in file order.

    Raises:
        IndexFormatError: If a file is missing or malformed, or two entries share a name.
    """
    entries: Dict[str, ZooEntry] = {}
    for path in (index_paths() if paths is None else paths):
        for entry in _read_index_file(osp.abspath(path), ancestors=()):
            if entry.name in entries:
                raise IndexFormatError(
                    f'zoo entry {entry.name!r} is defined twice: in {entries[entry.name].source} '
                    f'and in {entry.source}')
            entries[entry.name] = entry
    return entries


def get_entry(name: str, index: Optional[Mapping[str, ZooEntry]] = None) -> ZooEntry:
    """Look an entry up by name.

    Args:
        name: The entry name (``NAME`` in ``m3i://NAME``).
        index: Entries to search; defaults to :func:`load_index`.

    Raises:
        UnknownEntryError: If there is no such entry; the message suggests close names.
    """
    index = load_index() if index is None else index
    if name in index:
        return index[name]
    hint = did_you_mean(name, index, cutoff=0.5)
    if not osp.isfile(DEFAULT_INDEX):
        hint += (f' m3i_mm\'s own model index is missing (expected at {DEFAULT_INDEX}): '
                 'reinstall m3i_mm from a checkout, an sdist or a wheel.')
    raise UnknownEntryError(
        f'no model-zoo entry named {name!r} ({len(index)} entries in {", ".join(index_paths())}; '
        f'`python tools/zoo.py list` shows them).{hint}')


def _read_yaml(path: str, referenced_from: Optional[str]) -> dict:
    if not osp.isfile(path):
        where = f' (imported by {referenced_from})' if referenced_from else ''
        raise IndexFormatError(f'model-index file not found: {path}{where}')
    with open(path, encoding='utf-8') as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise IndexFormatError(f'cannot parse {path}: {e}') from e
    if not isinstance(data, dict):
        raise IndexFormatError(f'{path} must hold a mapping with "Import" and/or "Models"')
    return data


def _read_index_file(path: str, ancestors: tuple) -> List[ZooEntry]:
    referenced_from = ancestors[-1] if ancestors else None
    if path in ancestors:
        raise IndexFormatError(f'{path} imports itself (through {referenced_from})')
    data = _read_yaml(path, referenced_from)
    entries = []
    for item in data.get('Import') or []:
        imported = osp.normpath(osp.join(osp.dirname(path), item))
        entries += _read_index_file(imported, ancestors + (path,))
    for i, model in enumerate(data.get('Models') or []):
        entries.append(_parse_model(model, path, i))
    return entries


def _parse_model(model: dict, path: str, position: int) -> ZooEntry:
    where = f'{path}: Models[{position}]'
    if not isinstance(model, dict):
        raise IndexFormatError(f'{where} must be a mapping, got {type(model).__name__}')
    name = model.get('Name')
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise IndexFormatError(
            f'{where}: "Name" must be letters, digits, ".", "_" or "-", got {name!r}')
    where = f'{path}: model {name!r}'
    url = _url_field(model, 'Weights', where, required=True)
    training_log = _url_field(model, 'Training Log', where, required=False)
    sha256 = model.get('Sha256')
    if sha256 is not None:
        sha256 = str(sha256).lower()
        if not _SHA256_RE.match(sha256):
            raise IndexFormatError(f'{where}: "Sha256" must be 64 hex digits, got {sha256!r}')
    converter = model.get('Converter')
    if converter is not None and not isinstance(converter, str):
        raise IndexFormatError(f'{where}: "Converter" must be a name, got {converter!r}')
    config = model.get('Config')
    if config is not None and not isinstance(config, str):
        raise IndexFormatError(f'{where}: "Config" must be a path, got {config!r}')
    metadata = model.get('Metadata') or {}
    if not isinstance(metadata, dict):
        raise IndexFormatError(f'{where}: "Metadata" must be a mapping, got {metadata!r}')
    integers = {}
    for field_name in ('Resolution', 'Parameters'):
        value = metadata.get(field_name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise IndexFormatError(f'{where}: "Metadata.{field_name}" must be an integer, '
                                   f'got {value!r}')
        integers[field_name] = value
    results = tuple(_parse_result(result, f'{where}: Results[{i}]')
                    for i, result in enumerate(model.get('Results') or []))
    first = results[0] if results else ZooResult(PRETRAINING_TASK, None, {})
    return ZooEntry(
        name=name, url=url, sha256=sha256, converter=converter,
        collection=model.get('In Collection'),
        task=first.task, dataset=first.dataset, metrics=dict(first.metrics),
        resolution=integers['Resolution'], source=path, config=config,
        parameters=integers['Parameters'], training_log=training_log, results=results)


def _url_field(model: dict, key: str, where: str, required: bool) -> Optional[str]:
    url = model.get(key)
    if url is None and not required:
        return None
    if not isinstance(url, str) or urlparse(url).scheme not in _URL_SCHEMES:
        raise IndexFormatError(f'{where}: "{key}" must be an http(s) or file URL, got {url!r}')
    return url


def _parse_result(result: dict, where: str) -> ZooResult:
    if not isinstance(result, dict):
        raise IndexFormatError(f'{where} must be a mapping, got {result!r}')
    metrics = result.get('Metrics') or {}
    if not isinstance(metrics, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()):
        raise IndexFormatError(f'{where}: "Metrics" must map metric names to numbers, '
                               f'got {metrics!r}')
    return ZooResult(task=result.get('Task', PRETRAINING_TASK), dataset=result.get('Dataset'),
                     metrics=dict(metrics))
