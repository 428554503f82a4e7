"""Model zoo: named checkpoints, verified downloads, and the ``m3i://NAME`` checkpoint scheme.

See ``model-index.yml`` for the entries, :mod:`m3i_mm.zoo.download` for the cache,
sha256 policy and environment variables, and ``tools/zoo.py`` for the command line.
"""
from .converters import apply_converter, get_converter, list_converters, register_converter
from .download import (CachedFile, apply_mirror, cache_path, cached_file, check_cached,
                       default_cache_dir, download_checkpoint, hf_location, offline_mode,
                       record_path, sha256_of, zoo_home)
from .errors import (CacheWriteError, CheckpointReadError, ChecksumMismatchError, ConverterError,
                     DownloadError, IndexFormatError, OfflineError, UnknownEntryError,
                     UnsafeCheckpointError, UnverifiedFileError, ZooError)
from .index import ZooEntry, ZooResult, get_entry, index_paths, load_index
from .scheme import SCHEME, load_checkpoint_file, load_zoo_checkpoint, register_scheme

from . import internimage  # noqa: F401,E402  (registers the 'internimage' converter)
from . import official_heads  # noqa: F401,E402  (DINO and Mask2Former head converters)
from . import cb_internimage  # noqa: F401,E402  (registers the 'cb_internimage' converter)
from . import imagenet22k_to_1k  # noqa: F401,E402  (registers m3i_mm.PretrainedImageNet22kTo1k)
from .m3i import extract_m3i_backbone  # noqa: E402  (registers the 'm3i' converter)

register_scheme()

__all__ = [
    'SCHEME', 'CacheWriteError', 'CachedFile', 'CheckpointReadError', 'ChecksumMismatchError',
    'ConverterError',
    'DownloadError', 'UnverifiedFileError', 'cached_file', 'hf_location', 'record_path',
    'IndexFormatError', 'OfflineError', 'UnknownEntryError', 'UnsafeCheckpointError',
    'ZooEntry', 'ZooError', 'ZooResult', 'apply_converter', 'apply_mirror', 'cache_path',
    'check_cached',
    'default_cache_dir', 'download_checkpoint', 'extract_m3i_backbone', 'get_converter',
    'get_entry', 'index_paths',
    'list_converters', 'load_checkpoint_file', 'load_index', 'load_zoo_checkpoint',
    'offline_mode', 'register_converter', 'register_scheme', 'sha256_of', 'zoo_home'
]
