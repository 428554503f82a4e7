"""Errors raised by the model zoo; each message names the entry, file or URL at fault."""


class ZooError(RuntimeError):
    """Base class of every model-zoo error."""


class IndexFormatError(ZooError):
    """A model-index or metafile is malformed (missing field, bad sha256, duplicate name)."""


class UnknownEntryError(ZooError):
    """No zoo entry has the requested name."""


class DownloadError(ZooError):
    """A download failed (HTTP error, refused connection, interrupted or truncated body)."""


class CacheWriteError(ZooError):
    """The zoo cache cannot be written (no permission, read-only file system, disk full)."""


class ChecksumMismatchError(ZooError):
    """A downloaded or cached file does not have the expected sha256."""


class UnverifiedFileError(ZooError):
    """A cached file of an unpinned entry has no valid sha256 record to check it against."""


class CheckpointReadError(ZooError):
    """A file is not a readable PyTorch checkpoint (empty, truncated, another format)."""


class OfflineError(ZooError):
    """Offline mode is on and the requested file is not in the cache."""


class UnsafeCheckpointError(ZooError):
    """A checkpoint needs globals outside the ``torch.load(weights_only=True)`` allow-list."""


class ConverterError(ZooError):
    """A converter is unknown, registered twice, or returned something unusable."""
