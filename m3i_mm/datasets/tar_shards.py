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
possible). Indexes of shards on other storage backends are trusted as they are. While a
shard's offset table is cached, every read compares the shard's size and modification
time with those the table was loaded for, and loads it again if they changed.

Indexes are written next to the shards, or into ``index_cache_dir`` (file names carry a
hash of the shard's path) for read-only shard folders. Where neither can be written (a
read-only folder without ``index_cache_dir``, a read-only or full cache), one warning
says so and the shards are read all the same, their headers scanned at every start.
"""
import glob
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
from .base import BadSampleError, PackedStrings, check_index, join_root

__all__ = ['IMAGE_EXTENSIONS', 'TEXT_EXTENSIONS', 'ShardIdentity', 'ShardSample', 'ShardSet',
           'ShardTable', 'expand_braces', 'expand_shards', 'resolve_shards', 'scan_tar',
           'shard_index_path', 'stale_index_reason', 'write_shard_index']

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
    by the end of the shard") that is counted. A file cut (or damaged) inside a tar
    header, after which no member can be found, is logged with the shard and the byte
    offset, and the member named in the partial header (or in its pax / GNU long-name
    record), if readable, is kept as cut off. A file that ends without the two zero blocks
    that close every tar (cut at or inside the padding after a member) is logged too, and
    what followed the last complete member is kept as one cut-off sample, so the loss is
    counted when it is read.
    """
    samples: Dict[str, dict] = OrderedDict()
    skipped: List[str] = []
    tar = None
    last_member = None
    try:
        tar = tarfile.open(fileobj=fileobj, mode='r:')
        for info in tar:
            if not info.isfile():
                continue
            last_member = info
            _add_member(samples, skipped, info.name, info.offset_data, info.size)
    except tarfile.ReadError as err:
        if tar is None or not samples:
            raise ValueError(f'{name} is not a readable uncompressed tar file ({err})') \
                from None
    tail = _tail_state(fileobj, tar.offset, tar_bytes)
    after = 'its start' if last_member is None else f'member {last_member.name!r}'
    lost_key = f'{_split_member(last_member.name)[0] if last_member else ""}~lost'
    lost_sample = dict(image=(f'(members after {after}, lost)', tar_bytes, 1))
    if tail == 'damaged':
        member, data_offset, size = _partial_header_member(fileobj, tar.offset)
        if member is not None:
            _add_member(samples, skipped, member, data_offset,
                        max(size, tar_bytes - data_offset + 1, 1))
            lost = f'; {member!r}, named in the cut header, is kept as cut off'
        else:
            samples[lost_key] = lost_sample
            lost = '; no member name is readable there (kept as one cut-off sample)'
        print_log(f'{name}: the tar data stop at byte {tar.offset} of {tar_bytes}: the file '
                  'is cut (or damaged) inside a tar header, so the members after that byte '
                  f'are lost{lost}. Re-create or re-download the shard.',
                  logger='current', level=logging.WARNING)
    elif tail == 'cut' and (last_member is None or
                            last_member.offset_data + last_member.size <= tar_bytes):
        samples[lost_key] = lost_sample
        print_log(f'{name}: the file ends at byte {tar_bytes} without the two zero blocks '
                  f'that close a tar: it was cut after {after}, and any members after it '
                  'are lost (kept as one cut-off sample, counted when read). Re-create or '
                  're-download the shard.', logger='current', level=logging.WARNING)
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


#: Bytes of the two zero blocks that end a tar archive (POSIX).
END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE


def _tail_state(fileobj: BinaryIO, stop: int, tar_bytes: int) -> str:
    """What follows the last member whose header could be read, at byte ``stop``:

    ``'complete'`` (the zero blocks that end a tar, then nothing but zeros), ``'damaged'``
    (non-zero bytes where a header or the end blocks belong) or ``'cut'`` (the file ends
    before the two end blocks: inside the padding after a member, or right after it).
    A member whose own data were cut shows as ``'cut'``; its sample is kept as cut off.
    """
    if stop >= tar_bytes:
        return 'cut'
    fileobj.seek(stop)
    position = stop
    while position < tar_bytes:
        chunk = fileobj.read(min(1 << 20, tar_bytes - position))
        if not chunk:
            break
        if any(chunk):
            return 'damaged'
        position += len(chunk)
    return 'complete' if position - stop >= END_OF_ARCHIVE else 'cut'


def _header_field(header: bytes, start: int, stop: int) -> Optional[str]:
    try:
        text = header[start:stop].split(b'\0', 1)[0].decode('utf-8')
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def _header_size(header: bytes) -> int:
    try:
        return int(header[124:136].split(b'\0', 1)[0].strip() or b'0', 8)
    except ValueError:
        return 0


def _header_name(header: bytes) -> Optional[str]:
    """The member name of a (possibly cut) ustar header, with its ``prefix`` field."""
    if len(header) < 100:
        return None
    name = _header_field(header, 0, 100)
    if not name:
        return None
    prefix = _header_field(header, 345, 500) if header[257:262] == b'ustar' else None
    return f'{prefix}/{name}' if prefix else name


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _partial_header_member(fileobj: BinaryIO, offset: int) -> Tuple[Optional[str], int, int]:
    """(member name, data offset, data size) of the member whose header starts at
    ``offset`` and is cut or damaged; (None, 0, 0) if no name can be read.

    A pax extended header (``././@PaxHeader``) or a GNU long-name header
    (``././@LongLink``) precedes the member's own header: the name is then taken from its
    ``path`` record, else from the member's header that follows it.
    """
    fileobj.seek(offset)
    header = fileobj.read(tarfile.BLOCKSIZE)
    name = _header_name(header)
    if name is None:
        return None, 0, 0
    size = _header_size(header)
    data_offset = offset + tarfile.BLOCKSIZE
    typeflag = header[156:157]
    if typeflag not in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME,
                        tarfile.GNUTYPE_LONGLINK):
        return name, data_offset, size
    record = fileobj.read(min(size, 1 << 20))
    member, size_match = None, None
    if typeflag == tarfile.GNUTYPE_LONGNAME and len(record) == size:
        member = _header_field(record, 0, size)
    elif typeflag == tarfile.XHDTYPE:
        match = re.search(rb'(?:^|\n)\d+ path=([^\n]*)\n', record)
        if match:
            member = _header_field(match.group(1), 0, len(match.group(1)))
        size_match = re.search(rb'(?:^|\n)\d+ size=(\d+)\n', record)
    own_header_at = data_offset + _padded(size)
    fileobj.seek(own_header_at)
    own_header = fileobj.read(tarfile.BLOCKSIZE)
    if member is None:
        member = _header_name(own_header)
    own_size = _header_size(own_header) if len(own_header) >= 136 else 0
    if typeflag == tarfile.XHDTYPE and size_match:
        own_size = int(size_match.group(1))
    return member, own_header_at + tarfile.BLOCKSIZE, own_size


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
        # (size, mtime_ns) of each local shard when its cached table was loaded
        self._identities: Dict[int, Tuple[int, int]] = {}
        self._remote: 'OrderedDict[int, bytes]' = OrderedDict()
        self._told_no_index = False
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
        try:
            atomic_write_text(path, json.dumps(header) + '\n' + (lines[1] if len(lines) > 1
                                                                 else ''))
        except OSError:
            pass  # an optimisation only: the fingerprint is checked again next time

    def _no_index(self, reason: str) -> None:
        """Say once per process why shard indexes are not written (reading goes on)."""
        if not self._told_no_index:
            self._told_no_index = True
            print_log(f'tar shard indexes are not written: {reason}. The shards are read '
                      'all the same, but their headers are scanned again at every start; '
                      'give index_cache_dir= a writable folder, or index them ahead with '
                      'tools/dataset_converters/make_tar_index.py --out-dir',
                      logger='current', level=logging.WARNING)

    def _writable_index_path(self, shard_id: int) -> Optional[str]:
        shard = self.shards[shard_id]
        if self.index_cache_dir is not None:
            return shard_index_path(shard, self.index_cache_dir)
        folder = osp.dirname(shard) or '.'
        if self._local[shard_id] and os.access(folder, os.W_OK):
            return shard_index_path(shard)
        if self._local[shard_id]:
            self._no_index(f'the shard folder {folder} is read-only and no index_cache_dir '
                           'is set')
        return None

    def _scan_and_index(self, shard_id: int) -> ShardTable:
        """Scan a shard's headers and write its index where possible."""
        table, identity = _scan_shard(self.shards[shard_id], self.backend_args)
        out = self._writable_index_path(shard_id)
        if out is not None:
            try:
                _write_index(out, table, identity)
            except OSError as err:  # read-only or full index cache: read without it
                self._no_index(f'cannot write {out} ({err.strerror or err})')
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
        if self._local[shard_id]:
            stat = os.stat(shard)
            self._identities[shard_id] = (stat.st_size, stat.st_mtime_ns)
        self._tables[shard_id] = table
        if len(self._tables) > self.table_cache_size:
            evicted, _ = self._tables.popitem(last=False)
            self._identities.pop(evicted, None)
        return table

    # ---------------------------------------------------------------- reading
    def locate(self, index: int) -> Tuple[int, int]:
        """(shard id, position within the shard) of a global sample index."""
        check_index(index, len(self), 'tar shards')
        shard_id = int(np.searchsorted(self._starts, index, side='right')) - 1
        return shard_id, index - int(self._starts[shard_id])

    @staticmethod
    def _read_span(source: Union[BinaryIO, bytes], offset: int, size: int, where: str
                   ) -> bytes:
        """``size`` bytes at ``offset`` of an open shard file or a shard's bytes."""
        if isinstance(source, bytes):
            data = source[offset:offset + size]
        else:
            source.seek(offset)
            data = source.read(size)
        if len(data) != size:
            raise BadSampleError(where, 'member cut off by the end of the shard',
                                 'cut-off shard member')
        return data

    def _current_table(self, shard_id: int, f: BinaryIO) -> ShardTable:
        """The offset table of the open local shard ``f``, reloaded if the file changed
        (size or modification time) since the cached table was loaded."""
        table = self.table(shard_id)
        stat = os.fstat(f.fileno())
        if self._identities.get(shard_id) != (stat.st_size, stat.st_mtime_ns):
            print_log(f'{self.shards[shard_id]} changed on disk (size or modification time) '
                      'since its member offsets were loaded; loading them again',
                      logger='current', level=logging.WARNING)
            self._tables.pop(shard_id, None)
            table = self.table(shard_id)
        return table

    def read(self, index: int) -> ShardSample:
        """The members of sample ``index``: key, image and (if any) caption bytes.

        A local shard is opened once per sample; its size and modification time are
        compared with those its cached offset table was made for, so a shard replaced
        during the run is never read at the old offsets.
        """
        shard_id, pos = self.locate(index)
        shard = self.shards[shard_id]
        if self._local[shard_id]:
            try:
                with open(shard, 'rb') as f:
                    return self._sample(shard_id, pos, self._current_table(shard_id, f), f)
            except OSError as err:
                raise BadSampleError(shard, f'unreadable shard ({err})',
                                     'unreadable file') from None
        table = self.table(shard_id)
        blob = self._remote.get(shard_id)
        if blob is None:
            blob = fileio.get(shard, backend_args=self.backend_args)
            self._remote[shard_id] = blob
            if len(self._remote) > 2:
                self._remote.popitem(last=False)
        return self._sample(shard_id, pos, table, blob)

    def _sample(self, shard_id: int, pos: int, table: ShardTable,
                source: Union[BinaryIO, bytes]) -> ShardSample:
        img_off, img_size, txt_off, txt_size = (int(v) for v in table.spans[pos])
        image_member, text_member = table.image_members[pos], table.text_members[pos]
        shard = self.shards[shard_id]
        return ShardSample(
            shard_id=shard_id, key=table.keys[pos],
            image_path=f'{shard}:{image_member}',
            image=self._read_span(source, img_off, img_size, f'{shard}:{image_member}'),
            text_member=text_member,
            text=None if txt_off < 0 else self._read_span(source, txt_off, txt_size,
                                                          f'{shard}:{text_member}'))


def _split_patterns(shards: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(shards, str):
        shards = [shards]
    elif not isinstance(shards, (list, tuple)) or not all(isinstance(s, str) for s in shards):
        raise TypeError(f'shards must be a pattern string or a list of them, got {shards!r}')
    # 'a.tar::b.tar' is WebDataset's notation for a list in one string
    return [part for pattern in shards for part in pattern.split('::') if part]


def expand_shards(shards: Union[str, Sequence[str]]) -> List[str]:
    """Shard names from brace patterns (``'data-{000000..000099}.tar'``), a list of paths
    or patterns, or WebDataset's ``'a.tar::b.tar'``; glob patterns are left as they are
    (see :func:`resolve_shards`)."""
    return [path for pattern in _split_patterns(shards) for path in expand_braces(pattern)]


def resolve_shards(shards: Union[str, Sequence[str]], data_root: str = '',
                   backend_args: Optional[dict] = None) -> Tuple[List[str], List[str]]:
    """The shard files a shard specification names: ``(names, paths)``.

    ``shards`` is a pattern or a list of them, relative to ``data_root`` unless absolute:
    brace patterns (``'{00000..00099}.tar'``, ``'{a,b}/*.tar'``; WebDataset's notation),
    glob patterns (``'*.tar'``, ``'part-??/*.tar'``; local files only, sorted), and
    ``'a.tar::b.tar'`` lists. ``names`` are the shards as written (glob matches relative to
    ``data_root``), for sample keys; ``paths`` are the files to open.

    Raises:
        FileNotFoundError: A glob pattern that matches nothing, or local shards that do not
            exist (one line naming the pattern and a missing file).
        ValueError: A shard that is a directory; a glob pattern on a remote backend.
    """
    patterns = _split_patterns(shards)
    if not patterns:
        raise ValueError(f'no shards given (shards={shards!r})')
    names: List[str] = []
    paths: List[str] = []
    where = f' under data_root {data_root!r}' if data_root else ''
    for pattern in patterns:
        for name in expand_braces(pattern):
            path = join_root(data_root, name)
            if not glob.has_magic(name):
                names.append(name)
                paths.append(path)
                continue
            if not _is_local(path, backend_args):
                raise ValueError(f'the shard pattern {pattern!r} uses glob characters (*?[), '
                                 'which only work on local files; list remote shards with a '
                                 "brace pattern ('{00000..00099}.tar')")
            matches = sorted(glob.glob(path))
            if not matches:
                raise FileNotFoundError(f'no files match the shard pattern {pattern!r}{where} '
                                        f'(looked for {path})')
            names.extend(osp.relpath(m, data_root) if data_root else m for m in matches)
            paths.extend(matches)
    local = [p for p in paths if _is_local(p, backend_args)]
    missing = [p for p in local if not osp.exists(p)]
    if missing:
        raise FileNotFoundError(
            f'{len(missing)} of the {len(paths)} shards of {shards!r}{where} do not exist, '
            f'e.g. {missing[0]}')
    folder = next((p for p in local if osp.isdir(p)), None)
    if folder is not None:
        raise ValueError(f'the shard {folder} is a directory, not a file: give the shard '
                         f"files, e.g. shards='{osp.join(folder, '*.tar')}'")
    return names, paths
