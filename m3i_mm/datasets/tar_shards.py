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
``{"format": "m3i_mm.tar_index", "version": 2, "tar_bytes": ..., "tar_mtime_ns": ...,
"fingerprint": ..., "num_samples": ...}`` followed by one tab-separated line per sample:
``key  image_member  image_offset  image_size  text_member  text_offset  text_size``
(the text fields are empty / -1 when the sample has no caption member).

An index is used only for the shard it was made from (:class:`ShardIdentity`): the size
must match, and unless the modification time matches too, the fingerprint of the shard's
first and last 64 KiB must; when a shard's offset table is loaded for reading, the
fingerprint is always checked. A stale, corrupt or old-version index is ignored with a
warning naming it, and the shard is scanned again (and its index rewritten where
possible). Indexes of shards on other storage backends are trusted as they are.
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

from m3i_mm.utils.io import atomic_write_text
from .base import BadSampleError, PackedStrings, check_index

__all__ = ['IMAGE_EXTENSIONS', 'TEXT_EXTENSIONS', 'ShardIdentity', 'ShardSample', 'ShardSet',
           'ShardTable', 'expand_braces', 'expand_shards', 'scan_tar', 'shard_index_path',
           'stale_index_reason', 'write_shard_index']

IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp', 'bmp', 'tif', 'tiff', 'ppm', 'pgm')
TEXT_EXTENSIONS = ('txt', 'json')  # preference order when a sample has both
INDEX_FORMAT = 'm3i_mm.tar_index'
INDEX_VERSION = 2  # 1 had no mtime/fingerprint: such indexes are rebuilt
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
    optional here (the dataset treats a missing caption as a bad sample). Keys without an
    image are left out with a warning.

    A damaged shard loses nothing silently. A member whose data run past the end of a
    truncated file stays in the table, so that reading it raises a bad sample ("cut off
    by the end of the shard") that is counted; a file cut (or damaged) inside a tar
    header, after which no member can be found, is logged with the shard and the byte
    offset, and the member named in the partial header, if readable, is kept as cut off.
    """
    samples: Dict[str, dict] = OrderedDict()
    skipped: List[str] = []
    tar = None
    try:
        tar = tarfile.open(fileobj=fileobj, mode='r:')
        for info in tar:
            if not info.isfile():
                continue
            _add_member(samples, skipped, info.name, info.offset_data, info.size)
    except tarfile.ReadError as err:
        if tar is None or not samples:
            raise ValueError(f'{name} is not a readable uncompressed tar file ({err})') \
                from None
    damage = _damage_after_members(fileobj, tar.offset, tar_bytes)
    if damage is not None:
        header = damage[1]
        member, size = _partial_header_member(header)
        lost = ''
        if member is not None:
            _add_member(samples, skipped, member, tar.offset + 512,
                        max(size, tar_bytes - tar.offset - 511))
            lost = f'; {member!r}, named in the cut header, is kept as cut off'
        print_log(f'{name}: the tar data stop at byte {tar.offset} of {tar_bytes}: the file '
                  'is cut (or damaged) inside a tar header, so the members after that byte '
                  f'are lost{lost}. Re-create or re-download the shard.',
                  logger='current', level=logging.WARNING)
    rows = []
    cut_off = 0
    for key, entry in samples.items():
        if 'image' not in entry:
            skipped.append(f'key {key!r} (no image member)')
            continue
        text = next((entry[ext] for ext in TEXT_EXTENSIONS if ext in entry), ('', -1, -1))
        cut_off += any(off + size > tar_bytes for _, off, size in (entry['image'], text)
                       if off >= 0)
        rows.append((key, *entry['image'], *text))
    if cut_off:
        print_log(f'{name}: {cut_off} sample(s) have members cut off by the end of the file '
                  f'({tar_bytes} bytes); they are counted as bad samples when read',
                  logger='current', level=logging.WARNING)
    if skipped:
        print_log(f'{name}: left out of the shard index: ' + '; '.join(skipped[:5]) +
                  (f' and {len(skipped) - 5} more' if len(skipped) > 5 else ''),
                  logger='current', level=logging.WARNING)
    return ShardTable(rows)


def _add_member(samples: Dict[str, dict], skipped: List[str], member: str, offset: int,
                size: int) -> None:
    if '\t' in member or '\n' in member:
        skipped.append(f'{member!r} (tab or newline in the name)')
        return
    key, ext = _split_member(member)
    entry = samples.setdefault(key, {})
    if ext in IMAGE_EXTENSIONS and 'image' not in entry:
        entry['image'] = (member, offset, size)
    elif ext in TEXT_EXTENSIONS:
        entry.setdefault(ext, (member, offset, size))


def _damage_after_members(fileobj: BinaryIO, stop: int, tar_bytes: int
                          ) -> Optional[Tuple[int, bytes]]:
    """Whether the bytes where header parsing stopped are a damaged header, not the
    all-zero end-of-archive blocks. Returns (offset, the header's bytes) if damaged."""
    if stop >= tar_bytes:
        return None  # the last member's data were cut: its sample is kept as cut off
    fileobj.seek(stop)
    header = fileobj.read(512)
    if any(header):
        return stop, header
    position = stop + len(header)
    while position < tar_bytes:  # the end blocks (and record padding) must be zeros
        chunk = fileobj.read(min(1 << 20, tar_bytes - position))
        if not chunk:
            break
        if any(chunk):
            return stop, header
        position += len(chunk)
    return None


def _partial_header_member(header: bytes) -> Tuple[Optional[str], int]:
    """(member name, data size) from what is left of a ustar header; (None, 0) if unreadable."""
    if len(header) < 100:
        return None, 0
    try:
        member = header[:100].split(b'\0', 1)[0].decode('utf-8')
    except UnicodeDecodeError:
        return None, 0
    if not member or not member.isprintable():
        return None, 0
    try:
        size = int(header[124:136].split(b'\0', 1)[0].strip() or b'0', 8)
    except ValueError:
        size = 0
    return member, size


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


class ShardIdentity(NamedTuple):
    """What identifies the content of a shard an index was made from.

    Attributes:
        tar_bytes: File size.
        mtime_ns: Modification time (local files; None for other backends).
        fingerprint: sha256 (hex, 32 digits) of the size and the first and last
            :data:`FINGERPRINT_BLOCK` bytes: a shard repacked at the same size (other
            samples, other order) changes its first or last members, hence this.
    """
    tar_bytes: int
    mtime_ns: Optional[int]
    fingerprint: str


FINGERPRINT_BLOCK = 64 * 1024


def _fingerprint(fileobj: BinaryIO, size: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    fileobj.seek(0)
    digest.update(fileobj.read(FINGERPRINT_BLOCK))
    fileobj.seek(max(0, size - FINGERPRINT_BLOCK))
    digest.update(fileobj.read(FINGERPRINT_BLOCK))
    return digest.hexdigest()[:32]


def _local_identity(shard: str, with_fingerprint: bool = True) -> ShardIdentity:
    with open(shard, 'rb') as f:
        stat = os.fstat(f.fileno())
        fingerprint = _fingerprint(f, stat.st_size) if with_fingerprint else ''
    return ShardIdentity(stat.st_size, stat.st_mtime_ns, fingerprint)


def _format_index(table: ShardTable, identity: ShardIdentity) -> str:
    header = json.dumps(dict(format=INDEX_FORMAT, version=INDEX_VERSION,
                             tar_bytes=identity.tar_bytes, tar_mtime_ns=identity.mtime_ns,
                             fingerprint=identity.fingerprint, num_samples=len(table)))
    return '\n'.join([header] + ['\t'.join(map(str, row)) for row in table.rows()]) + '\n'


def _parse_header(line: str, where: str) -> dict:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get('format') != INDEX_FORMAT:
        raise ValueError(f'{where} is not an m3i_mm tar index (bad header line)')
    if header.get('version') != INDEX_VERSION:
        raise ValueError(f'{where} has tar index version {header.get("version")}, this '
                         f'm3i_mm reads version {INDEX_VERSION}')
    for field in ('tar_bytes', 'num_samples'):
        if not isinstance(header.get(field), int) or header[field] < 0:
            raise ValueError(f'{where}: bad {field!r} in the header line')
    return header


def _parse_index(text: str, where: str) -> Tuple[dict, ShardTable]:
    lines = text.splitlines()
    header = _parse_header(lines[0] if lines else '', where)
    rows = []
    for line_no, line in enumerate(lines[1:], 2):
        fields = line.split('\t')
        try:
            key, img, img_off, img_size, txt, txt_off, txt_size = fields
            rows.append((key, img, int(img_off), int(img_size), txt, int(txt_off),
                         int(txt_size)))
        except ValueError:
            raise ValueError(f'{where}:{line_no}: malformed index line (expected key, image '
                             'member, offset, size, text member, offset, size separated by '
                             f'tabs, got {len(fields)} fields)') from None
    if len(rows) != header['num_samples']:
        raise ValueError(f'{where}: header says {header["num_samples"]} samples, '
                         f'found {len(rows)} lines')
    return header, ShardTable(rows)


def _read_index_header(path: str, backend_args: Optional[dict]) -> dict:
    if _is_local(path, backend_args):
        with open(path, encoding='utf-8', errors='replace') as f:
            return _parse_header(f.readline(), path)
    text = fileio.get_text(path, backend_args=backend_args)
    return _parse_header(text.split('\n', 1)[0], path)


def _stale_reason(shard: str, header: dict, verify_content: bool) -> Optional[str]:
    """Why the index ``header`` does not describe the local file ``shard`` (None if it does).

    Size first; then the modification time, and if that differs (or ``verify_content``)
    the fingerprint of the first and last blocks.
    """
    identity = _local_identity(shard, with_fingerprint=False)
    if header['tar_bytes'] != identity.tar_bytes:
        return (f'it describes a {header["tar_bytes"]}-byte shard but {shard} has '
                f'{identity.tar_bytes} bytes')
    if header.get('tar_mtime_ns') == identity.mtime_ns and not verify_content:
        return None
    if header.get('fingerprint') != _local_identity(shard).fingerprint:
        return (f'{shard} has the same size but other content (first/last blocks) than '
                'when it was indexed: it was repacked or replaced')
    return None


def stale_index_reason(shard: str, index_path: str, backend_args: Optional[dict] = None
                       ) -> Optional[str]:
    """Why ``index_path`` cannot be used for the local ``shard``, or None if it can.

    The content is checked in full (size and fingerprint), as ``make_tar_index.py
    --skip-existing`` needs.
    """
    if not fileio.exists(index_path, backend_args=backend_args):
        return 'no index'
    try:
        header = _read_index_header(index_path, backend_args)
    except ValueError as err:
        return str(err)
    return _stale_reason(shard, header, verify_content=True)


def _scan_shard(shard: str, backend_args: Optional[dict]) -> Tuple[ShardTable, ShardIdentity]:
    if _is_local(shard, backend_args):
        with open(shard, 'rb') as f:
            stat = os.fstat(f.fileno())
            table = scan_tar(f, stat.st_size, shard)
            return table, ShardIdentity(stat.st_size, stat.st_mtime_ns,
                                        _fingerprint(f, stat.st_size))
    data = fileio.get(shard, backend_args=backend_args)
    table = scan_tar(io.BytesIO(data), len(data), shard)
    return table, ShardIdentity(len(data), None, _fingerprint(io.BytesIO(data), len(data)))


def _write_index(path: str, table: ShardTable, identity: ShardIdentity) -> None:
    # atomic: several ranks and workers may index the same shard at once
    atomic_write_text(path, _format_index(table, identity))


def write_shard_index(shard: str, index_path: Optional[str] = None,
                      backend_args: Optional[dict] = None) -> int:
    """Scan ``shard`` and write its sidecar index; returns its number of samples."""
    table, identity = _scan_shard(shard, backend_args)
    _write_index(index_path or shard_index_path(shard), table, identity)
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
    def _find_index(self, shard_id: int, verify_content: bool = False
                    ) -> Optional[Tuple[str, dict]]:
        """(path, header) of a sidecar index made from this very shard, or None.

        Stale, corrupt and old-version indexes are skipped with a warning naming them
        (the shard is then scanned again). See the module docstring for the checks.
        """
        shard = self.shards[shard_id]
        candidates = [shard_index_path(shard)]
        if self.index_cache_dir is not None:
            candidates.append(shard_index_path(shard, self.index_cache_dir))
        for path in candidates:
            if not fileio.exists(path, backend_args=self.backend_args):
                continue
            try:
                header = _read_index_header(path, self.backend_args)
                reason = _stale_reason(shard, header, verify_content) \
                    if self._local[shard_id] else None
            except ValueError as err:
                reason = str(err)
            if reason is not None:
                print_log(f'ignoring the tar index {path}: {reason}; the shard is scanned '
                          'again', logger='current', level=logging.WARNING)
                continue
            if self._local[shard_id]:
                self._refresh_mtime(shard, path, header)
            return path, header
        return None

    @staticmethod
    def _refresh_mtime(shard: str, path: str, header: dict) -> None:
        """Record a new modification time of an unchanged shard (e.g. copied without
        ``-p``), so that the next start needs no fingerprint."""
        identity = _local_identity(shard, with_fingerprint=False)
        if header.get('tar_mtime_ns') == identity.mtime_ns or not os.access(
                osp.dirname(osp.abspath(path)), os.W_OK):
            return
        with open(path, encoding='utf-8') as f:
            lines = f.read().split('\n', 1)
        header = dict(header, tar_mtime_ns=identity.mtime_ns)
        atomic_write_text(path, json.dumps(header) + '\n' + (lines[1] if len(lines) > 1
                                                             else ''))

    def _writable_index_path(self, shard_id: int) -> Optional[str]:
        shard = self.shards[shard_id]
        if self.index_cache_dir is not None:
            return shard_index_path(shard, self.index_cache_dir)
        if self._local[shard_id] and os.access(osp.dirname(shard) or '.', os.W_OK):
            return shard_index_path(shard)
        return None

    def _scan_and_index(self, shard_id: int) -> ShardTable:
        """Scan a shard's headers and write its index where possible."""
        table, identity = _scan_shard(self.shards[shard_id], self.backend_args)
        out = self._writable_index_path(shard_id)
        if out is not None:
            _write_index(out, table, identity)
        return table

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
                counts[shard_id] = len(self._scan_and_index(shard_id))
        return [int(c) for c in counts]

    def table(self, shard_id: int) -> ShardTable:
        """The offset table of a shard (LRU-cached; from its sidecar or a header scan).

        The index's fingerprint is checked here, once per load, so a shard repacked
        since the dataset was built is noticed before any of its samples is read.
        """
        table = self._tables.get(shard_id)
        if table is not None:
            self._tables.move_to_end(shard_id)
            return table
        shard = self.shards[shard_id]
        found = self._find_index(shard_id, verify_content=True)
        table = None
        if found is not None:
            try:
                _, table = _parse_index(
                    fileio.get_text(found[0], backend_args=self.backend_args), found[0])
            except ValueError as err:
                print_log(f'ignoring the tar index {found[0]}: {err}; the shard is scanned '
                          'again', logger='current', level=logging.WARNING)
        if table is None:
            table = self._scan_and_index(shard_id)
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
                raise BadSampleError(f'{shard}:{member}', f'unreadable shard ({err})',
                                     'unreadable file') from None
        else:
            blob = self._remote.get(shard_id)
            if blob is None:
                blob = fileio.get(shard, backend_args=self.backend_args)
                self._remote[shard_id] = blob
                if len(self._remote) > 2:
                    self._remote.popitem(last=False)
            data = blob[offset:offset + size]
        if len(data) != size:
            raise BadSampleError(f'{shard}:{member}', 'member cut off by the end of the shard',
                                 'cut-off shard member')
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
