"""Download zoo checkpoints into a cache: verified, atomic, resumable, safe under concurrency.

Cache layout (``$M3I_MM_HOME/checkpoints``, default ``~/.cache/m3i_mm/checkpoints``)::

    NAME.pth          the verified file (only ever put there by an ``fsync``-ed rename)
    NAME.pth.sha256   its sha256 in ``sha256sum`` format (``sha256sum -c`` checks it)
    NAME.pth.part     an unfinished download, resumed with an HTTP Range request
    NAME.pth.part.json  the URL and validators (ETag, size) the partial download came from
    NAME.pth.lock     the inter-process lock (``fcntl.flock``); safe to delete when idle

sha256 policy:

- Entries with ``Sha256`` in the index ("pinned") are checked after every download and
  every load. A mismatch is refused: nothing is moved to the final path, the bad download
  is deleted, and a bad cached file raises an error telling how to replace it.
- Entries without it ("unpinned", e.g. the official InternImage files, whose hashes we
  could not compute) download with a loud warning; the observed sha256 is recorded in
  ``NAME.pth.sha256`` (trust on first use, written before the file is moved into place)
  and every later load or ``verify`` checks the file against that record. A cached
  unpinned file without a valid record (deleted, empty, or a file copied in by hand) is
  refused (:class:`UnverifiedFileError`) until it is downloaded again or explicitly
  trusted with ``python tools/zoo.py trust NAME``.

Files hosted on the Hugging Face Hub (``https://huggingface.co/REPO/resolve/REV/FILE``)
are fetched with ``huggingface_hub`` into the shared Hugging Face cache, so the
conventions users already have apply: ``HF_ENDPOINT`` (a mirror), ``HF_HUB_OFFLINE``,
``HF_TOKEN`` (gated or private repositories), ``HF_HOME``/``HF_HUB_CACHE``. The sha256
policy above applies on top (the record of an unpinned entry stays in our cache
directory). An explicit mirror (``--mirror``/``M3I_MM_ZOO_MIRROR``) takes such entries
through the plain download below instead. Other URLs are downloaded here, with resume.

Environment:

- ``M3I_MM_HOME``: cache root (checkpoints go to ``$M3I_MM_HOME/checkpoints``).
- ``M3I_MM_ZOO_MIRROR``: a mirror, see :func:`apply_mirror`.
- ``M3I_MM_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``): never touch the network; a file
  missing from the cache raises :class:`OfflineError` saying where to put it.

In a distributed run (``torch.distributed`` initialised) only local rank 0 of each node
downloads; the other ranks wait at a barrier and then read the cache.
"""
import contextlib
import fcntl
import functools
import hashlib
import http.client
import json
import logging
import os
import os.path as osp
import re
import time
from typing import Iterator, NamedTuple, Optional, Tuple, Union
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from mmengine.logging import print_log

from ..utils.cache_dir import cache_root
from ..utils.io import (STORAGE_WRITE_ERRNOS, atomic_write_text, commit_path,
                        unreadable_checkpoint_reason)
from ..version import __version__
from .errors import (CacheWriteError, CheckpointReadError, ChecksumMismatchError, DownloadError,
                     OfflineError, UnverifiedFileError)
from .index import ZooEntry, get_entry

MIRROR_ENV = 'M3I_MM_ZOO_MIRROR'
OFFLINE_ENVS = ('M3I_MM_OFFLINE', 'HF_HUB_OFFLINE')

_CHUNK = 1 << 20
_TRUE = ('1', 'true', 'yes', 'on')
_CONTENT_RANGE_RE = re.compile(r'^bytes (\d+)-(\d+)/(\d+|\*)$')
_SHA256_RE = re.compile(r'^[0-9a-f]{64}$')
_HF_URL_RE = re.compile(
    r'^https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$')


class CachedFile(NamedTuple):
    """A verified file in the cache.

    Attributes:
        path: The file.
        sha256: Its sha256, just computed.
        pinned: True if checked against the index's ``Sha256``; False if checked against
            (or, on first use, recorded into) the ``.sha256`` record next to it.
        recorded_now: True if this check recorded the hash (trust on first use).
    """
    path: str
    sha256: str
    pinned: bool
    recorded_now: bool


class _TransientError(DownloadError):
    """A download attempt that may succeed when retried (dropped connection, HTTP 5xx)."""


def zoo_home() -> str:
    """The zoo's root directory: m3i_mm's cache root, ``$M3I_MM_HOME`` or
    ``~/.cache/m3i_mm`` (:func:`m3i_mm.utils.cache_dir.cache_root`)."""
    return cache_root()


def default_cache_dir() -> str:
    """Where checkpoints are cached: ``<zoo_home()>/checkpoints``."""
    return osp.join(zoo_home(), 'checkpoints')


def offline_mode() -> bool:
    """True if ``M3I_MM_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value."""
    return any(os.environ.get(var, '').strip().lower() in _TRUE for var in OFFLINE_ENVS)


def cache_path(entry: ZooEntry, cache_dir: Optional[str] = None) -> str:
    """The path ``entry`` has in the cache once downloaded (it may not exist yet)."""
    return osp.join(cache_dir or default_cache_dir(), entry.name + entry.file_suffix)


def apply_mirror(url: str, mirror: Optional[str]) -> str:
    """Rewrite a download URL for a mirror.

    Args:
        url: The published URL.
        mirror: Either ``OLD_PREFIX=NEW_PREFIX`` (URLs starting with ``OLD_PREFIX`` get it
            replaced; other URLs are kept), or a base URL such as ``https://hf-mirror.com`` or
            ``http://host:8000/models`` that replaces the URL's scheme and host and is
            prepended to its path. None or ``''`` keeps the URL.

    Returns:
        The URL to download from.

    Raises:
        ValueError: If ``mirror`` is not one of these forms.
    """
    if not mirror:
        return url
    if '=' in mirror:
        old, new = mirror.split('=', 1)
        _check_mirror_url(new, mirror)
        return new + url[len(old):] if url.startswith(old) else url
    base = _check_mirror_url(mirror, mirror)
    parsed = urlparse(url)
    query = f'?{parsed.query}' if parsed.query else ''
    return f'{base.scheme}://{base.netloc}{base.path.rstrip("/")}{parsed.path}{query}'


def _check_mirror_url(url: str, mirror: str):
    parsed = urlparse(url)
    if parsed.scheme not in ('http', 'https') or not parsed.netloc:
        raise ValueError(
            f'mirror {mirror!r} (--mirror or ${MIRROR_ENV}) must be a base URL like '
            '"https://hf-mirror.com" or a prefix mapping like '
            '"https://huggingface.co/=http://host/hf/"')
    return parsed


def sha256_of(path: str) -> str:
    """sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def hf_location(url: str) -> Optional[Tuple[str, str, str]]:
    """(repo id, revision, file) of a Hugging Face Hub file URL, or None for other URLs."""
    match = _HF_URL_RE.match(url)
    return None if match is None else (match['repo'], match['revision'], match['file'])


def record_path(entry: ZooEntry, cache_dir: Optional[str] = None) -> str:
    """Where the sha256 record of ``entry`` lives: ``NAME.pth.sha256`` in our cache."""
    return cache_path(entry, cache_dir) + '.sha256'


def read_recorded_sha256(record: str) -> Optional[str]:
    """The sha256 in a ``sha256sum``-format record file, or None if it has no valid one
    (missing, empty or garbled)."""
    try:
        with open(record, encoding='utf-8', errors='replace') as f:
            fields = f.read().split()
    except FileNotFoundError:
        return None
    digest = fields[0].lower() if fields else ''
    return digest if _SHA256_RE.match(digest) else None


def check_cached(entry: ZooEntry, path: str, record: Optional[str] = None,
                 trust_unrecorded: bool = False) -> CachedFile:
    """Hash a cached file and check it against the pin, or against the recorded hash.

    Args:
        entry: The zoo entry.
        path: Its cached file.
        record: Its sha256 record (default ``path + '.sha256'``).
        trust_unrecorded: Record the hash of an unpinned file that has no valid record
            instead of refusing it (``tools/zoo.py trust``).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointReadError: The entry is a checkpoint and the file is not one (e.g. an
            HTML page cached before downloads were checked).
        ChecksumMismatchError: If the hash differs from the pin or the record.
        UnverifiedFileError: An unpinned file has no valid record, and
            ``trust_unrecorded`` is False.
    """
    record = path + '.sha256' if record is None else record
    expected = entry.sha256 or read_recorded_sha256(record)
    if expected is None and not trust_unrecorded:
        state = 'is empty or garbled' if osp.exists(record) else 'does not exist'
        raise UnverifiedFileError(
            f'cached file {path} of the unpinned zoo entry {entry.name!r} cannot be verified: '
            f'its sha256 record {record} {state}, so the file may be corrupted or replaced. '
            f'Download it again (`python tools/zoo.py download {entry.name} --force`), or, if '
            f'you put it there yourself and trust it, record its hash with `python '
            f'tools/zoo.py trust {entry.name}`.')
    observed = sha256_of(path)
    if expected is None or observed == expected:
        _check_is_checkpoint(entry, path)
    if expected is None:
        _record_sha256(record, observed, osp.basename(path))
        print_log(f'UNPINNED CHECKPOINT: zoo entry {entry.name!r} has no Sha256 in '
                  f'{entry.source}, so {path} cannot be checked against a published hash. '
                  f'Its sha256 {observed} is recorded in {record} and every later load is '
                  'checked against it (trust on first use). Pin it by adding "Sha256: '
                  f'{observed}" to the metafile once you have confirmed it from an '
                  'independent source.', logger='current', level=logging.WARNING)
        return CachedFile(path, observed, pinned=False, recorded_now=True)
    if observed != expected:
        against = 'the model index pins' if entry.pinned else f'{record} records'
        raise ChecksumMismatchError(
            f'cached file {path} for zoo entry {entry.name!r} has sha256 {observed}, but '
            f'{against} {expected}. The file is corrupted or was replaced: delete it or run '
            f'`python tools/zoo.py download {entry.name} --force`.')
    return CachedFile(path, observed, pinned=entry.pinned, recorded_now=False)


def _check_is_checkpoint(entry: ZooEntry, path: str) -> None:
    """Refuse a cached file of a checkpoint entry that is no checkpoint (an error page
    cached before downloads were checked, with its hash recorded)."""
    reason = unreadable_checkpoint_reason(path) if entry.is_checkpoint else None
    if reason is not None:
        raise CheckpointReadError(
            f'cached file {path} of zoo entry {entry.name!r} {reason}, so it is not the '
            f'checkpoint (a server may have answered with an error page). Delete it or run '
            f'`python tools/zoo.py download {entry.name} --force`.')


def cached_file(entry: ZooEntry, cache_dir: Optional[str] = None,
                mirror: Optional[str] = None) -> Optional[Tuple[str, str]]:
    """(file, sha256 record) of ``entry`` if it is in its cache (not verified), else None.

    Hugging Face Hub entries are looked up in the Hugging Face cache, unless a mirror
    takes them through our own cache.
    """
    mirror = os.environ.get(MIRROR_ENV) if mirror is None else mirror
    hub = hf_location(entry.url)
    if hub is not None and not mirror:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(hub[0], hub[2], revision=hub[1])
        return (found, record_path(entry, cache_dir)) if isinstance(found, str) else None
    path = cache_path(entry, cache_dir)
    return (path, path + '.sha256') if osp.isfile(path) else None


def download_checkpoint(entry: Union[str, ZooEntry], cache_dir: Optional[str] = None,
                        mirror: Optional[str] = None, force: bool = False,
                        progress: bool = True, retries: int = 3, retry_delay: float = 2.0,
                        timeout: float = 60.0) -> str:
    """Return the verified cached file of a zoo entry, downloading it if needed.

    Args:
        entry: A :class:`ZooEntry` or an entry name.
        cache_dir: Cache directory; defaults to :func:`default_cache_dir`.
        mirror: Mirror for the download (see :func:`apply_mirror`); defaults to
            ``$M3I_MM_ZOO_MIRROR``.
        force: Download again even if the file is cached.
        progress: Show a tqdm progress bar while downloading.
        retries: How often a dropped or failed (HTTP 5xx) download is retried; each retry
            resumes where the previous attempt stopped.
        retry_delay: Seconds to wait before the first retry (doubled for each further one).
        timeout: Socket timeout in seconds.

    Returns:
        Path of the verified file.

    Raises:
        OfflineError: Offline mode is on and the file is not cached.
        DownloadError: The download failed (the message says why and whether it can resume).
        ChecksumMismatchError: The file does not have the expected sha256.
    """
    entry = get_entry(entry) if isinstance(entry, str) else entry
    path = cache_path(entry, cache_dir)
    mirror = os.environ.get(MIRROR_ENV) if mirror is None else mirror
    options = dict(mirror=mirror, force=force, progress=progress, retries=retries,
                   retry_delay=retry_delay, timeout=timeout)
    if hf_location(entry.url) is not None and not mirror:
        ensure = functools.partial(_ensure_cached_from_hub, entry, record_path(entry, cache_dir),
                                   force=force)
    else:
        ensure = functools.partial(_ensure_cached, entry, path, **options)
    ensure = functools.partial(_writing_to_cache, ensure, cache_dir or default_cache_dir(),
                               entry.name)
    rank, world_size, local_rank = _dist_info()
    if world_size == 1:
        return ensure()

    # Distributed: local rank 0 downloads, everyone meets at the barrier (always, so that
    # no rank can skip it), then the other ranks read what local rank 0 verified.
    import torch.distributed as torch_dist
    failure = None
    if local_rank == 0:
        try:
            path = ensure()
        except Exception as e:  # re-raised after the barrier, so no rank is left waiting
            failure = e
    torch_dist.barrier()
    if failure is not None:
        raise failure
    if local_rank == 0:
        return path
    found = cached_file(entry, cache_dir, mirror)
    if found is None:
        raise DownloadError(
            f'rank {rank}: local rank 0 of this node did not produce zoo entry '
            f'{entry.name!r} in the cache; its log says why.')
    check_cached(entry, *found)
    return found[0]


def _writing_to_cache(ensure, cache_dir: str, name: str) -> str:
    """``ensure()``, with the cache's write failures (no permission, read-only file system,
    full disk) as one :class:`CacheWriteError` naming the cache and what to do."""
    try:
        return ensure()
    except OSError as e:
        if e.errno not in STORAGE_WRITE_ERRNOS:
            raise
        where = f' ({e.filename})' if e.filename else ''
        raise CacheWriteError(
            f'zoo entry {name!r}: cannot write to the zoo cache {cache_dir}{where}: '
            f'{os.strerror(e.errno)}. Set M3I_MM_HOME to a writable directory (the cache '
            'root), or download the file where the cache is writable and copy it with its '
            '.sha256 record') from e


def _dist_info() -> Tuple[int, int, int]:
    """(rank, world size, local rank); (0, 1, 0) unless torch.distributed is initialised."""
    import torch.distributed as torch_dist
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return 0, 1, 0
    rank = torch_dist.get_rank()
    # Launchers (torchrun, tools/dist_*.sh, slurm, mpi via m3i_mm.cli.launch) set LOCAL_RANK.
    return rank, torch_dist.get_world_size(), int(os.environ.get('LOCAL_RANK', rank))


def _ensure_cached(entry: ZooEntry, path: str, mirror: Optional[str], force: bool,
                   progress: bool, retries: int, retry_delay: float, timeout: float) -> str:
    # Final files only ever appear by the rename of a verified download, so reading one
    # without the lock is safe.
    if not force and osp.isfile(path):
        check_cached(entry, path)
        return path
    if offline_mode():
        reason = 'a new download was forced' if force else f'it is not cached at {path}'
        raise OfflineError(
            f'offline mode is on ({" or ".join(OFFLINE_ENVS)}) and zoo entry {entry.name!r} '
            f'needs the network: {reason}. Download it where the network is reachable '
            f'(`python tools/zoo.py download {entry.name}`) and copy the file with its '
            f'.sha256 record to that directory (or copy a file fetched from {entry.url} and '
            f'run `python tools/zoo.py trust {entry.name}`), or turn offline mode off.')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with _exclusive_lock(path + '.lock', entry.name):
        if osp.isfile(path) and not force:  # another process finished it while we waited
            check_cached(entry, path)
            return path
        if force:
            for stale in (path, path + '.sha256', path + '.part', path + '.part.json'):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
        url = apply_mirror(entry.url, mirror)
        _download_verified(entry, url, path, progress, retries, retry_delay, timeout)
    print_log(f'zoo entry {entry.name!r} saved to {path}', logger='current')
    return path


def _ensure_cached_from_hub(entry: ZooEntry, record: str, force: bool) -> str:
    """The verified file of a Hugging Face Hub entry, through ``huggingface_hub``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError,
                                        HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    from huggingface_hub import try_to_load_from_cache
    repo, revision, filename = hf_location(entry.url)
    if not force:
        cached = try_to_load_from_cache(repo, filename, revision=revision)
        if isinstance(cached, str):  # no network; a file cached before must match its record
            check_cached(entry, cached, record)
            return cached
    elif osp.exists(record):
        os.remove(record)  # a forced download is trusted anew (or checked against the pin)
    offline = offline_mode()
    try:
        path = hf_hub_download(repo, filename, revision=revision, force_download=force,
                               local_files_only=offline,
                               endpoint=os.environ.get('HF_ENDPOINT') or None)
    except GatedRepoError as e:
        raise DownloadError(
            f'zoo entry {entry.name!r}: the Hugging Face repository {repo} is gated or '
            'private and the request was refused; accept its terms on the Hub and set '
            f'HF_TOKEN (or `huggingface-cli login`) to a token with access. ({e})') from e
    except LocalEntryNotFoundError as e:  # (a subclass of EntryNotFoundError)
        if offline:
            raise OfflineError(
                f'offline mode is on ({" or ".join(OFFLINE_ENVS)}) and zoo entry '
                f'{entry.name!r} ({repo}/{filename}) is not in the Hugging Face cache '
                '(HF_HOME/HF_HUB_CACHE). Download it where the network is reachable '
                f'(`python tools/zoo.py download {entry.name}`) with the same cache, or '
                'turn offline mode off.') from e
        raise DownloadError(
            f'zoo entry {entry.name!r}: cannot reach the Hugging Face Hub '
            f'({os.environ.get("HF_ENDPOINT") or "huggingface.co"}) for {repo}/{filename}, '
            f'and it is not cached: {e}. Set HF_ENDPOINT to a reachable mirror, or '
            'download it elsewhere into the same cache.') from e
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        raise DownloadError(
            f'zoo entry {entry.name!r}: {filename} of {repo} (revision {revision}) is not on '
            f'the Hub at {os.environ.get("HF_ENDPOINT") or "huggingface.co"}; if the '
            f'repository is private, set HF_TOKEN. ({type(e).__name__}: {e})') from e
    except (HfHubHTTPError, OSError) as e:
        raise DownloadError(f'zoo entry {entry.name!r}: download of {repo}/{filename} from '
                            f'the Hugging Face Hub failed: {e}') from e
    reason = unreadable_checkpoint_reason(path) if entry.is_checkpoint else None
    if reason is not None:  # never leave what is not a checkpoint in the shared cache
        for stale in {osp.realpath(path), path}:
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)
        raise DownloadError(f'zoo entry {entry.name!r}: {repo}/{filename} from the Hugging '
                            f'Face Hub {reason}: it is not the checkpoint; refusing it (removed '
                            'from the Hugging Face cache)')
    try:  # a fresh download: an unpinned one is recorded now unless a record exists
        check_cached(entry, path, record, trust_unrecorded=True)
    except ChecksumMismatchError:
        if entry.pinned:  # never leave a file that contradicts the pin in the shared cache
            for stale in {osp.realpath(path), path}:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
        raise
    return path


@contextlib.contextmanager
def _exclusive_lock(lock_path: str, what: str) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print_log(f'another process is downloading zoo entry {what!r}; waiting for it '
                      f'(lock {lock_path})', logger='current')
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _download_verified(entry: ZooEntry, url: str, path: str, progress: bool, retries: int,
                       retry_delay: float, timeout: float) -> str:
    """Download ``url`` to ``path + '.part'``, verify it, record its sha256 next to ``path``,
    move it to ``path``; return the sha256."""
    part = path + '.part'
    attempt = 0
    fresh_retry_done = False
    while True:
        try:
            sha256, resumed = _download_to_part(entry, url, part, progress, timeout)
        except _TransientError as e:
            if attempt >= retries:
                kept = (f' The partial download is kept at {part}; run the download again to '
                        'resume it.' if osp.isfile(part) else '')
                raise DownloadError(f'{e} (gave up after {attempt + 1} attempts).{kept}') from e
            delay = retry_delay * 2 ** attempt
            attempt += 1
            print_log(f'{e}; retrying in {delay:g} s (attempt {attempt + 1} of {retries + 1})',
                      logger='current', level=logging.WARNING)
            time.sleep(delay)
            continue
        if entry.sha256 is not None and sha256 != entry.sha256:
            _remove_part(part)
            if resumed and not fresh_retry_done:
                # The kept prefix may come from another version of the file: start over once.
                print_log(f'sha256 mismatch for zoo entry {entry.name!r} after resuming a '
                          'partial download; downloading it again from the start',
                          logger='current', level=logging.WARNING)
                fresh_retry_done = True
                continue
            raise ChecksumMismatchError(
                f'download of zoo entry {entry.name!r} from {url} has sha256 {sha256}, but the '
                f'model index ({entry.source}) pins {entry.sha256}; refusing it. Nothing was '
                f'saved at {path}.')
        break
    reason = unreadable_checkpoint_reason(part) if entry.is_checkpoint else None
    if reason is not None:  # e.g. an HTML error page served with status 200
        _remove_part(part)
        raise DownloadError(
            f'download of zoo entry {entry.name!r} from {url} {reason}: the server did not '
            f'send the checkpoint (an error or login page?); refusing it. Nothing was saved '
            f'at {path}. Check the URL (or the mirror) in a browser.')
    if entry.sha256 is None:
        print_log(
            f'UNPINNED CHECKPOINT: zoo entry {entry.name!r} has no Sha256 in {entry.source}, '
            f'so the download from {url} cannot be checked against a published hash. Its '
            f'sha256 {sha256} is recorded in {path}.sha256 and every later load is checked '
            f'against it (trust on first use). Pin it by adding "Sha256: {sha256}" to the '
            'metafile once you have confirmed it from an independent source.',
            logger='current', level=logging.WARNING)
    _record_sha256(path + '.sha256', sha256, osp.basename(path))  # first: the final file
    # never lacks its record
    commit_path(part, path)  # fsync, rename, fsync the directory
    with contextlib.suppress(FileNotFoundError):
        os.remove(part + '.json')
    return sha256


def _remove_part(part: str) -> None:
    for stale in (part, part + '.json'):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)


def _download_to_part(entry: ZooEntry, url: str, part: str, progress: bool, timeout: float
                      ) -> Tuple[str, bool]:
    """One download attempt into ``part``, resuming it if it holds a prefix of ``url``.

    Returns:
        (sha256 of the complete file, whether the attempt resumed a partial download).

    Raises:
        _TransientError: The attempt failed in a way a retry may fix; ``part`` keeps what
            arrived, for the next attempt to resume.
        DownloadError: The attempt failed for good (HTTP 4xx).
    """
    meta = _read_part_meta(part)
    offset = osp.getsize(part) if meta is not None and meta.get('url') == url else 0
    if offset == 0:
        _remove_part(part)
    elif offset == meta.get('total'):  # complete, but the process stopped before verifying it
        return sha256_of(part), True
    response = _open(entry, url, offset, meta, timeout)
    if response is None:  # the kept prefix does not belong to the file: start over
        _remove_part(part)
        return _download_to_part(entry, url, part, progress, timeout)
    with response:
        if offset and response.status != 206:
            print_log(f'{url} does not resume (HTTP {response.status}); downloading it from '
                      'the start', logger='current')
            offset = 0
        length = response.headers.get('Content-Length')
        total = offset + int(length) if length is not None and length.isdigit() else None
        digest = hashlib.sha256()
        if offset:
            with open(part, 'rb') as f:
                for chunk in iter(lambda: f.read(_CHUNK), b''):
                    digest.update(chunk)
        else:
            atomic_write_text(part + '.json', json.dumps(dict(
                url=url, total=total, etag=response.headers.get('ETag'),
                last_modified=response.headers.get('Last-Modified'))))
        received = offset
        from tqdm import tqdm
        with open(part, 'ab' if offset else 'wb') as out, tqdm(
                total=total, initial=offset, unit='B', unit_scale=True, unit_divisor=1024,
                desc=entry.name, disable=not progress, leave=False) as bar:
            try:
                for chunk in iter(lambda: response.read(_CHUNK), b''):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:
                raise _TransientError(
                    f'download of {url} (zoo entry {entry.name!r}) broke off after '
                    f'{received} of {total if total is not None else "?"} bytes: {e!r}') from e
            finally:
                out.flush()
                os.fsync(out.fileno())
    if total is not None and received != total:
        raise _TransientError(
            f'download of {url} (zoo entry {entry.name!r}) is truncated: the connection closed '
            f'after {received} of {total} bytes')
    return digest.hexdigest(), offset > 0


def _open(entry: ZooEntry, url: str, offset: int, meta: Optional[dict], timeout: float):
    """Send the GET (with a Range from ``offset`` when resuming).

    Returns:
        The response, or None when resuming and the server's answer shows that the kept
        prefix does not fit the file (HTTP 416, or a Content-Range that does not continue it).
    """
    headers = {'User-Agent': f'm3i_mm/{__version__}', 'Accept-Encoding': 'identity'}
    if offset:
        headers['Range'] = f'bytes={offset}-'
        validator = meta.get('etag') or meta.get('last_modified')
        if validator:
            headers['If-Range'] = validator  # a changed file comes back whole (HTTP 200)
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and offset:
            return None
        message = f'HTTP {e.code} ({e.reason}) for {url} (zoo entry {entry.name!r})'
        if e.code >= 500 or e.code == 429:
            raise _TransientError(message) from e
        raise DownloadError(message) from e
    except (URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, 'reason', e)
        raise _TransientError(f'cannot reach {url} (zoo entry {entry.name!r}): {reason}') from e
    if offset and response.status == 206:
        match = _CONTENT_RANGE_RE.match(response.headers.get('Content-Range', ''))
        expected_total = meta.get('total')
        if not (match and int(match.group(1)) == offset
                and (expected_total is None or match.group(3) in ('*', str(expected_total)))):
            response.close()
            return None
    return response


def _read_part_meta(part: str) -> Optional[dict]:
    if not osp.isfile(part):
        return None
    try:
        with open(part + '.json', encoding='utf-8') as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None  # a partial file of unknown origin is not resumed


def _record_sha256(record: str, sha256: str, filename: str) -> None:
    atomic_write_text(record, f'{sha256}  {filename}\n')
