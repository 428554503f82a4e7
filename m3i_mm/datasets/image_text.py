"""Image-caption pairs from a manifest file or from WebDataset-style tar shards."""
import csv
import io
import json
import os.path as osp
from typing import List, Optional, Sequence, Union

from mmengine import fileio

from m3i_mm.registry import DATASETS
from .base import (BadSampleError, ImageSource, PackedStrings, check_index, decode_image,
                   join_root, make_sample, read_bytes)
from .tar_shards import ShardSet, expand_shards

__all__ = ['ImageTextDataset', 'read_manifest']

MANIFEST_FORMATS = {'.jsonl': 'jsonl', '.json': 'jsonl', '.csv': 'csv', '.tsv': 'tsv'}


def read_manifest(path: str, path_key: str = 'path', caption_key: str = 'caption',
                  file_format: Optional[str] = None,
                  backend_args: Optional[dict] = None) -> tuple:
    """Rows of an image-caption manifest as two lists (image paths, captions).

    Formats: JSON Lines (one object per line) or CSV/TSV with a header row; the format
    is taken from the file extension unless ``file_format`` (``'jsonl'``, ``'csv'``,
    ``'tsv'``) is given. A row without the path or caption field is a configuration error
    (raised with its line number); an empty caption is kept and later skipped as a bad
    sample.
    """
    if file_format is None:
        ext = osp.splitext(path)[1].lower()
        if ext not in MANIFEST_FORMATS:
            raise ValueError(f'cannot tell the manifest format of {path} from its extension; '
                             f'pass file_format= one of {sorted(set(MANIFEST_FORMATS.values()))}')
        file_format = MANIFEST_FORMATS[ext]
    text = fileio.get_text(path, backend_args=backend_args)
    paths: List[str] = []
    captions: List[str] = []
    if file_format == 'jsonl':
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}:{line_no}: not a JSON object ({err})') from None
            _append_row(row, path_key, caption_key, paths, captions, f'{path}:{line_no}')
    elif file_format in ('csv', 'tsv'):
        reader = csv.DictReader(io.StringIO(text, newline=''),
                                delimiter=',' if file_format == 'csv' else '\t')
        for field in (path_key, caption_key):
            if reader.fieldnames is None or field not in reader.fieldnames:
                raise ValueError(f'{path}: no column {field!r} in the header '
                                 f'{reader.fieldnames}; set path_key/caption_key')
        for row in reader:
            _append_row(row, path_key, caption_key, paths, captions,
                        f'{path}:{reader.line_num}')
    else:
        raise ValueError(f'unknown manifest format {file_format!r}; use jsonl, csv or tsv')
    return paths, captions


def _append_row(row, path_key: str, caption_key: str, paths: list, captions: list,
                where: str) -> None:
    if not isinstance(row, dict) or not row.get(path_key):
        raise ValueError(f'{where}: row has no {path_key!r} field: {row!r}')
    caption = row.get(caption_key)
    if caption is not None and not isinstance(caption, str):
        raise ValueError(f'{where}: {caption_key!r} must be a string, got {caption!r}')
    paths.append(str(row[path_key]))
    captions.append(caption or '')


@DATASETS.register_module()
class ImageTextDataset(ImageSource):
    """Image-caption pairs from a manifest (``ann_file``) or tar shards (``shards``).

    Manifest: JSON Lines, CSV or TSV rows with an image path (relative to ``data_root``
    unless absolute or a URI) and a caption, read through mmengine's file backends.

    Shards: WebDataset-style uncompressed tars, ``key.jpg`` (or another image extension)
    with ``key.txt`` or ``key.json`` (caption in one of ``caption_json_keys``). Only one
    sample count per shard is held; see :mod:`m3i_mm.datasets.tar_shards`.

    Bad samples raise :class:`~m3i_mm.datasets.base.BadSampleError`: a missing, truncated
    or undecodable image, or an empty/missing caption.

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
            paths, captions = read_manifest(self.ann_file, path_key, caption_key, file_format,
                                            backend_args)
            if not paths:
                raise ValueError(f'manifest {self.ann_file} has no rows')
            self._paths, self._captions = PackedStrings(paths), PackedStrings(captions)
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
            rel_path = self._paths[index]
            path = join_root(self.data_root, rel_path)
            caption = self._captions[index].strip()
            if not caption:
                raise BadSampleError(path, 'empty caption')
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
            raise BadSampleError(image_path, 'no caption member (.txt/.json) in the shard')
        try:
            text = data.decode('utf-8')
            if member.lower().endswith('.json'):
                record = json.loads(text)
                text = next((record[k] for k in self.caption_json_keys
                             if isinstance(record, dict) and isinstance(record.get(k), str)),
                            '')
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadSampleError(image_path, f'unreadable caption {member} ({err})') from None
        caption = text.strip()
        if not caption:
            raise BadSampleError(image_path, f'empty caption ({member})')
        return caption
