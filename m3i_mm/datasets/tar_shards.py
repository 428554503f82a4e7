"""Random access into WebDataset-style tar shards without an index of all samples.

A shard is an uncompressed tar whose members are grouped into samples by key: the
member path up to the first dot of its file name (``0042.jpg`` + ``0042.txt`` -> key
``0042``). Large corpora ship as tens of thousands of such shards.

Memory stays proportional to the number of shards: :class:`ShardSet` keeps one sample
count per shard. The member-offset table of a shard (key, offset and size of its image
and caption members) is built when the shard is first read - from a sidecar index file,
or by scanning the tar headers once - and kept in a small LRU. Members are then read by
offset, one seek each.

Sidecar index (``<shard>.idx``, written by :func:`write_shard_index` or
``tools/dataset_converters/make_tar_index.py``): a JSON header line
``{"format": "m3i_mm.tar_index", "version": 1, "tar_bytes": ..., "num_samples": ...}``
followed by one tab-separated line per sample:
``key  image_member  image_offset  image_size  text_member  text_offset  text_size``
(the text fields are empty / -1 when the sample has no caption member).
"""
import hashlib
import io
import json
import logging
import os
import os.path as osp
import re
import tarfile
from collections import OrderedDict
from typing import BinaryIO, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine import fileio
from mmengine.logging import print_log
from tqdm import tqdm

from .base import BadSampleError, PackedStrings, check_index

__all__ = ['IMAGE_EXTENSIONS', 'TEXT_EXTENSIONS', 'ShardSample', 'ShardSet', 'ShardTable',
           'expand_braces', 'expand_shards', 'scan_tar', 'shard_index_path',
           'write_shard_index']

IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp', 'bmp', 'tif', 'tiff', 'ppm', 'pgm')
TEXT_EXTENSIONS = ('txt', 'json')  # preference order when a sample has both
INDEX_FORMAT = 'm3i_mm.tar_index'
INDEX_VERSION = 1
_RANGE = re.compile(r'^(-?\d+)\.\.(-?\d+)$')


def expand_braces(pattern: str) -> List[str]:
    """Expand shell-style braces: ``a-{000..002}.tar`` and ``{x,y}`` (nested, repeated).

    Numeric ranges keep the zero padding of their first bound.
    """
    start = pattern.find('{')
    if start < 0:
        if '}' in pattern:
            raise ValueError(f'unbalanced "}}" in shard pattern {pattern!r}')
        return [pattern]
    depth = 0
    for end in range(start, len(pattern)):
        depth += {'{': 1, '}': -1}.get(pattern[end], 0)
        if depth == 0:
            break
    else:
        raise ValueError(f'unbalanced "{{" in shard pattern {pattern!r}')
    body, head, tail = pattern[start + 1:end], pattern[:start], pattern[end + 1:]
    match = _RANGE.match(body)
    if match:
        lo, hi = int(match.group(1)), int(match.group(2))
        width = len(match.group(1))
        step = 1 if hi >= lo else -1
        choices = [f'{i:0{width}d}' for i in range(lo, hi + step, step)]
    else:
        choices, depth, last = [], 0, 0
        for i, ch in enumerate(body):
            depth += {'{': 1, '}': -1}.get(ch, 0)
            if ch == ',' and depth == 0:
                choices.append(body[last:i])
                last = i + 1
        choices.append(body[last:])
        choices = [c for choice in choices for c in expand_braces(choice)]
    return [head + c + rest for c in choices for rest in expand_braces(tail)]


def _split_member(name: str) -> Tuple[str, str]:
    """``dir/0042.seg.png`` -> (``dir/0042``, ``seg.png``), the WebDataset convention."""
    directory, base = osp.split(name)
    stem, _, ext = base.partition('.')
    return (osp.join(directory, stem) if directory else stem), ext.lower()


class ShardSample(NamedTuple):
    """One sample's members as read from its shard (paths are ``shard:member``)."""
    shard_id: int
    key: str
    image_path: str
    image: bytes
    text_member: str  # '' when the sample has no caption member
    text: Optional[bytes]


class ShardTable:
    """Member offsets of one shard's samples (compact: numpy arrays + packed strings)."""

    def __init__(self, rows: Sequence[tuple]) -> None:
        self.keys = PackedStrings(r[0] for r in rows)
        self.image_members = PackedStrings(r[1] for r in rows)
        self.text_members = PackedStrings(r[4] for r in rows)
        self.spans = np.array([[r[2], r[3], r[5], r[6]] for r in rows],
                              dtype=np.int64).reshape(-1, 4)

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self):
        for i in range(len(self)):
            img_off, img_size, txt_off, txt_size = (int(v) for v in self.spans[i])
            yield (self.keys[i], self.image_members[i], img_off, img_size,
                   self.text_members[i], txt_off, txt_size)


def scan_tar(fileobj: BinaryIO, tar_bytes: int, name: str) -> ShardTable:
    """Read a tar's headers (not its data) and group members into samples.

    A sample needs an image member; its caption member (``.txt``, else ``.json``) is
    optional here (the dataset treats a missing caption as a bad sample). Members whose
    data run past the end of a truncated file, and keys without an image, are left out
    with a warning.
    """
    samples: Dict[str, dict] = OrderedDict()
    skipped: List[str] = []
    try:
        with tarfile.open(fileobj=fileobj, mode='r:') as tar:
            for info in tar:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > tar_bytes:
                    skipped.append(f'{info.name} (cut off by the end of the file)')
                    continue
                key, ext = _split_member(info.name)
                if '\t' in info.name or '\n' in info.name:
                    skipped.append(f'{info.name!r} (tab or newline in the name)')
                    continue
                entry = samples.setdefault(key, {})
                if ext in IMAGE_EXTENSIONS and 'image' not in entry:
                    entry['image'] = (info.name, info.offset_data, info.size)
                elif ext in TEXT_EXTENSIONS:
                    entry.setdefault(ext, (info.name, info.offset_data, info.size))
    except tarfile.ReadError as err:
        if not samples:
            raise ValueError(f'{name} is not a readable uncompressed tar file ({err})') \
                from None
        skipped.append(f'everything after the last complete member ({err})')
    rows = []
    for key, entry in samples.items():
        if 'image' not in entry:
            skipped.append(f'key {key!r} (no image member)')
            continue
        text = next((entry[ext] for ext in TEXT_EXTENSIONS if ext in entry), ('', -1, -1))
        rows.append((key, *entry['image'], *text))
    if skipped:
        print_log(f'{name}: left out of the shard index: ' + '; '.join(skipped[:5]) +
                  (f' and {len(skipped) - 5} more' if len(skipped) > 5 else ''),
                  logger='current', level=logging.WARNING)
    return ShardTable(rows)


def _is_local(path: str, backend_args: Optional[dict]) -> bool:
    return isinstance(fileio.get_file_backend(path, backend_args=backend_args),
                      fileio.LocalBackend)


def shard_index_path(shard: str, cache_dir: Optional[str] = None) -> str:
    """Where the sidecar index of ``shard`` lives: next to it, or in ``cache_dir``.

    In ``cache_dir`` the file name carries a hash of the shard's absolute path (or URI),
    so shards with equal names in different folders do not collide.
    """
    if cache_dir is None:
        return shard + '.idx'
    location = shard if '://' in shard else osp.abspath(shard)
    digest = hashlib.sha1(location.encode('utf-8')).hexdigest()[:16]
    return osp.join(cache_dir, f'{digest}-{osp.basename(shard)}.idx')


def _format_index(table: ShardTable, tar_bytes: int) -> str:
    header = json.dumps(dict(format=INDEX_FORMAT, version=INDEX_VERSION,
                             tar_bytes=tar_bytes, num_samples=len(table)))
    return '\n'.join([header] + ['\t'.join(map(str, row)) for row in table.rows()]) + '\n'


def _parse_header(line: str, where: str) -> dict:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get('format') != INDEX_FORMAT:
        raise ValueError(f'{where} is not an m3i_mm tar index (bad header line)')
    if header.get('version') != INDEX_VERSION:
        raise ValueError(f'{where}: unsupported tar index version {header.get("version")}')
    return header


def _parse_index(text: str, where: str) -> Tuple[dict, ShardTable]:
    lines = text.splitlines()
    header = _parse_header(lines[0] if lines else '', where)
    rows = []
    for line in lines[1:]:
        key, img, img_off, img_size, txt, txt_off, txt_size = line.split('\t')
        rows.append((key, img, int(img_off), int(img_size), txt, int(txt_off),
                     int(txt_size)))
    if len(rows) != header['num_samples']:
        raise ValueError(f'{where}: header says {header["num_samples"]} samples, '
                         f'found {len(rows)} lines')
    return header, ShardTable(rows)


def _scan_shard(shard: str, backend_args: Optional[dict]) -> Tuple[ShardTable, int]:
    if _is_local(shard, backend_args):
        with open(shard, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            return scan_tar(f, size, shard), size
    data = fileio.get(shard, backend_args=backend_args)
    return scan_tar(io.BytesIO(data), len(data), shard), len(data)


def _write_index(path: str, table: ShardTable, tar_bytes: int) -> None:
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(_format_index(table, tar_bytes))
    os.replace(tmp, path)  # atomic: several ranks may index the same shard at once


def write_shard_index(shard: str, index_path: Optional[str] = None,
                      backend_args: Optional[dict] = None) -> int:
    """Scan ``shard`` and write its sidecar index; returns its number of samples."""
    table, size = _scan_shard(shard, backend_args)
    _write_index(index_path or shard_index_path(shard), table, size)
    return len(table)


class ShardSet:
    """A list of tar shards addressed by one sample index ``0 .. total - 1``.

    Args:
        shards: Shard paths (any mmengine backend; reads are by offset on local files,
            other backends fetch whole shards into a small cache).
        index_cache_dir: Where sidecar indexes are looked up / written when not next to
            the shards (for read-only data). None: next to the shards only.
        table_cache_size: Number of shard offset tables kept in memory per process.
        backend_args: mmengine file backend arguments.
    """

    def __init__(self, shards: Sequence[str], index_cache_dir: Optional[str] = None,
                 table_cache_size: int = 16, backend_args: Optional[dict] = None) -> None:
        if not shards:
            raise ValueError('no tar shards given')
        self.shards = list(shards)
        self.index_cache_dir = index_cache_dir
        self.backend_args = backend_args
        self.table_cache_size = table_cache_size
        self._local = np.array([_is_local(s, backend_args) for s in self.shards])
        self._tables: 'OrderedDict[int, ShardTable]' = OrderedDict()
        self._remote: 'OrderedDict[int, bytes]' = OrderedDict()
        self.counts = self._count_samples()
        self._starts = np.concatenate([[0], np.cumsum(self.counts)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    # ---------------------------------------------------------------- indexes
    def _find_index(self, shard_id: int) -> Optional[Tuple[str, dict]]:
        """(path, header) of a sidecar index of the shard that matches its size, or None."""
        shard = self.shards[shard_id]
        tar_bytes = osp.getsize(shard) if self._local[shard_id] else None
        candidates = [shard_index_path(shard)]
        if self.index_cache_dir is not None:
            candidates.append(shard_index_path(shard, self.index_cache_dir))
        for path in candidates:
            if not fileio.exists(path, backend_args=self.backend_args):
                continue
            if _is_local(path, self.backend_args):
                with open(path, encoding='utf-8') as f:
                    header = _parse_header(f.readline(), path)
            else:
                text = fileio.get_text(path, backend_args=self.backend_args)
                header = _parse_header(text.split('\n', 1)[0], path)
            if tar_bytes is not None and header['tar_bytes'] != tar_bytes:
                print_log(f'{path} describes a {header["tar_bytes"]}-byte shard but '
                          f'{shard} has {tar_bytes} bytes: ignoring the stale index',
                          logger='current', level=logging.WARNING)
                continue
            return path, header
        return None

    def _writable_index_path(self, shard_id: int) -> Optional[str]:
        shard = self.shards[shard_id]
        if self.index_cache_dir is not None:
            return shard_index_path(shard, self.index_cache_dir)
        if self._local[shard_id] and os.access(osp.dirname(shard) or '.', os.W_OK):
            return shard_index_path(shard)
        return None

    def _count_samples(self) -> List[int]:
        counts: List[Optional[int]] = []
        for shard_id in range(len(self.shards)):
            found = self._find_index(shard_id)
            counts.append(found[1]['num_samples'] if found else None)
        missing = [i for i, count in enumerate(counts) if count is None]
        if missing:
            print_log(f'Indexing {len(missing)} of {len(self.shards)} tar shards (once; '
                      f'sidecar indexes are written for next time)', logger='current')
            for shard_id in tqdm(missing, desc='indexing tar shards', unit='shard',
                                 disable=len(missing) < 2):
                table, size = _scan_shard(self.shards[shard_id], self.backend_args)
                counts[shard_id] = len(table)
                out = self._writable_index_path(shard_id)
                if out is not None:
                    _write_index(out, table, size)
        return [int(c) for c in counts]

    def table(self, shard_id: int) -> ShardTable:
        """The offset table of a shard (LRU-cached; from its sidecar or a header scan)."""
        table = self._tables.get(shard_id)
        if table is not None:
            self._tables.move_to_end(shard_id)
            return table
        shard = self.shards[shard_id]
        found = self._find_index(shard_id)
        if found is not None:
            _, table = _parse_index(fileio.get_text(found[0], backend_args=self.backend_args),
                                    found[0])
        else:
            table, _ = _scan_shard(shard, self.backend_args)
        if len(table) != self.counts[shard_id]:
            raise RuntimeError(f'{shard} now holds {len(table)} samples, but '
                               f'{self.counts[shard_id]} when the dataset was built: the '
                               'shard changed during the run')
        self._tables[shard_id] = table
        if len(self._tables) > self.table_cache_size:
            self._tables.popitem(last=False)
        return table

    # ---------------------------------------------------------------- reading
    def locate(self, index: int) -> Tuple[int, int]:
        """(shard id, position within the shard) of a global sample index."""
        check_index(index, len(self), 'tar shards')
        shard_id = int(np.searchsorted(self._starts, index, side='right')) - 1
        return shard_id, index - int(self._starts[shard_id])

    def _read_span(self, shard_id: int, offset: int, size: int, member: str) -> bytes:
        shard = self.shards[shard_id]
        if self._local[shard_id]:
            try:
                with open(shard, 'rb') as f:
                    f.seek(offset)
                    data = f.read(size)
            except OSError as err:
                raise BadSampleError(f'{shard}:{member}', f'unreadable shard ({err})') \
                    from None
        else:
            blob = self._remote.get(shard_id)
            if blob is None:
                blob = fileio.get(shard, backend_args=self.backend_args)
                self._remote[shard_id] = blob
                if len(self._remote) > 2:
                    self._remote.popitem(last=False)
            data = blob[offset:offset + size]
        if len(data) != size:
            raise BadSampleError(f'{shard}:{member}', 'member cut off by the end of the shard')
        return data

    def read(self, index: int) -> ShardSample:
        """The members of sample ``index``: key, image and (if any) caption bytes."""
        shard_id, pos = self.locate(index)
        table = self.table(shard_id)
        img_off, img_size, txt_off, txt_size = (int(v) for v in table.spans[pos])
        image_member, text_member = table.image_members[pos], table.text_members[pos]
        return ShardSample(
            shard_id=shard_id, key=table.keys[pos],
            image_path=f'{self.shards[shard_id]}:{image_member}',
            image=self._read_span(shard_id, img_off, img_size, image_member),
            text_member=text_member,
            text=None if txt_off < 0 else self._read_span(shard_id, txt_off, txt_size,
                                                          text_member))


def expand_shards(shards: Union[str, Sequence[str]]) -> List[str]:
    """Shard names from a brace pattern or a list of paths/patterns."""
    patterns = [shards] if isinstance(shards, str) else list(shards)
    return [path for pattern in patterns for path in expand_braces(pattern)]
