"""iNaturalist 2018 with the observation metadata of the official InternImage-H fine-tuning.

The official classifier (``classification/models/intern_image_meta_former.py``) adds to its
image logits the logits of two encodings of each observation (``classification/dataset/
cached_image_folder.py``, ``get_temporal_info(date, miss_hour=True)`` and
``get_spatial_info``): the month on the unit circle and the location on the unit sphere.
"""
import math
import os.path as osp
import re
from typing import Any, List, Optional, Sequence

from mmengine import fileio
from mmpretrain.datasets import BaseDataset

from m3i_mm.registry import DATASETS

__all__ = ['INaturalist2018', 'encode_location', 'encode_month']

SPLITS = ('train', 'val', 'test')
_DATE = re.compile(r'(\d*)-(\d*)-(\d*)')


def encode_month(date: Optional[str]) -> List[float]:
    """``[sin, cos]`` of the month's angle ``2 pi m / 12``, then ``[0, 0]`` for the hour.

    As the official ``get_temporal_info(date, miss_hour=True)``: the month is read from a date
    starting ``YYYY-MM-DD``; the hour is never used (both its terms are 0); a missing or
    unreadable date (any of year, month, day empty) gives four zeros.
    """
    match = _DATE.match(date.strip()) if isinstance(date, str) else None
    if match is None or not all(match.groups()):
        return [0.0, 0.0, 0.0, 0.0]
    angle = 2 * math.pi * int(match.group(2)) / 12
    return [math.sin(angle), math.cos(angle), 0.0, 0.0]


def encode_location(latitude: Optional[float], longitude: Optional[float]) -> List[float]:
    """The point ``(x, y, z)`` of the unit sphere at ``latitude``/``longitude`` (degrees).

    As the official ``get_spatial_info``, a location whose latitude or longitude is missing
    *or exactly 0* gives three zeros (the official test is ``if latitude and longitude``).
    """
    if not latitude or not longitude:
        return [0.0, 0.0, 0.0]
    lat, lon = math.radians(latitude), math.radians(longitude)
    return [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]


@DATASETS.register_module()
class INaturalist2018(BaseDataset):
    """iNaturalist 2018 (8142 species) in its release format, with observation metadata.

    ``data_root`` holds ``{split}2018.json`` (COCO-style ``images``, ``annotations``,
    ``categories``), ``{split}2018_locations.json`` (one ``date``/``lat``/``lon`` record per
    image) and the image folders the ``file_name`` fields name. Each sample has
    ``img_path``, ``gt_label`` (the category's position in ``categories``, as officially) and
    ``temporal_info`` (:func:`encode_month`, 4 values) and ``spatial_info``
    (:func:`encode_location`, 3 values); pack the two with
    ``PackInputs(algorithm_keys=('temporal_info', 'spatial_info'))``.

    Records are matched by image id: annotations by ``image_id``, locations by ``id`` (a
    locations file without ids is matched by position, as the official parser always does).
    ``test2018.json`` has no annotations: its samples get ``gt_label`` -1.

    Args:
        data_root: Folder of the annotation files and images.
        split: ``'train'``, ``'val'`` or ``'test'``.
        ann_file: Annotation file (default ``{split}2018.json`` in ``data_root``).
        locations_file: Metadata file (default: ``ann_file`` with ``2018.json`` replaced by
            ``2018_locations.json``, the official rule); ``None`` or missing: every sample
            gets zero metadata only if ``allow_missing_locations``.
        allow_missing_locations: Accept a split without a locations file (zeros).
        **kwargs: mmpretrain ``BaseDataset`` arguments (``pipeline``, ``test_mode``, ...).
    """

    def __init__(self, data_root: str, split: str = 'train', ann_file: Optional[str] = None,
                 locations_file: Optional[str] = '', allow_missing_locations: bool = False,
                 **kwargs: Any) -> None:
        if split not in SPLITS:
            raise ValueError(f'INaturalist2018 split must be one of {SPLITS}, got {split!r}')
        self.split = split
        ann_file = ann_file or f'{split}2018.json'
        if locations_file == '':
            locations_file = osp.basename(ann_file).replace('2018.json', '2018_locations.json')
        self.locations_file = locations_file
        self.allow_missing_locations = allow_missing_locations
        kwargs.setdefault('test_mode', split != 'train')
        super().__init__(ann_file=ann_file, data_root=data_root, **kwargs)

    def _locations(self) -> Optional[list]:
        if not self.locations_file:
            return None
        path = self.locations_file if osp.isabs(self.locations_file) else osp.join(
            self.data_root, self.locations_file)
        if not fileio.exists(path):
            if self.allow_missing_locations:
                return None
            raise FileNotFoundError(
                f'iNaturalist 2018 locations file {path} not found (the metadata of the '
                'official recipe); pass allow_missing_locations=True to use zeros')
        return fileio.load(path)

    def load_data_list(self) -> List[dict]:
        data = fileio.load(self.ann_file)
        for key in ('images', 'categories'):
            if key not in data:
                raise KeyError(f'{self.ann_file} has no "{key}": not an iNaturalist 2018 '
                               'annotation file')
        categories = data['categories']
        class_index = {cat['id']: i for i, cat in enumerate(categories)}
        if categories:
            self._metainfo.setdefault('classes', tuple(cat['name'] for cat in categories))
        labels = {}
        for ann in data.get('annotations') or []:
            if ann['category_id'] not in class_index:
                raise KeyError(f'{self.ann_file}: annotation {ann.get("id")} has category '
                               f'{ann["category_id"]}, which is not in "categories"')
            labels[ann['image_id']] = class_index[ann['category_id']]
        images = data['images']
        locations = self._locations()
        by_id = None
        if locations is not None:
            if all('id' in rec for rec in locations):
                by_id = {rec['id']: rec for rec in locations}
            elif len(locations) != len(images):
                raise ValueError(f'{self.locations_file} has {len(locations)} records without '
                                 f'ids for {len(images)} images')
        data_list = []
        for position, image in enumerate(images):
            if locations is None:
                record = {}
            elif by_id is not None:
                if image['id'] not in by_id:
                    raise KeyError(f'{self.locations_file} has no record of image {image["id"]} '
                                   f'({image["file_name"]})')
                record = by_id[image['id']]
            else:
                record = locations[position]
            data_list.append(dict(
                img_path=fileio.join_path(self.data_root, image['file_name']),
                gt_label=labels.get(image['id'], -1),
                temporal_info=encode_month(record.get('date')),
                spatial_info=encode_location(record.get('lat'), record.get('lon'))))
        return data_list

    def extra_repr(self) -> Sequence[str]:
        return [f'Split: \t{self.split}', f'Root: \t{self.data_root}']
