"""The tiny COCO, LVIS and ADE20k sets made from the photos are valid inputs of the real
datasets and evaluators: perfect predictions score 1, the formats' own fields are
consistent, and the demo configs read them as their full-size counterparts read the real
sets."""
import json
import os.path as osp
from collections import Counter

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DATASETS, DefaultScope

from m3i_mm.demo.photo_datasets import TONE_CLASSES, write_coco_instances
from tests.e2e.conftest import demo_config


def annotations(workspace: str, name: str) -> dict:
    with open(osp.join(workspace, 'data', 'demo', *name.split('/'))) as f:
        return json.load(f)


def perfect_detections(gt: dict) -> list:
    return [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'],
                 segmentation=a['segmentation'], score=1.0) for a in gt['annotations']]


def build_dataset(name: str, loader: str = 'train_dataloader'):
    cfg = Config.fromfile(demo_config(name))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return cfg, DATASETS.build(cfg[loader].dataset)


@pytest.mark.parametrize('iou_type', ['bbox', 'segm'])
def test_coco_set_scores_one_for_its_own_annotations(demo_workspace, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    path = osp.join(demo_workspace, 'data', 'demo', 'coco', 'annotations',
                    'instances_val2017.json')
    gt = COCO(path)
    assert [c['name'] for c in gt.loadCats(gt.getCatIds())] == list(TONE_CLASSES)
    assert len(gt.getImgIds()) == 6 and len(gt.getAnnIds()) >= 12
    evaluator = COCOeval(gt, gt.loadRes(perfect_detections(gt.dataset)), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_lvis_set_fields_and_scores(demo_workspace, monkeypatch):
    from lvis import LVIS, LVISEval, LVISResults
    gt_json = annotations(demo_workspace, 'lvis/annotations/lvis_v1_val.json')
    present = Counter()
    for image in gt_json['images']:
        positives = {a['category_id'] for a in gt_json['annotations']
                     if a['image_id'] == image['id']}
        assert not positives & set(image['neg_category_ids'])
        assert positives | set(image['neg_category_ids']) == {1, 2, 3, 4}
        assert image['coco_url'].startswith('http://images.cocodataset.org/val2017/')
        present.update(positives)
    instances = Counter(a['category_id'] for a in gt_json['annotations'])
    for cat in gt_json['categories']:
        assert cat['image_count'] == present[cat['id']]
        assert cat['instance_count'] == instances[cat['id']]
    assert sorted(Counter(c['frequency'] for c in gt_json['categories'])) == ['c', 'f', 'r']

    if not hasattr(np, 'float'):  # lvis 0.5.3 (PyPI) still calls np.float in accumulate()
        monkeypatch.setattr(np, 'float', float, raising=False)
    path = osp.join(demo_workspace, 'data', 'demo', 'lvis', 'annotations', 'lvis_v1_val.json')
    gt = LVIS(path)
    for iou_type in ('bbox', 'segm'):
        evaluator = LVISEval(gt, LVISResults(gt, perfect_detections(gt_json)), iou_type)
        evaluator.run()
        results = evaluator.get_results()
        for key in ('AP', 'APr', 'APc', 'APf'):
            assert results[key] == pytest.approx(1.0), (iou_type, key, results[key])


def test_demo_detection_configs_read_every_image_and_class(demo_workspace, monkeypatch):
    monkeypatch.chdir(demo_workspace)
    for name in ('coco', 'lvis'):
        cfg, dataset = build_dataset(name, 'val_dataloader')
        assert cfg.model.roi_head.bbox_head.num_classes == len(TONE_CLASSES)
        assert dataset.metainfo['classes'] == TONE_CLASSES
        assert len(dataset) == 6
        sample = dataset[0]
        assert sample['inputs'].shape[0] == 3 and len(sample['data_samples'].gt_instances) > 0


def test_lvis_demo_resamples_images_of_rarer_classes(demo_workspace, monkeypatch):
    """Repeat-factor sampling (threshold 0.4): an image is repeated when it holds a class
    seen in fewer than 40% of the images, and only then."""
    monkeypatch.chdir(demo_workspace)
    _, dataset = build_dataset('lvis')
    gt_json = annotations(demo_workspace, 'lvis/annotations/lvis_v1_train.json')
    num_images = len(gt_json['images'])
    fraction = {c['id']: c['image_count'] / num_images for c in gt_json['categories']}
    expected = []
    for image in gt_json['images']:
        classes = {a['category_id'] for a in gt_json['annotations']
                   if a['image_id'] == image['id']}
        expected.append(2 if min(fraction[c] for c in classes) < 0.4 else 1)
    assert 1 in expected and 2 in expected, 'the set does not exercise the resampling'
    assert len(dataset) == sum(expected)
    assert sorted(Counter(dataset.repeat_indices).values()) == sorted(expected)


def test_ade_set_follows_the_ade20k_label_convention(demo_workspace, monkeypatch):
    """Label maps store class i as i + 1 (0 = ignore); reduce_zero_label gives back i."""
    from PIL import Image
    monkeypatch.chdir(demo_workspace)
    _, dataset = build_dataset('ade', 'val_dataloader')
    assert len(dataset) == 6
    info = dataset.get_data_info(0)
    stored = np.asarray(Image.open(info['seg_map_path']))
    assert set(np.unique(stored)) <= {1, 2, 3, 4}
    loaded = dataset[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    reference = np.asarray(Image.fromarray(stored).resize(loaded.shape[::-1], Image.NEAREST))
    assert set(np.unique(loaded)) <= {0, 1, 2, 3}
    assert (loaded == reference.astype(np.int64) - 1).mean() > 0.95


def test_sets_are_deterministic(tmp_path):
    first = write_coco_instances(str(tmp_path / 'a'))['train']
    second = write_coco_instances(str(tmp_path / 'b'))['train']
    assert open(first).read() == open(second).read()
