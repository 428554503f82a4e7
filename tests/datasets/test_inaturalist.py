"""iNaturalist 2018 in its release format, with the official month/location encodings."""
import json
import math
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from m3i_mm.datasets import INaturalist2018
from m3i_mm.datasets.inaturalist import encode_location, encode_month
from m3i_mm.demo.photo_datasets import load_photo

CATEGORIES = [dict(id=0, name='Aves'), dict(id=1, name='Plantae'), dict(id=2, name='Fungi')]


def write_inat(root: str, split: str = 'train', with_ids: bool = True) -> list:
    """Three photo crops in the iNaturalist 2018 layout; returns the image records."""
    photos = ['astronaut', 'coffee', 'chelsea']
    images, annotations, locations = [], [], []
    dates = ['2017-03-05 10:20:00', '2016-12-31', '']
    coords = [(45.0, 90.0), (None, None), (0.0, 12.5)]
    for i, name in enumerate(photos):
        rel = f'{split}_val2018/{CATEGORIES[i]["name"]}/{i}/{name}.jpg'
        os.makedirs(osp.dirname(osp.join(root, rel)), exist_ok=True)
        Image.fromarray(load_photo(name)[:48, :64]).save(osp.join(root, rel))
        image_id = 100 + i
        images.append(dict(id=image_id, file_name=rel, width=64, height=48))
        # annotations in another order than the images: matched by image_id
        annotations.insert(0, dict(id=i, image_id=image_id, category_id=(i + 1) % 3))
        record = dict(date=dates[i], lat=coords[i][0], lon=coords[i][1], loc_uncert=10)
        if with_ids:
            record['id'] = image_id
        locations.append(record)
    if with_ids:
        locations.reverse()  # matched by id, not by position
    with open(osp.join(root, f'{split}2018.json'), 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=CATEGORIES), f)
    with open(osp.join(root, f'{split}2018_locations.json'), 'w') as f:
        json.dump(locations, f)
    return images


def test_month_encoding_is_the_official_one():
    # March: angle pi/2; December: angle 2 pi; the hour terms are always 0 (miss_hour=True)
    np.testing.assert_allclose(encode_month('2017-03-05 10:20:00'), [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(encode_month('2016-12-31'), [0, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(encode_month(' 2016-09-01'), [-1, 0, 0, 0], atol=1e-12)
    for missing in ('', None, 'unknown', '2016--01', '-03-05', '2016-03-'):
        assert encode_month(missing) == [0.0, 0.0, 0.0, 0.0], missing


def test_location_encoding_is_the_point_on_the_unit_sphere():
    half = math.sqrt(0.5)
    np.testing.assert_allclose(encode_location(45.0, 90.0), [0, half, half], atol=1e-12)
    np.testing.assert_allclose(encode_location(-90.0, 33.0), [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(encode_location(10.0, 180.0),
                               [-math.cos(math.radians(10)), 0, math.sin(math.radians(10))],
                               atol=1e-12)
    # the official `if latitude and longitude`: missing or exactly-zero coordinates -> zeros
    for lat, lon in ((None, 3.0), (3.0, None), (0.0, 12.5), (12.5, 0.0)):
        assert encode_location(lat, lon) == [0.0, 0.0, 0.0], (lat, lon)


@pytest.mark.parametrize('with_ids', [True, False])
def test_dataset_reads_labels_and_metadata(tmp_path, with_ids):
    root = str(tmp_path)
    images = write_inat(root, with_ids=with_ids)
    dataset = INaturalist2018(data_root=root, split='train')
    assert len(dataset) == 3
    assert dataset.metainfo['classes'] == ('Aves', 'Plantae', 'Fungi')
    infos = [dataset.get_data_info(i) for i in range(3)]
    assert [info['img_path'] for info in infos] == [osp.join(root, im['file_name'])
                                                    for im in images]
    assert [info['gt_label'] for info in infos] == [1, 2, 0]  # category_id (i + 1) % 3
    np.testing.assert_allclose(infos[0]['temporal_info'], [1, 0, 0, 0], atol=1e-12)
    half = math.sqrt(0.5)
    np.testing.assert_allclose(infos[0]['spatial_info'], [0, half, half], atol=1e-12)
    assert infos[1]['spatial_info'] == [0.0, 0.0, 0.0]  # no coordinates
    assert infos[2]['temporal_info'] == [0.0, 0.0, 0.0, 0.0]  # no date
    assert infos[2]['spatial_info'] == [0.0, 0.0, 0.0]  # latitude exactly 0


def test_pipeline_packs_the_metadata_for_the_head(tmp_path):
    from mmengine.registry import DefaultScope
    root = str(tmp_path)
    write_inat(root, split='val')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='CenterCrop', crop_size=32),
                dict(type='PackInputs', algorithm_keys=('temporal_info', 'spatial_info'))]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = INaturalist2018(data_root=root, split='val', pipeline=pipeline)
        sample = dataset[0]['data_samples']
    assert sample.gt_label.tolist() == [1]
    np.testing.assert_allclose(sample.temporal_info, [1, 0, 0, 0], atol=1e-12)
    assert len(sample.spatial_info) == 3


def test_missing_metadata_is_named(tmp_path):
    root = str(tmp_path)
    write_inat(root)
    os.remove(osp.join(root, 'train2018_locations.json'))
    with pytest.raises(FileNotFoundError, match='train2018_locations.json not found'):
        INaturalist2018(data_root=root, split='train')
    dataset = INaturalist2018(data_root=root, split='train', allow_missing_locations=True)
    assert dataset.get_data_info(0)['spatial_info'] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="split must be one of"):
        INaturalist2018(data_root=root, split='minival')


def test_a_location_record_missing_for_an_image_is_an_error(tmp_path):
    root = str(tmp_path)
    write_inat(root)
    path = osp.join(root, 'train2018_locations.json')
    with open(path) as f:
        records = json.load(f)
    with open(path, 'w') as f:
        json.dump(records[1:], f)
    with pytest.raises(KeyError, match='has no record of image'):
        INaturalist2018(data_root=root, split='train')
