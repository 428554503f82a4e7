"""Labelled images through mmpretrain's datasets, and unlabelled image folders."""
from typing import Optional, Sequence, Union

from mmengine import fileio
from mmengine.registry import DefaultScope

from m3i_mm.registry import DATASETS
from .base import (ImageSource, PackedStrings, check_decode_backend, check_index, decode_image,
                   join_root, make_sample, normalise_extensions, read_bytes, refuse_directory)

__all__ = ['LabelledImageDataset', 'UnlabelledImageDataset']

IMAGE_FILE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.ppm', '.pgm', '.tif',
                         '.tiff')


@DATASETS.register_module()
class LabelledImageDataset(ImageSource):
    """Labelled images listed by an mmpretrain dataset (``ImageNet``, ``CustomDataset``, ...).

    The mmpretrain dataset is built through mmpretrain's ``DATASETS`` (``lazy_init=True``,
    no pipeline) and only provides ``img_path`` and ``gt_label``; images are read and
    decoded here so that bad files are handled like those of every other source.

    Args:
        dataset: Config of the mmpretrain dataset (e.g.
            ``dict(type='ImageNet', data_root='data/imagenet', split='train')``) or the
            dataset itself (an mmengine ``BaseDataset`` giving ``img_path``/``gt_label``).
        backend_args: mmengine file backend arguments for reading the images.
        decode_backend: ``'pillow'`` (default; EXIF orientation ignored, as torchvision's
            ``ImageFolder``) or ``'cv2'`` (orientation applied, as mmcv's
            ``LoadImageFromFile``); see :func:`~m3i_mm.datasets.base.decode_image`.
    """

    def __init__(self, dataset: Union[dict, object], backend_args: Optional[dict] = None,
                 decode_backend: str = 'pillow') -> None:
        self.decode_backend = check_decode_backend(decode_backend)
        if isinstance(dataset, dict):
            from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS
            cfg = dict(dataset, pipeline=[])
            cfg.setdefault('lazy_init', True)
            with DefaultScope.overwrite_default_scope('mmpretrain'):
                dataset = MMPRETRAIN_DATASETS.build(cfg)
        self.dataset = dataset
        self.backend_args = backend_args

    def _full_init(self):
        """The wrapped dataset, loaded on first use (``full_init`` returns at once later)."""
        self.dataset.full_init()
        return self.dataset

    def __len__(self) -> int:
        return len(self._full_init())

    @property
    def metainfo(self) -> dict:
        classes = self._full_init().metainfo.get('classes') or ()
        return dict(kind='labelled images', dataset=type(self.dataset).__name__,
                    classes=[str(c) for c in classes])

    def load(self, index: int) -> dict:
        dataset = self._full_init()
        check_index(index, len(dataset), type(dataset).__name__)
        info = dataset.get_data_info(index)
        path = info['img_path']
        label = info.get('gt_label', -1)
        try:
            label = int(label)
        except TypeError:
            raise TypeError(f'{type(dataset).__name__} gives gt_label {label!r} for {path}; '
                            'only single-label datasets are supported') from None
        img = decode_image(read_bytes(path, self.backend_args), path, self.decode_backend)
        return make_sample(img, path, path, gt_label=label)


@DATASETS.register_module()
class UnlabelledImageDataset(ImageSource):
    """Images without labels or captions: a folder (scanned recursively) or a file list.

    Args:
        data_root: Folder of the images (and root of relative paths in ``file_list``).
        file_list: Optional text file with one image path per line (relative to
            ``data_root``); without it the folder is scanned.
        extensions: File extensions taken when scanning (case-insensitive).
        recursive: Scan sub-folders too.
        backend_args: mmengine file backend arguments.
        decode_backend: ``'pillow'`` (default) or ``'cv2'``; see
            :func:`~m3i_mm.datasets.base.decode_image`.
    """

    def __init__(self, data_root: str = '', file_list: Optional[str] = None,
                 extensions: Sequence[str] = IMAGE_FILE_EXTENSIONS, recursive: bool = True,
                 backend_args: Optional[dict] = None, decode_backend: str = 'pillow') -> None:
        self.data_root = data_root
        self.backend_args = backend_args
        self.decode_backend = check_decode_backend(decode_backend)
        if file_list is not None:
            file_list = join_root(data_root, file_list)
            refuse_directory(file_list, 'file_list', 'give a text file with one image path '
                             'per line, or leave file_list out to scan data_root')
            text = fileio.get_text(file_list, backend_args=backend_args)
            paths = [line.strip() for line in text.splitlines() if line.strip()]
        else:
            if not data_root:
                raise ValueError('UnlabelledImageDataset needs data_root or file_list')
            exts = normalise_extensions(extensions)
            paths = sorted(
                p for p in fileio.list_dir_or_file(data_root, list_dir=False, recursive=recursive,
                                                   backend_args=backend_args)
                if p.lower().endswith(exts))
        if not paths:
            raise ValueError(f'no images found in {file_list or data_root}')
        self._paths = PackedStrings(paths)

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def metainfo(self) -> dict:
        return dict(kind='unlabelled images', data_root=self.data_root)

    def load(self, index: int) -> dict:
        check_index(index, len(self), 'UnlabelledImageDataset')
        rel_path = self._paths[index]
        path = join_root(self.data_root, rel_path)
        img = decode_image(read_bytes(path, self.backend_args), path, self.decode_backend)
        return make_sample(img, path, rel_path)

