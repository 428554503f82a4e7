"""Image-caption pairs from a manifest file or from WebDataset-style tar shards."""
import csv
import json
import logging
import os.path as osp
from typing import BinaryIO, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from mmengine import fileio
from mmengine.logging import print_log

from m3i_mm.registry import DATASETS
from .base import (BadSampleError, ImageSource, PackedStrings, check_index, decode_image,
                   join_root, make_sample, read_bytes)
from .tar_shards import ShardSet, expand_shards

__all__ = ['ImageTextDataset', 'Manifest', 'read_manifest']

MANIFEST_FORMATS = {'.jsonl': 'jsonl', '.json': 'jsonl', '.csv': 'csv', '.tsv': 'tsv'}


class Manifest(NamedTuple):
    """The rows of an image-caption manifest.

    Attributes:
        paths: Image path of each row (``''`` for a bad row).
        captions: Caption of each row (``''`` when empty or for a bad row).
        bad_rows: Rows that cannot be used, as ``row -> (line number, reason)``; the
            dataset keeps them as bad samples, so they are skipped, logged and counted.
    """
    paths: List[str]
    captions: List[str]
    bad_rows: Dict[int, Tuple[int, str]]


def read_manifest(path: str, path_key: str = 'path', caption_key: str = 'caption',
                  file_format: Optional[str] = None,
                  backend_args: Optional[dict] = None) -> Manifest:
    """Read an image-caption manifest.

    Formats: JSON Lines (one object per line) or CSV/TSV with a header row; the format is
    taken from the file extension unless ``file_format`` (``'jsonl'``, ``'csv'``,
    ``'tsv'``) is given. Every row is one line:

    - TSV reads quotes literally (web caption files are full of them): a line is split at
      its tabs, nothing else.
    - CSV follows RFC 4180 quoting within a line; a quoted field that does not close on
      its own line (an unbalanced ``"`` in a caption, or a caption with a line break) is
      an error naming the file and line, instead of swallowing the following rows.

    Configuration errors name the file and line: a row without the path or caption field
    (a wrong ``path_key``/``caption_key``), a CSV/TSV row whose field count differs from
    the header, a line that is not a JSON object. A line that is not valid UTF-8 is one
    bad row (logged here, then skipped and counted as a bad sample); an empty caption is
    kept and later skipped as a bad sample.
    """
    if file_format is None:
        ext = osp.splitext(path)[1].lower()
        if ext not in MANIFEST_FORMATS:
            raise ValueError(f'cannot tell the manifest format of {path} from its extension; '
                             f'pass file_format= one of {sorted(set(MANIFEST_FORMATS.values()))}')
        file_format = MANIFEST_FORMATS[ext]
    if file_format not in ('jsonl', 'csv', 'tsv'):
        raise ValueError(f'unknown manifest format {file_format!r}; use jsonl, csv or tsv')
    manifest = Manifest([], [], {})
    with fileio.get_local_path(path, backend_args=backend_args) as local, \
            open(local, 'rb') as f:
        if file_format == 'jsonl':
            _read_jsonl(f, path, path_key, caption_key, manifest)
        else:
            _read_delimited(f, path, path_key, caption_key, file_format, manifest)
    if manifest.bad_rows:
        lines = [line for line, _ in manifest.bad_rows.values()]
        print_log(f'{path}: {len(lines)} row(s) are not valid UTF-8 (line(s) '
                  f'{", ".join(map(str, lines[:10]))}{", ..." if len(lines) > 10 else ""}); '
                  'each is skipped as a bad sample', logger='current', level=logging.WARNING)
    return manifest


def _lines(f: BinaryIO, path: str, manifest: Manifest):
    """(line number, text) of the non-blank lines; undecodable ones become bad rows."""
    for line_no, raw in enumerate(f, 1):
        raw = raw.rstrip(b'\r\n')
        if line_no == 1 and raw.startswith(b'\xef\xbb\xbf'):  # UTF-8 byte order mark
            raw = raw[3:]
        try:
            text = raw.decode('utf-8')
        except UnicodeDecodeError as err:
            manifest.bad_rows[len(manifest.paths)] = (
                line_no, f'not valid UTF-8 (byte 0x{raw[err.start]:02x} at column '
                f'{err.start + 1})')
            manifest.paths.append('')
            manifest.captions.append('')
            continue
        if text.strip():
            yield line_no, text


def _read_jsonl(f: BinaryIO, path: str, path_key: str, caption_key: str,
                manifest: Manifest) -> None:
    for line_no, line in _lines(f, path, manifest):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}:{line_no}: not a JSON object ({err})') from None
        _append_row(row, path_key, caption_key, manifest, f'{path}:{line_no}')


def _read_delimited(f: BinaryIO, path: str, path_key: str, caption_key: str,
                    file_format: str, manifest: Manifest) -> None:
    split = _split_csv_line if file_format == 'csv' else _split_tsv_line
    header: Optional[List[str]] = None
    for line_no, line in _lines(f, path, manifest):
        where = f'{path}:{line_no}'
        fields = split(line, where)
        if header is None:
            if manifest.paths:  # rows before the header: its line was not valid UTF-8
                raise ValueError(f'{path}: the header line is not valid UTF-8')
            header = fields
            for field in (path_key, caption_key):
                if field not in header:
                    raise ValueError(f'{path}: no column {field!r} in the header {header}; '
                                     'set path_key/caption_key')
            continue
        if len(fields) != len(header):
            raise ValueError(
                f'{where}: {len(fields)} fields, but the header has {len(header)} '
                f'({", ".join(header)})' + ('; a tab inside a caption?' if file_format == 'tsv'
                                            else '; an unquoted comma or quote?'))
        _append_row(dict(zip(header, fields)), path_key, caption_key, manifest, where)
    if header is None:
        raise ValueError(f'{path}: empty manifest (no header row)')


def _split_tsv_line(line: str, where: str) -> List[str]:
    return line.split('\t')


def _split_csv_line(line: str, where: str) -> List[str]:
    if '"' not in line:
        return line.split(',')
    try:
        return next(csv.reader((line, ), strict=True))
    except csv.Error as err:
        raise ValueError(
            f'{where}: {err}: a quoted field does not close on its line (an unbalanced " in '
            'a caption, or a caption with a line break). Quote fields as in RFC 4180 with '
            'inner quotes doubled, and keep each row on one line, or use TSV/JSONL') from None


def _append_row(row, path_key: str, caption_key: str, manifest: Manifest, where: str) -> None:
    if not isinstance(row, dict):
        raise ValueError(f'{where}: a row must be a JSON object, got {row!r}')
    if not row.get(path_key):
        raise ValueError(f'{where}: row has no {path_key!r} field: {row!r}; set path_key')
    if caption_key not in row:
        raise ValueError(f'{where}: row has no {caption_key!r} field (it has '
                         f'{sorted(row)}); set caption_key')
    caption = row[caption_key]
    if caption is not None and not isinstance(caption, str):
        raise ValueError(f'{where}: {caption_key!r} must be a string, got {caption!r}')
    manifest.paths.append(str(row[path_key]))
    manifest.captions.append(caption or '')


@DATASETS.register_module()
class ImageTextDataset(ImageSource):
    """Image-caption pairs from a manifest (``ann_file``) or tar shards (``shards``).

    Manifest: JSON Lines, CSV or TSV rows with an image path (relative to ``data_root``
    unless absolute or a URI) and a caption, read through mmengine's file backends (rules
    in :func:`read_manifest`: TSV reads quotes literally, one row per line).

    Shards: WebDataset-style uncompressed tars, ``key.jpg`` (or another image extension)
    with ``key.txt`` or ``key.json`` (caption in one of ``caption_json_keys``). Only one
    sample count per shard is held; see :mod:`m3i_mm.datasets.tar_shards`.

    Bad samples raise :class:`~m3i_mm.datasets.base.BadSampleError`: a missing, truncated
    or undecodable image, an empty/missing caption, a manifest line that is not valid
    UTF-8, a shard member cut off by the end of its file.

    Args:
        data_root: Root of relative image/manifest/shard paths.
        ann_file: Manifest path (exclusive with ``shards``).
        shards: A brace pattern (``'data-{000000..000099}.tar'``) or a list of shard
            paths/patterns (exclusive with ``ann_file``).
        path_key: Manifest field/column holding the image path.
        caption_key: Manifest field/column holding the caption.
        file_format: Manifest format (``'jsonl'``, ``'csv'``, ``'tsv'``); None: from the
            extension.
        caption_json_keys: Fields of a shard's ``.json`` member tried for the caption.
        index_cache_dir: Where to keep shard indexes if not next to the shards.
        shard_cache_size: Shard offset tables kept in memory per process.
        backend_args: mmengine file backend arguments.
    """

    def __init__(self,
                 data_root: str = '',
                 ann_file: Optional[str] = None,
                 shards: Union[str, Sequence[str], None] = None,
                 path_key: str = 'path',
                 caption_key: str = 'caption',
                 file_format: Optional[str] = None,
                 caption_json_keys: Sequence[str] = ('caption', 'text'),
                 index_cache_dir: Optional[str] = None,
                 shard_cache_size: int = 16,
                 backend_args: Optional[dict] = None) -> None:
        if (ann_file is None) == (shards is None):
            raise ValueError('ImageTextDataset needs exactly one of ann_file (a manifest) '
                             'and shards (tar shards)')
        self.data_root = data_root
        self.backend_args = backend_args
        self.caption_json_keys = tuple(caption_json_keys)
        self.shard_set: Optional[ShardSet] = None
        if ann_file is not None:
            self.ann_file = join_root(data_root, ann_file)
            manifest = read_manifest(self.ann_file, path_key, caption_key, file_format,
                                     backend_args)
            if len(manifest.paths) == len(manifest.bad_rows):
                raise ValueError(f'manifest {self.ann_file} has no usable rows')
            self._paths = PackedStrings(manifest.paths)
            self._captions = PackedStrings(manifest.captions)
            self._bad_rows = manifest.bad_rows
        else:
            self._shard_names = expand_shards(shards)
            self.shard_set = ShardSet([join_root(data_root, s) for s in self._shard_names],
                                      index_cache_dir, shard_cache_size, backend_args)
            if len(self.shard_set) == 0:
                raise ValueError(f'the tar shards {shards!r} hold no samples')

    def __len__(self) -> int:
        return len(self.shard_set) if self.shard_set is not None else len(self._paths)

    @property
    def block_sizes(self) -> Optional[List[int]]:
        return None if self.shard_set is None else list(self.shard_set.counts)

    @property
    def metainfo(self) -> dict:
        if self.shard_set is None:
            return dict(kind='image-text manifest', ann_file=self.ann_file)
        return dict(kind='image-text tar shards', num_shards=len(self.shard_set.shards))

    def load(self, index: int) -> dict:
        check_index(index, len(self), 'ImageTextDataset')
        if self.shard_set is None:
            if index in self._bad_rows:
                line_no, reason = self._bad_rows[index]
                raise BadSampleError(f'{self.ann_file}:{line_no}', reason, 'bad manifest row')
            rel_path = self._paths[index]
            path = join_root(self.data_root, rel_path)
            caption = self._captions[index].strip()
            if not caption:
                raise BadSampleError(path, 'empty caption', 'empty caption')
            img = decode_image(read_bytes(path, self.backend_args), path)
            return make_sample(img, path, f'{rel_path}#{index}', caption=caption)
        sample = self.shard_set.read(index)
        caption = self._caption(sample.text, sample.text_member, sample.image_path)
        img = decode_image(sample.image, sample.image_path)
        return make_sample(img, sample.image_path,
                           f'{self._shard_names[sample.shard_id]}/{sample.key}',
                           caption=caption)

    def _caption(self, data: Optional[bytes], member: str, image_path: str) -> str:
        if data is None:
            raise BadSampleError(image_path, 'no caption member (.txt/.json) in the shard',
                                 'no caption')
        try:
            text = data.decode('utf-8')
            if member.lower().endswith('.json'):
                record = json.loads(text)
                text = next((record[k] for k in self.caption_json_keys
                             if isinstance(record, dict) and isinstance(record.get(k), str)),
                            '')
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadSampleError(image_path, f'unreadable caption {member} ({err})',
                                 'unreadable caption') from None
        caption = text.strip()
        if not caption:
            raise BadSampleError(image_path, f'empty caption ({member})', 'empty caption')
        return caption
