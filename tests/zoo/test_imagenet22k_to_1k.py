"""The ImageNet-22k -> 1k classifier mapping (data from the official map22kto1k.txt) and the
head initialiser that applies it."""
import pytest
import torch

from m3i_mm.zoo.imagenet22k_to_1k import (IMAGENET22K_NUM_CLASSES, MAPPING_FILE,
                                          PretrainedImageNet22kTo1k, imagenet22k_to_1k,
                                          select_imagenet1k_rows)


def test_mapping_is_1000_rows_of_the_22k_classes_in_imagenet1k_order():
    indices, synsets = imagenet22k_to_1k()
    assert len(indices) == len(synsets) == 1000
    assert all(0 <= i < IMAGENET22K_NUM_CLASSES for i in indices)
    # ImageNet-1k numbers its classes by sorted synset id, as the 22k label set does, so the
    # rows ascend; the first and last ImageNet-1k classes are tench and toilet tissue
    assert list(indices) == sorted(indices)
    assert list(synsets) == sorted(synsets)
    assert (synsets[0], synsets[999]) == ('n01440764', 'n15075141')
    # one row repeats: class 850 (teddy bear, n04399382) is not among the 21841 classes and
    # gets the row of class 849 (teapot)
    repeated = [k for k in range(1, 1000) if indices[k] == indices[k - 1]]
    assert repeated == [850]
    assert synsets[849] == synsets[850] == 'n04398044'
    assert len(set(indices)) == 999


def test_repeated_row_is_where_mmpretrain_names_teapot_and_teddy_bear():
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
    assert IMAGENET_CATEGORIES[849].startswith('teapot')
    assert 'teddy' in IMAGENET_CATEGORIES[850]


def test_select_rows_and_errors():
    weight = torch.arange(IMAGENET22K_NUM_CLASSES, dtype=torch.float64)[:, None].repeat(1, 3)
    bias = torch.arange(IMAGENET22K_NUM_CLASSES, dtype=torch.float64)
    out = select_imagenet1k_rows({'fc.weight': weight, 'fc.bias': bias, 'other': bias},
                                 ['fc.weight', 'fc.bias'])
    indices = torch.tensor(imagenet22k_to_1k()[0], dtype=torch.float64)
    assert torch.equal(out['fc.weight'][:, 0], indices) and torch.equal(out['fc.bias'], indices)
    assert out['other'] is bias
    with pytest.raises(ValueError, match='needs a 21841-class head'):
        select_imagenet1k_rows({'fc.bias': torch.zeros(1000)}, ['fc.bias'])
    with pytest.raises(KeyError, match="'fc.weight' not in the checkpoint"):
        select_imagenet1k_rows({}, ['fc.weight'])


def test_initialiser_loads_the_mapped_rows_of_an_official_22k_head(tmp_path):
    """An official-layout 22k classifier (weights under 'model', head.weight/bias with 21841
    rows) initialises a 1000-class LinearClsHead with exactly the mapped rows."""
    from mmpretrain.models.heads import LinearClsHead
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(IMAGENET22K_NUM_CLASSES, 12, generator=gen)
    bias = torch.randn(IMAGENET22K_NUM_CLASSES, generator=gen)
    path = str(tmp_path / 'official_22k.pth')
    torch.save({'model': {'patch_embed.conv1.weight': torch.zeros(8, 3, 3, 3),
                          'head.weight': weight, 'head.bias': bias}}, path)
    head = LinearClsHead(num_classes=1000, in_channels=12)
    PretrainedImageNet22kTo1k(checkpoint=path, prefix='head.')(head)
    rows = list(imagenet22k_to_1k()[0])
    assert torch.equal(head.fc.weight.data, weight[rows])
    assert torch.equal(head.fc.bias.data, bias[rows])
    wrong = LinearClsHead(num_classes=1000, in_channels=12)
    with pytest.raises(KeyError, match='for the classification head'):
        PretrainedImageNet22kTo1k(checkpoint=path, prefix='neck.')(wrong)


def test_data_file_states_its_source():
    with open(MAPPING_FILE) as f:
        header = ''.join(line for line in f if line.startswith('#'))
    assert 'OpenGVLab/InternImage' in header and 'map22kto1k.txt' in header
