"""M3I view transforms on a real photo: geometry recorded exactly, colour jitter bounds,
packing of optional labels and captions, clear errors."""
import cv2
import numpy as np
import pytest

from m3i_mm.datasets.transforms import ColorJitter, M3IViews, PackM3IInputs, sample_crop_box
from m3i_mm.utils.photo_datasets import load_photo


@pytest.fixture(scope='module')
def photo_bgr():
    return np.ascontiguousarray(load_photo('astronaut')[..., ::-1])


def test_crop_boxes_respect_scale_ratio_and_image_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x1, y1, x2, y2 = sample_crop_box(300, 200, (0.2, 0.6), (3 / 4, 4 / 3), rng)
        assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 300
        area = (x2 - x1) * (y2 - y1) / (300 * 200)
        assert 0.18 <= area <= 0.62  # rounding of w and h to pixels
        assert 3 / 4 - 0.05 <= (x2 - x1) / (y2 - y1) <= 4 / 3 + 0.05
    # an impossible ratio falls back to the largest centred box of the nearest ratio
    box = sample_crop_box(100, 400, (0.9, 1.0), (1.0, 1.0), np.random.default_rng(0))
    assert box == (150.0, 0.0, 250.0, 100.0)


def test_views_are_the_recorded_crops_of_the_photo(photo_bgr):
    no_colour = [dict(type='mmpretrain.RandomGrayscale', prob=0.0)]
    views = M3IViews(size=64, scale=(0.3, 1.0), flip_prob=0.5, view1_pipeline=no_colour,
                     view2_pipeline=no_colour, interpolation='bilinear')
    np.random.seed(3)
    flips_seen = set()
    for _ in range(8):
        out = views(dict(img=photo_bgr.copy()))
        assert out['crop_boxes'].shape == (2, 4) and out['crop_boxes'].dtype == np.float32
        assert out['img_shape'] == (64, 64)
        for view, box, flip in zip(out['img'], out['crop_boxes'], out['flips']):
            x1, y1, x2, y2 = (int(v) for v in box)
            expected = cv2.resize(photo_bgr[y1:y2, x1:x2], (64, 64),
                                  interpolation=cv2.INTER_LINEAR)
            if flip:
                expected = expected[:, ::-1]
            np.testing.assert_array_equal(view, expected)
            flips_seen.add(bool(flip))
    assert flips_seen == {True, False}


def test_default_view_pipelines_change_colours_but_not_shapes(photo_bgr):
    np.random.seed(0)
    out = M3IViews(size=32)(dict(img=photo_bgr.copy()))
    assert [v.shape for v in out['img']] == [(32, 32, 3), (32, 32, 3)]
    assert all(v.dtype == np.uint8 for v in out['img'])


def test_colour_jitter_factors_and_hue_wrap(photo_bgr):
    crop = photo_bgr[:64, :64]
    # brightness only: every pixel scaled by one factor in [0.6, 1.4]
    jitter = ColorJitter(brightness=0.4)
    np.random.seed(1)
    out = jitter(dict(img=crop.copy()))['img'].astype(np.float64)
    bright = crop.astype(np.float64) > 20
    factor = np.median(out[bright] / crop[bright])
    assert 0.57 <= factor <= 1.41  # uint8 truncation lowers the ratio of dark pixels
    # hue shifts in both directions keep the image valid (mmcv's adjust_hue fails on
    # negative shifts under numpy 2)
    hue = ColorJitter(hue=0.5)
    for seed in range(6):
        np.random.seed(seed)
        shifted = hue(dict(img=crop.copy()))['img']
        assert shifted.shape == crop.shape and shifted.dtype == np.uint8
    # grey pixels have no hue: a hue shift leaves a grey image grey
    grey = np.full((8, 8, 3), 128, np.uint8)
    np.testing.assert_allclose(hue(dict(img=grey))['img'], grey, atol=2)
    with pytest.raises(ValueError, match='hue in'):
        ColorJitter(hue=0.7)
    with pytest.raises(ValueError, match='>= 0'):
        ColorJitter(brightness=-0.1)


def test_pack_keeps_only_real_labels_and_captions(photo_bgr):
    np.random.seed(0)
    views = M3IViews(size=32)
    pack = PackM3IInputs()
    base = views(dict(img=photo_bgr.copy()))
    labelled = pack(dict(base, gt_label=3, caption='an astronaut', source=1,
                         img_path='astronaut.png'))
    assert labelled['inputs'].shape == (2, 3, 32, 32)
    sample = labelled['data_samples']
    assert int(sample.gt_label[0]) == 3 and sample.caption == 'an astronaut'
    assert sample.source == 1 and sample.img_path == 'astronaut.png'
    np.testing.assert_array_equal(sample.crop_boxes, base['crop_boxes'])
    unlabelled = pack(dict(base, gt_label=-1, caption='   ', source=2))['data_samples']
    assert 'gt_label' not in unlabelled and unlabelled.caption is None
    with pytest.raises(ValueError, match='two views'):
        pack(dict(img=photo_bgr))


def test_bad_arguments_and_inputs_are_named():
    with pytest.raises(ValueError, match='scale'):
        M3IViews(scale=(0.5, 0.2))
    with pytest.raises(ValueError, match='interpolation'):
        M3IViews(interpolation='lanczos')
    with pytest.raises(ValueError, match=r'decoded \(H, W, 3\) image'):
        M3IViews(size=32)(dict(img=np.zeros((10, 10), np.uint8)))
