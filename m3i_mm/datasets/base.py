"""What every data source of a :class:`~m3i_mm.datasets.MultiSourceDataset` shares.

The sample schema (one dict per sample, before the transform pipeline):

============== ==================================================================
``img``        ``H x W x 3`` uint8 array in **BGR** channel order, as mmcv's
               ``LoadImageFromFile`` gives; so mmpretrain transforms work unchanged and the
               model's data preprocessor converts with ``to_rgb=True``. Pipelines must not
               contain ``LoadImageFromFile``: the source has decoded the image already.
``img_path``   where the image came from (for logs), e.g. ``root/a.jpg`` or
               ``shards/data-000001.tar:0042.jpg``
``gt_label``   class index, ``-1`` when the source has no labels
``caption``    str, or None when the source has no captions
``source``     index of the source in the dataset (int)
``source_name``  the source's name (str)
``sample_key`` a stable string unique within the dataset
``ori_shape``, ``img_shape``  ``(H, W)``, as ``LoadImageFromFile`` sets them
============== ==================================================================

A source signals a sample it cannot deliver (missing, truncated or undecodable image,
empty caption) by raising :class:`BadSampleError`; the multi-source dataset then skips it
and counts it under the error's ``kind`` (one of :data:`BAD_SAMPLE_KINDS`).
"""
import io
import os.path as osp
from typing import Iterable, List, Optional, Sequence

import cv2
import mmcv
import numpy as np
from mmengine import fileio
from PIL import Image
from torch.utils.data import Dataset

__all__ = ['BAD_SAMPLE_KINDS', 'BadSampleError', 'DECODE_BACKENDS', 'ImageSource',
           'PackedStrings', 'PathRules', 'check_decode_backend', 'decode_image', 'join_root',
           'make_sample', 'read_bytes', 'refuse_directory']

NO_LABEL = -1

#: What can be wrong with a sample; the bad-sample counts are kept per kind.
BAD_SAMPLE_KINDS = ('missing file', 'unreadable file', 'empty file', 'truncated image',
                    'undecodable image', 'no caption', 'empty caption', 'unreadable caption',
                    'cut-off shard member', 'bad manifest row', 'other')


class BadSampleError(Exception):
    """A sample that cannot be used, with where it is, why, and the kind of fault.

    Args:
        path: Where the sample is (file, ``shard:member`` or ``manifest:line``).
        reason: What is wrong, for the log.
        kind: One of :data:`BAD_SAMPLE_KINDS`, for the counts.
    """

    def __init__(self, path: str, reason: str, kind: str = 'other') -> None:
        super().__init__(f'{path}: {reason}')
        if kind not in BAD_SAMPLE_KINDS:
            raise ValueError(f'unknown bad-sample kind {kind!r}; use one of {BAD_SAMPLE_KINDS}')
        self.path = path
        self.reason = reason
        self.kind = kind

    def __reduce__(self):  # keep path, reason and kind across worker processes
        return type(self), (self.path, self.reason, self.kind)


def read_bytes(path: str, backend_args: Optional[dict] = None) -> bytes:
    """The bytes of ``path`` through mmengine's file backends; a bad sample if absent.

    Any backend works (local files, ``http(s)://`` URLs, ``s3://``, ...). An HTTP 404 or
    410 is a missing file, other HTTP and I/O errors an unreadable one. mmengine's HTTP
    backend sets no timeout: for URLs read during training set the dataloader's
    ``timeout``, or download the images first (img2dataset).
    """
    try:
        return fileio.get(path, backend_args=backend_args)
    except FileNotFoundError:
        raise BadSampleError(path, 'missing file', 'missing file') from None
    except OSError as err:  # urllib's HTTPError and URLError are OSErrors
        if getattr(err, 'code', None) in (404, 410):
            raise BadSampleError(path, f'missing file ({err})', 'missing file') from None
        raise BadSampleError(path, f'unreadable file ({err})', 'unreadable file') from None


#: Image decoders of :func:`decode_image`, the default first.
DECODE_BACKENDS = ('pillow', 'cv2')


def check_decode_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`DECODE_BACKENDS`, else a ValueError."""
    if backend not in DECODE_BACKENDS:
        raise ValueError(f'decode_backend must be one of {DECODE_BACKENDS}, got {backend!r}')
    return backend


def decode_image(data: bytes, path: str, backend: str = 'pillow') -> np.ndarray:
    """Decode image bytes into an ``H x W x 3`` BGR uint8 array, or raise BadSampleError.

    Backends:

    - ``'pillow'`` (default): ``PIL.Image.open(...).convert('RGB')``, the default loader
      of torchvision's ``ImageFolder``, which SiameseIM (whose pipeline M3I follows) reads
      its data with (``ImagenetWithMask(datasets.ImageFolder)`` in its
      ``util/datasets.py``). The EXIF orientation tag is **ignored** (pixels in stored
      order) and CMYK JPEGs are converted by PIL. Chosen as the default so that the pixels
      fed to pre-training are those of the reference pipeline, bit for bit. (Images that
      img2dataset re-encoded carry no orientation tag: its resizer decodes with
      ``cv2.IMREAD_UNCHANGED``, which ignores the tag, and writes no EXIF; both backends
      then see the same stored orientation.)
    - ``'cv2'``: OpenCV through ``mmcv.imfrombytes(flag='color')``, as mmcv's
      ``LoadImageFromFile`` decodes: the EXIF orientation **is applied** (tags 3, 6 and 8
      rotate the image by 180, 90 and 270 degrees, 6 and 8 swap height and width, tags
      2/4/5/7 mirror), and CMYK JPEGs come out up to 1 level away from PIL's. Choose it to
      see photos upright as a viewer shows them, or to match mmcv-decoded data.

    A JPEG without an end-of-image marker after its last scan is rejected before
    decoding: some decoders turn a truncated JPEG into a partly grey image with only a
    warning. (Marker bytes cannot occur inside entropy-coded data, which escapes 0xFF as
    0xFF00.)
    """
    if not data:
        raise BadSampleError(path, 'empty file', 'empty file')
    if data[:2] == b'\xff\xd8' and data.rfind(b'\xff\xd9') < data.rfind(b'\xff\xda'):
        raise BadSampleError(path, 'truncated JPEG (no end-of-image marker)',
                             'truncated image')
    check_decode_backend(backend)
    try:
        if backend == 'pillow':
            with Image.open(io.BytesIO(data)) as pil_image:
                rgb = pil_image if pil_image.mode == 'RGB' else pil_image.convert('RGB')
                img = cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR)
        else:
            img = mmcv.imfrombytes(data, flag='color', channel_order='bgr', backend='cv2')
    except Exception as err:  # decoders raise many types (cv2.error, OSError, ...)
        raise BadSampleError(path, f'undecodable image ({type(err).__name__}: {err})',
                             'undecodable image') from None
    if img is None:
        raise BadSampleError(path, 'undecodable image data', 'undecodable image')
    return img


def make_sample(img: np.ndarray, img_path: str, sample_key: str, gt_label: int = NO_LABEL,
                caption: Optional[str] = None) -> dict:
    """A sample dict of the schema (without ``source``/``source_name``, set by the dataset)."""
    shape = img.shape[:2]
    return dict(img=img, img_path=img_path, gt_label=int(gt_label), caption=caption,
                sample_key=sample_key, ori_shape=shape, img_shape=shape)


def join_root(root: str, path: str) -> str:
    """``path`` under ``root`` unless it is absolute or a URI (``s3://...``)."""
    if not root or path.startswith('/') or '://' in path:
        return path
    return fileio.join_path(root, path)


def refuse_directory(path: str, what: str, hint: str) -> None:
    """A one-line ValueError when ``path``, where a file belongs, is a local directory."""
    if '://' not in path and osp.isdir(path):
        raise ValueError(f'the {what} {path} is a directory, not a file: {hint}')


class PathRules:
    """Which image paths of a manifest can be read; ``rules(path)`` is the reason a path
    cannot (the row then is a bad row, named by file and line), or None.

    - A URI needs an mmengine file backend for its scheme (``http``, ``https``, ``s3``,
      ... ; ``file://`` has none: give the plain path).
    - With ``restrict_to_root``, a path must stay inside ``root``: absolute paths, paths
      whose ``../`` lead out of it, and URIs are refused. (Symbolic links inside the root
      are followed as the file system does.)
    """

    def __init__(self, root: str = '', restrict_to_root: bool = False,
                 backend_args: Optional[dict] = None) -> None:
        self.root = root
        self.restrict_to_root = bool(restrict_to_root)
        self.backend_args = backend_args
        self._schemes: dict = {}

    def __call__(self, path: str) -> Optional[str]:
        scheme, sep, _ = path.partition('://')
        if sep:
            if self.restrict_to_root:
                return 'a URI, outside data_root (restrict_to_root=True)'
            if scheme not in self._schemes:
                self._schemes[scheme] = self._scheme_problem(scheme, path)
            return self._schemes[scheme]
        if self.restrict_to_root:
            if osp.isabs(path):
                return 'an absolute path, outside data_root (restrict_to_root=True)'
            if osp.normpath(path).split(osp.sep, 1)[0] == '..':
                return "'../' leads outside data_root (restrict_to_root=True)"
        return None

    def _scheme_problem(self, scheme: str, path: str) -> Optional[str]:
        try:
            fileio.get_file_backend(path, backend_args=self.backend_args)
        except Exception as err:  # KeyError/ValueError for unknown prefixes, ImportError
            hint = ': give the plain local path' if scheme == 'file' else \
                f' ({type(err).__name__}: {err})'
            return f"no mmengine file backend reads '{scheme}://' paths{hint}"
        return None


class PackedStrings:
    """A read-only list of strings stored as one numpy byte buffer plus offsets.

    Millions of small Python strings in a dataset make every forked dataloader worker
    copy the pages they live on (reference counts are written on access). Two numpy
    arrays are never written, so they stay shared.
    """

    def __init__(self, strings: Iterable[str]) -> None:
        encoded = [s.encode('utf-8') for s in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b''.join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> str:
        if not -len(self) <= index < len(self):
            raise IndexError(f'index {index} out of range for {len(self)} strings')
        index %= len(self)
        return self._buffer[self._offsets[index]:self._offsets[index + 1]].tobytes().decode(
            'utf-8')

    @property
    def nbytes(self) -> int:
        return self._offsets.nbytes + self._buffer.nbytes


class ImageSource(Dataset):
    """Base class of the sources: random access to raw samples of the schema.

    Subclasses implement ``__len__`` and :meth:`load`. ``ds[i]`` is ``ds.load(i)``, which
    raises :class:`BadSampleError` for a bad sample; wrap sources in a
    :class:`~m3i_mm.datasets.MultiSourceDataset` (one source is fine) for skipping,
    counting and transform pipelines.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> dict:
        """The sample at ``index`` (schema above, without source fields)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        return self.load(index)

    @property
    def block_sizes(self) -> Optional[List[int]]:
        """Samples per storage block (tar shard) in index order; None if unblocked.

        Samplers keep a block's samples close together in time for I/O locality.
        """
        return None

    @property
    def metainfo(self) -> dict:
        """Plain-data description (goes into checkpoint meta, so ints/str/lists only)."""
        return {}


def check_index(index: int, size: int, what: str) -> None:
    """Raise an IndexError naming ``what`` when ``index`` is outside ``[0, size)``."""
    if not 0 <= index < size:
        raise IndexError(f'{what}: index {index} out of range [0, {size})')


def normalise_extensions(values: Sequence[str]) -> tuple:
    """Lower-cased extensions with a leading dot, as a tuple."""
    return tuple(v.lower() if v.startswith('.') else '.' + v.lower() for v in values)
