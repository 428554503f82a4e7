import os.path as osp

import numpy as np
import pytest
from PIL import Image

from m3i_mm.datasets import BadSampleError, LabelledImageDataset, UnlabelledImageDataset


def test_labelled_through_mmpretrain_custom_dataset(corpus):
    ds = LabelledImageDataset(dict(type='CustomDataset', data_root=corpus.classes_root))
    classes = sorted(corpus.classes)
    assert len(ds) == 16 and ds.metainfo['classes'] == classes
    seen = set()
    for i in range(len(ds)):
        sample = ds[i]
        cls = osp.basename(osp.dirname(sample['img_path']))
        assert sample['gt_label'] == classes.index(cls) and sample['caption'] is None
        expected = np.asarray(Image.open(sample['img_path']).convert('RGB'))[..., ::-1]
        assert np.abs(sample['img'].astype(int) - expected).mean() < 2.0  # BGR
        seen.add(sample['sample_key'])
    assert len(seen) == 16


def test_labelled_through_mmpretrain_imagenet_with_ann_file(corpus, tmp_path):
    lines = [f'{cls}/{i:03d}.jpg {k}' for k, cls in enumerate(sorted(corpus.classes))
             for i in range(2)] + ['astronaut/999.jpg 0']  # listed but absent
    (tmp_path / 'train.txt').write_text('\n'.join(lines) + '\n')
    ds = LabelledImageDataset(dict(type='ImageNet', data_root=corpus.classes_root,
                                   data_prefix='', ann_file=str(tmp_path / 'train.txt'),
                                   classes=sorted(corpus.classes)))
    assert len(ds) == 9 and ds[2]['gt_label'] == 1
    with pytest.raises(BadSampleError, match='missing file'):
        ds[8]


def test_unlabelled_folder_and_file_list(corpus, tmp_path):
    (tmp_path / 'notes.TXT').write_text('not an image')
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'UPPER.JPG')
    folder = UnlabelledImageDataset(str(tmp_path))
    assert len(folder) == 1 and folder[0]['sample_key'] == 'UPPER.JPG'
    nested = UnlabelledImageDataset(corpus.classes_root)
    assert len(nested) == 16 and nested[0]['sample_key'] == 'astronaut/000.jpg'
    assert nested[0]['gt_label'] == -1 and nested[0]['caption'] is None
    with pytest.raises(ValueError, match='no images found'):
        UnlabelledImageDataset(corpus.classes_root, recursive=False)
    (tmp_path / 'list.txt').write_text('chelsea/001.jpg\n\ncoffee/003.jpg\n')
    listed = UnlabelledImageDataset(corpus.classes_root, file_list=str(tmp_path / 'list.txt'))
    assert [listed[i]['sample_key'] for i in range(2)] == ['chelsea/001.jpg', 'coffee/003.jpg']


def test_a_directory_given_as_file_list_is_named(corpus):
    """A folder given as file_list ended in IsADirectoryError (issue 21.14)."""
    with pytest.raises(ValueError, match=r'the file_list .* is a directory, not a file'):
        UnlabelledImageDataset(data_root=corpus.root, file_list='images')
