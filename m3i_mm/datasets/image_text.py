"""Image-caption pairs from a manifest file or from WebDataset-style tar shards."""
import csv
import json
import logging
import os.path as osp
from typing import (BinaryIO, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple,
                    Union)

from mmengine import fileio
from mmengine.logging import print_log

from m3i_mm.registry import DATASETS
from .base import (BadSampleError, ImageSource, PackedStrings, PathRules, check_decode_backend,
                   check_index, decode_image, join_root, make_sample, read_bytes,
                   refuse_directory)
from .parquet_shards import ParquetShardSet, import_pyarrow
from .tar_shards import ShardSet, resolve_shards

__all__ = ['ImageTextDataset', 'Manifest', 'looks_like_image_location', 'read_manifest']

MANIFEST_FORMATS = {'.jsonl': 'jsonl', '.json': 'jsonl', '.csv': 'csv', '.tsv': 'tsv',
                    '.parquet': 'parquet'}
FORMATS = ('jsonl', 'csv', 'tsv', 'parquet')
#: File name endings that mark a manifest field as an image location (with ``://``).
_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.webp', '.bmp', '.gif', '.tif', '.tiff',
                   '.ppm', '.pgm')


class Manifest(NamedTuple):
    """The rows of an image-caption manifest.

    Attributes:
        paths: Image path of each row (``''`` for a bad row).
        captions: Caption of each row (``''`` when empty or for a bad row).
        bad_rows: Rows that cannot be used, as ``row -> (location, reason)`` with the
            location ``file:line`` (``file:row N``, 0-based, for parquet); the dataset keeps
            them as bad samples, so they are skipped, logged and counted.
    """
    paths: List[str]
    captions: List[str]
    bad_rows: Dict[int, Tuple[str, str]]


#: ``check_path(path) -> reason or None``: a further test of each row's image path.
PathCheck = Optional[Callable[[str], Optional[str]]]


def read_manifest(path: str, path_key: str = 'path', caption_key: str = 'caption',
                  file_format: Optional[str] = None,
                  backend_args: Optional[dict] = None,
                  columns: Optional[Sequence[str]] = None,
                  check_path: PathCheck = None) -> Manifest:
    """Read an image-caption manifest.

    Formats (from the file extension unless ``file_format`` is given):

    - ``jsonl``: one JSON object per line.
    - ``csv`` / ``tsv``: a header row naming the columns, or no header row, as CC3M's
      ``caption<TAB>url`` and CC12M's ``url<TAB>caption`` files are published. Say so
      with ``columns=['caption', 'url']`` (the column names, in file order; ``path_key`` /
      ``caption_key`` pick among them). Without ``columns``, a first line that lacks the
      ``path_key`` and ``caption_key`` columns but has two fields of which exactly one
      looks like an image location (a URI, or a path with an image extension) is read as
      a header-less file; if it cannot be told which field holds the image, the error
      says to pass ``columns``.
    - ``parquet``: columns ``path_key`` and ``caption_key`` (``columns`` unused), as the
      CC3M/CC12M/LAION URL lists are published (LAION: ``path_key='URL'``,
      ``caption_key='TEXT'``). Parquet files with the images inside (img2dataset's parquet
      output) are shards: ``ImageTextDataset(shards=...)``.

    Every CSV/TSV/JSONL row is one line:

    - TSV reads quotes literally (web caption files are full of them): a line is split at
      its tabs, nothing else.
    - CSV follows RFC 4180 quoting within a line; a quoted field that does not close on
      its own line (an unbalanced ``"`` in a caption, or a caption with a line break) is
      an error naming the file and line, instead of swallowing the following rows.

    Configuration errors name the file and line: a row without the path or caption field
    (a wrong ``path_key``/``caption_key``), a CSV/TSV row whose field count differs from
    the header, a line that is not a JSON object, lines that end in a lone carriage
    return. Rows that cannot be used become bad rows (logged here, then skipped and
    counted as bad samples): a line that is not valid UTF-8, a NUL character in the path
    or caption, a path ``check_path`` refuses. An empty caption is kept and later skipped
    as a bad sample.
    """
    if file_format is None:
        ext = osp.splitext(path)[1].lower()
        if ext not in MANIFEST_FORMATS:
            raise ValueError(f'cannot tell the manifest format of {path} from its extension; '
                             f'pass file_format= one of {FORMATS}')
        file_format = MANIFEST_FORMATS[ext]
    if file_format not in FORMATS:
        raise ValueError(f'unknown manifest format {file_format!r}; use one of {FORMATS}')
    if columns is not None:
        columns = _check_columns(columns, path_key, caption_key, path)
    manifest = Manifest([], [], {})
    with fileio.get_local_path(path, backend_args=backend_args) as local:
        refuse_directory(local, 'manifest', "give the manifest file inside it, or its "
                         "tar/parquet shards (shards='dir/*.tar')")
        if file_format == 'parquet':
            _read_parquet(local, path, path_key, caption_key, manifest, check_path)
        else:
            with open(local, 'rb') as f:
                if file_format == 'jsonl':
                    _read_jsonl(f, path, path_key, caption_key, manifest, check_path)
                else:
                    _read_delimited(f, path, path_key, caption_key, file_format, columns,
                                    manifest, check_path)
    if manifest.bad_rows:
        where = [loc for loc, _ in manifest.bad_rows.values()]
        reasons = sorted({reason.split(' (')[0] for _, reason in manifest.bad_rows.values()})
        print_log(f'{path}: {len(where)} row(s) cannot be used ({"; ".join(reasons)}): '
                  f'{", ".join(where[:10])}{", ..." if len(where) > 10 else ""}; each is '
                  'skipped as a bad sample', logger='current', level=logging.WARNING)
    return manifest


def _check_columns(columns, path_key: str, caption_key: str, path: str) -> List[str]:
    if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"columns must be a list of column names, e.g. ['caption', 'url'], "
                         f'got {columns!r}')
    columns = list(columns)
    for key, name in ((path_key, 'path_key'), (caption_key, 'caption_key')):
        if key not in columns:
            raise ValueError(f'{path}: {name}={key!r} is not one of columns={columns}')
    return columns


def _bad_row(manifest: Manifest, where: str, reason: str) -> None:
    manifest.bad_rows[len(manifest.paths)] = (where, reason)
    manifest.paths.append('')
    manifest.captions.append('')


def _lines(f: BinaryIO, path: str, manifest: Manifest):
    """(line number, text) of the non-blank lines; undecodable ones become bad rows."""
    for line_no, raw in enumerate(f, 1):
        raw = raw.rstrip(b'\r\n')
        if line_no == 1:
            if raw.startswith(b'\xef\xbb\xbf'):  # UTF-8 byte order mark
                raw = raw[3:]
            if b'\r' in raw:
                raise ValueError(
                    f'{path}:1: a carriage return (\\r) inside the first line: the file\'s '
                    'lines end in CR only (classic Mac style), which no manifest reader '
                    "splits; convert them to LF (e.g. tr '\\r' '\\n' < old > new)")
        try:
            text = raw.decode('utf-8')
        except UnicodeDecodeError as err:
            _bad_row(manifest, f'{path}:{line_no}', f'not valid UTF-8 (byte '
                     f'0x{raw[err.start]:02x} at column {err.start + 1})')
            continue
        if text.strip():
            yield line_no, text


def _read_jsonl(f: BinaryIO, path: str, path_key: str, caption_key: str,
                manifest: Manifest, check_path: PathCheck) -> None:
    for line_no, line in _lines(f, path, manifest):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path}:{line_no}: not a JSON object ({err})') from None
        _append_row(row, path_key, caption_key, manifest, f'{path}:{line_no}', check_path)


def looks_like_image_location(field: str) -> bool:
    """Whether a manifest field is an image URI or path (rather than a caption)."""
    field = field.strip()
    if ' ' in field or not field:
        return False
    return '://' in field or field.lower().split('?', 1)[0].endswith(_IMAGE_SUFFIXES)


def _headerless_columns(fields: List[str], path_key: str, caption_key: str
                        ) -> Optional[List[str]]:
    """Column names for a first line that is data, not a header: two fields, exactly one
    of which is an image location. None if the line does not look like data at all."""
    located = [looks_like_image_location(f) for f in fields]
    if not any(located):
        return None
    if len(fields) != 2 or all(located):
        raise ValueError(
            f'the first line has no {path_key!r} and {caption_key!r} columns, so it is not '
            f'a header, but it cannot be told which of its {len(fields)} fields holds the '
            f'image ({fields!r}); say so with columns=, e.g. '
            f"columns=['caption', 'url'], path_key='url' (CC3M) or "
            f"columns=['url', 'caption'], path_key='url' (CC12M)")
    return [path_key if is_path else caption_key for is_path in located]


def _read_delimited(f: BinaryIO, path: str, path_key: str, caption_key: str,
                    file_format: str, columns: Optional[List[str]], manifest: Manifest,
                    check_path: PathCheck) -> None:
    split = _split_csv_line if file_format == 'csv' else _split_tsv_line
    header: Optional[List[str]] = columns
    header_from = 'columns= names'  # what the field count is compared with, for errors
    for line_no, line in _lines(f, path, manifest):
        where = f'{path}:{line_no}'
        fields = split(line, where)
        if header is None:
            if manifest.paths:  # rows before the header: its line was not valid UTF-8
                raise ValueError(f'{path}: the header line is not valid UTF-8')
            if path_key in fields and caption_key in fields:
                header, header_from = fields, 'the header has'
                continue
            try:
                header = _headerless_columns(fields, path_key, caption_key)
            except ValueError as err:
                raise ValueError(f'{where}: {err}') from None
            if header is None:
                missing = [k for k in (path_key, caption_key) if k not in fields]
                raise ValueError(
                    f'{path}: no column {missing[0]!r} in the header {fields}; set '
                    'path_key/caption_key, or columns=[...] if the file has no header row')
            header_from = 'the first line has'
            print_log(f'{path}: no header row; read as {file_format.upper()} columns '
                      f'{header} (pass columns= to say so and silence this)',
                      logger='current')
        if len(fields) != len(header):
            raise ValueError(
                f'{where}: {len(fields)} fields, but {header_from} {len(header)} '
                f'({", ".join(header)})' + ('; a tab inside a caption?' if file_format == 'tsv'
                                            else '; an unquoted comma or quote?'))
        _append_row(dict(zip(header, fields)), path_key, caption_key, manifest, where,
                    check_path)
    if header is None:
        raise ValueError(f'{path}: empty manifest (no header row)')


def _read_parquet(local: str, path: str, path_key: str, caption_key: str,
                  manifest: Manifest, check_path: PathCheck) -> None:
    pq = import_pyarrow()
    try:
        pf = pq.ParquetFile(local)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
        raise ValueError(f'{path} is not a readable parquet file ({err})') from None
    names = pf.schema_arrow.names
    for key, name in ((path_key, 'path_key'), (caption_key, 'caption_key')):
        if key not in names:
            binary = [n for n in names if str(pf.schema_arrow.field(n).type) in
                      ('binary', 'large_binary')]
            hint = (f'; it holds images in {binary[0]!r}: read it as shards '
                    f"(shards='{osp.basename(path)}', image_key='{binary[0]}')"
                    if binary else '')
            raise ValueError(f'{path}: no column {key!r} among {names}; set {name}{hint}')
    table = pf.read(columns=[path_key, caption_key])
    for row, (image, caption) in enumerate(zip(table.column(path_key).to_pylist(),
                                               table.column(caption_key).to_pylist())):
        where = f'{path}:row {row}'
        if image is None:
            _bad_row(manifest, where, f'no {path_key!r} (null)')
            continue
        _append_row({path_key: str(image), caption_key: caption}, path_key, caption_key,
                    manifest, where, check_path)


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


def _append_row(row, path_key: str, caption_key: str, manifest: Manifest, where: str,
                check_path: PathCheck) -> None:
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
    image = str(row[path_key])
    caption = caption or ''
    problem = ('a NUL character in the path' if '\0' in image else
               'a NUL character in the caption' if '\0' in caption else
               check_path(image) if check_path is not None else None)
    if problem is not None:
        _bad_row(manifest, where, problem)
        return
    manifest.paths.append(image)
    manifest.captions.append(caption)


@DATASETS.register_module()
class ImageTextDataset(ImageSource):
    """Image-caption pairs from a manifest (``ann_file``) or shards (``shards``).

    Manifest: JSON Lines, CSV or TSV (with or without a header row) or parquet rows with
    an image path or URL and a caption (rules in :func:`read_manifest`). Paths are
    relative to ``data_root`` unless absolute or a URI; images and manifests are read
    through mmengine's file backends (``http(s)://`` URLs included). Paths may reach
    outside ``data_root`` (absolute paths, ``../``); ``restrict_to_root=True`` makes such
    rows (and URIs) bad rows instead.

    Shards: WebDataset-style uncompressed tars, ``key.jpg`` (or another image extension)
    with ``key.txt`` or ``key.json`` (caption in one of ``caption_json_keys``), as
    img2dataset's ``webdataset`` output writes them; or parquet files with the images
    inside (img2dataset's ``parquet`` output: ``image_key`` and ``caption_key`` columns).
    Brace, glob and ``a::b`` patterns expand (:func:`~.tar_shards.resolve_shards`). Only
    one sample count per shard is held; see :mod:`m3i_mm.datasets.tar_shards`.

    Setting ``shards`` on a source that has an ``ann_file`` (e.g. with ``--cfg-options``
    on a config that names a manifest) switches it to the shards, with a log line; to
    switch a shard source to a manifest, set ``shards=None`` too.

    Bad samples raise :class:`~m3i_mm.datasets.base.BadSampleError`: a missing, truncated
    or undecodable image, an empty/missing caption, a manifest row that cannot be used
    (not valid UTF-8, a NUL character, a path refused), a shard member cut off by the end
    of its file.

    Args:
        data_root: Root of relative image/manifest/shard paths.
        ann_file: Manifest path.
        shards: Shard pattern(s): ``'{00000..00099}.tar'``, ``'shards/*.tar'``,
            ``'*.parquet'`` or a list of paths/patterns.
        path_key: Manifest field/column holding the image path.
        caption_key: Manifest field/column (or parquet shard column) holding the caption.
        file_format: Manifest format (``'jsonl'``, ``'csv'``, ``'tsv'``, ``'parquet'``);
            None: from the extension.
        columns: Column names of a CSV/TSV manifest without a header row, in file order
            (CC3M: ``['caption', 'url']``; CC12M: ``['url', 'caption']``).
        restrict_to_root: Refuse manifest paths outside ``data_root`` (absolute paths,
            ``../`` and URIs) as bad rows.
        caption_json_keys: Fields of a tar shard's ``.json`` member tried for the caption.
        image_key: Binary column of the images in parquet shards (img2dataset: ``jpg``).
        index_cache_dir: Where tar shard indexes are kept if not next to the shards (for
            read-only shard folders).
        shard_cache_size: Shard offset tables (tar) or row groups (parquet) kept in
            memory per process.
        decode_backend: ``'pillow'`` (default: the EXIF orientation is ignored, as in
            torchvision's and SiameseIM's loaders) or ``'cv2'`` (the orientation is
            applied, as in mmcv's ``LoadImageFromFile``); see
            :func:`~m3i_mm.datasets.base.decode_image`.
        backend_args: mmengine file backend arguments.
    """

    def __init__(self,
                 data_root: str = '',
                 ann_file: Optional[str] = None,
                 shards: Union[str, Sequence[str], None] = None,
                 path_key: str = 'path',
                 caption_key: str = 'caption',
                 file_format: Optional[str] = None,
                 columns: Optional[Sequence[str]] = None,
                 restrict_to_root: bool = False,
                 caption_json_keys: Sequence[str] = ('caption', 'text'),
                 image_key: str = 'jpg',
                 index_cache_dir: Optional[str] = None,
                 shard_cache_size: int = 16,
                 decode_backend: str = 'pillow',
                 backend_args: Optional[dict] = None) -> None:
        if ann_file is None and shards is None:
            raise ValueError('ImageTextDataset needs a manifest (ann_file=) or shards '
                             '(shards=)')
        if ann_file is not None and shards is not None:
            print_log(f'ImageTextDataset: both ann_file={ann_file!r} and shards={shards!r} '
                      'are set; reading the shards', logger='current')
            ann_file = None
        self.data_root = data_root
        self.backend_args = backend_args
        self.caption_json_keys = tuple(caption_json_keys)
        self.decode_backend = check_decode_backend(decode_backend)
        self.shard_set: Union[ShardSet, ParquetShardSet, None] = None
        if ann_file is not None:
            self.ann_file = join_root(data_root, ann_file)
            manifest = read_manifest(
                self.ann_file, path_key, caption_key, file_format, backend_args, columns,
                check_path=PathRules(data_root, restrict_to_root, backend_args))
            if len(manifest.paths) == len(manifest.bad_rows):
                raise ValueError(f'manifest {self.ann_file} has no usable rows')
            self._paths = PackedStrings(manifest.paths)
            self._captions = PackedStrings(manifest.captions)
            self._bad_rows = manifest.bad_rows
        else:
            self._shard_names, paths = resolve_shards(shards, data_root, backend_args)
            parquet = [p.lower().endswith('.parquet') for p in paths]
            if any(parquet) and not all(parquet):
                raise ValueError(f'the shards {shards!r} mix parquet and tar files; give one '
                                 'kind per source')
            if all(parquet):
                self.shard_set = ParquetShardSet(paths, image_key, caption_key,
                                                 cache_size=shard_cache_size,
                                                 backend_args=backend_args)
            else:
                self.shard_set = ShardSet(paths, index_cache_dir, shard_cache_size,
                                          backend_args)
            if len(self.shard_set) == 0:
                raise ValueError(f'the shards {shards!r} hold no samples')

    def __len__(self) -> int:
        return len(self.shard_set) if self.shard_set is not None else len(self._paths)

    @property
    def block_sizes(self) -> Optional[List[int]]:
        return None if self.shard_set is None else list(self.shard_set.counts)

    @property
    def metainfo(self) -> dict:
        if self.shard_set is None:
            return dict(kind='image-text manifest', ann_file=self.ann_file)
        kind = 'parquet' if isinstance(self.shard_set, ParquetShardSet) else 'tar'
        return dict(kind=f'image-text {kind} shards', num_shards=len(self.shard_set.shards))

    def load(self, index: int) -> dict:
        check_index(index, len(self), 'ImageTextDataset')
        if self.shard_set is None:
            if index in self._bad_rows:
                where, reason = self._bad_rows[index]
                raise BadSampleError(where, reason, 'bad manifest row')
            rel_path = self._paths[index]
            path = join_root(self.data_root, rel_path)
            caption = self._captions[index].strip()
            if not caption:
                raise BadSampleError(path, 'empty caption', 'empty caption')
            img = decode_image(read_bytes(path, self.backend_args), path, self.decode_backend)
            return make_sample(img, path, f'{rel_path}#{index}', caption=caption)
        sample = self.shard_set.read(index)
        caption = self._caption(sample.text, sample.text_member, sample.image_path)
        img = decode_image(sample.image, sample.image_path, self.decode_backend)
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
        if '\0' in caption:
            raise BadSampleError(image_path, f'a NUL character in the caption ({member})',
                                 'unreadable caption')
        return caption
