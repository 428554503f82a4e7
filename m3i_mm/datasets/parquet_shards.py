"""Random access into parquet files that hold the images themselves (img2dataset's
``--output_format parquet``).

img2dataset writes one ``NNNNN.parquet`` per shard, a row per URL of its input: the
input's columns (``url``, ``caption``, ...), then ``key``, ``status``, ``error_message``,
``width``, ``height``, ``original_width``, ``original_height`` and the encoded image in a
binary column named after the encode format (``jpg`` by default), null where the download
failed; rows are written in row groups of 100. A row without image bytes is a failed
download, not a sample: it is left out, as img2dataset's tar output leaves it out.

As for tar shards, memory stays proportional to the number of files: one sample count per
file is held; a file's table of usable rows is built when it is first read and kept in a
small LRU, and row groups are read whole (parquet has no smaller unit of access), also
into a small LRU. A sample read therefore decodes its row group's caption and image
columns (about 100 images for img2dataset's files): reading in shuffled order costs more
I/O than tar shards, which read one member each; use img2dataset's ``webdataset`` output
where reading speed matters.
"""
import os
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .base import BadSampleError, check_index
from .tar_shards import ShardSample, _is_local

__all__ = ['ParquetShardSet', 'import_pyarrow']


def import_pyarrow():
    """``pyarrow.parquet``, or an ImportError that says how to get it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f'reading parquet files needs pyarrow ({err}); pip install pyarrow '
                          '(it is in requirements/runtime.txt)') from None
    return pq


class ParquetShardSet:
    """Parquet files with embedded images, addressed by one sample index.

    Args:
        shards: Local parquet file paths.
        image_key: Binary column of the encoded images (img2dataset: the encode format,
            ``jpg`` by default).
        caption_key: Column of the captions (img2dataset: ``caption``, the input's
            caption column renamed).
        key_column: Column of the sample keys, if present (img2dataset: ``key``); else the
            row number is the key.
        cache_size: Row groups (and files' row tables) kept in memory per process.
    """

    def __init__(self, shards: Sequence[str], image_key: str = 'jpg',
                 caption_key: str = 'caption', key_column: str = 'key',
                 cache_size: int = 4, backend_args: Optional[dict] = None) -> None:
        if not shards:
            raise ValueError('no parquet shards given')
        remote = [s for s in shards if not _is_local(s, backend_args)]
        if remote:
            raise ValueError(f'parquet shards must be local files (or a mounted file '
                             f'system), got {remote[0]}')
        self.pq = import_pyarrow()
        self.shards = list(shards)
        self.image_key = image_key
        self.caption_key = caption_key
        self.key_column = key_column
        self.cache_size = max(1, int(cache_size))
        self._rows: 'OrderedDict[int, np.ndarray]' = OrderedDict()
        self._groups: 'OrderedDict[Tuple[int, int], dict]' = OrderedDict()
        self._files: 'OrderedDict[int, object]' = OrderedDict()
        self._pid = os.getpid()
        self.counts = [len(self._usable_rows(i)) for i in range(len(self.shards))]
        self._rows.clear()
        self._starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getstate__(self) -> dict:  # open files and caches stay in their process
        state = dict(self.__dict__, _rows=OrderedDict(), _groups=OrderedDict(),
                     _files=OrderedDict())
        state.pop('pq')
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, pq=import_pyarrow())

    # ------------------------------------------------------------------ files
    def _file(self, shard_id: int):
        """The open ``ParquetFile`` of a shard (a few kept open; reopened after a fork)."""
        if self._pid != os.getpid():
            self._files.clear()
            self._groups.clear()
            self._pid = os.getpid()
        pf = self._files.get(shard_id)
        if pf is None:
            path = self.shards[shard_id]
            try:
                pf = self.pq.ParquetFile(path)
            except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
                raise ValueError(f'{path} is not a readable parquet file ({err})') from None
            self._check_schema(path, pf.schema_arrow.names)
            self._files[shard_id] = pf
            if len(self._files) > self.cache_size:
                self._files.popitem(last=False)
        else:
            self._files.move_to_end(shard_id)
        return pf

    def _check_schema(self, path: str, names: List[str]) -> None:
        if self.image_key not in names:
            raise ValueError(
                f'{path} has no image column {self.image_key!r} (its columns: {names}). '
                'img2dataset writes a metadata-only .parquet next to each .tar of its '
                "webdataset output: read the .tar shards then; for its parquet output set "
                'image_key to the encode format')
        if self.caption_key not in names:
            raise ValueError(f'{path} has no caption column {self.caption_key!r} (its '
                             f'columns: {names}); set caption_key')

    def _usable_rows(self, shard_id: int) -> np.ndarray:
        """Row numbers of the rows with image bytes (cached).

        Read from the parquet statistics where they say a row group has no null image
        (nothing is decoded then); else from the image column's validity.
        """
        rows = self._rows.get(shard_id)
        if rows is not None:
            self._rows.move_to_end(shard_id)
            return rows
        pf = self._file(shard_id)
        metadata = pf.metadata
        column = pf.schema_arrow.get_field_index(self.image_key)
        parts, first = [], 0
        for group in range(metadata.num_row_groups):
            num = metadata.row_group(group).num_rows
            stats = metadata.row_group(group).column(column).statistics
            if stats is not None and stats.has_null_count and stats.null_count == 0:
                parts.append(np.arange(first, first + num, dtype=np.int64))
            else:
                valid = pf.read_row_group(group, columns=[self.image_key]).column(0).is_valid()
                parts.append(first + np.flatnonzero(np.asarray(valid)).astype(np.int64))
            first += num
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        self._rows[shard_id] = rows
        if len(self._rows) > self.cache_size:
            self._rows.popitem(last=False)
        return rows

    def _row_group(self, shard_id: int, row: int) -> Tuple[dict, int]:
        """(columns of the row group holding ``row``, the row's place in it)."""
        pf = self._file(shard_id)
        metadata = pf.metadata
        first = 0
        for group in range(metadata.num_row_groups):
            num = metadata.row_group(group).num_rows
            if row < first + num:
                break
            first += num
        key = (shard_id, group)
        columns = self._groups.get(key)
        if columns is None:
            names = [self.image_key, self.caption_key]
            if self.key_column in pf.schema_arrow.names:
                names.append(self.key_column)
            table = pf.read_row_group(group, columns=names)
            columns = {name: table.column(name).to_pylist() for name in names}
            self._groups[key] = columns
            if len(self._groups) > self.cache_size:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(key)
        return columns, row - first

    # ------------------------------------------------------------------ reading
    def locate(self, index: int) -> Tuple[int, int]:
        """(shard id, position among the shard's usable rows) of a sample index."""
        check_index(index, len(self), 'parquet shards')
        shard_id = int(np.searchsorted(self._starts, index, side='right')) - 1
        return shard_id, index - int(self._starts[shard_id])

    def read(self, index: int) -> ShardSample:
        """Key, image bytes and caption (UTF-8 bytes, None if null) of sample ``index``."""
        shard_id, pos = self.locate(index)
        path = self.shards[shard_id]
        rows = self._usable_rows(shard_id)
        if len(rows) != self.counts[shard_id]:
            raise RuntimeError(f'{path} now holds {len(rows)} images, but '
                               f'{self.counts[shard_id]} when the dataset was built: the '
                               'file changed during the run')
        row = int(rows[pos])
        columns, at = self._row_group(shard_id, row)
        key = columns.get(self.key_column, [None] * (at + 1))[at]
        key = str(row) if key is None else str(key)
        image = columns[self.image_key][at]
        where = f'{path}:row {row}'
        if image is None:
            raise BadSampleError(where, 'no image bytes', 'missing file')
        caption = columns[self.caption_key][at]
        if caption is not None and not isinstance(caption, str):
            raise BadSampleError(where, f'caption is a {type(caption).__name__}, not a '
                                 'string', 'unreadable caption')
        return ShardSample(shard_id=shard_id, key=key, image_path=where, image=image,
                           text_member=self.caption_key,
                           text=None if caption is None else caption.encode('utf-8'))
