"""M3I view transforms on a real photo: geometry recorded exactly, the SiameseIM resize,
colour jitter and grayscale against independent references, packing of optional labels and
captions, clear errors."""
import cv2
import numpy as np
import pytest
from PIL import Image

from m3i_mm.datasets.transforms import (ColorJitter, M3IViews, PackM3IInputs, RandomGrayscale,
                                        sample_crop_box)
from m3i_mm.demo.photo_datasets import load_photo


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
                     view2_pipeline=no_colour, interpolation='bilinear', backend='cv2')
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


# ----------------------------------------------------------------------------- SiameseIM
def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (PIL's and torchvision's bicubic)."""
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def _resample_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of an antialiased bicubic resize: when shrinking by s,
    the kernel is stretched by s (its support covers 2 s input pixels on each side), so
    every input pixel contributes; rows sum to 1; pixel centres at i + 0.5."""
    scale = size_in / size_out
    stretch = max(scale, 1.0)
    centres = (np.arange(size_out) + 0.5) * scale
    taps = np.arange(size_in) + 0.5
    weights = _bicubic((taps[None, :] - centres[:, None]) / stretch)
    weights[np.abs(taps[None, :] - centres[:, None]) >= 2 * stretch] = 0
    return weights / weights.sum(1, keepdims=True)


def reference_resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bicubic resize in float64 (separable, no intermediate rounding)."""
    rows = _resample_matrix(img.shape[0], height)
    cols = _resample_matrix(img.shape[1], width)
    horizontal = np.einsum('jkc,lk->jlc', img.astype(np.float64), cols)
    return np.clip(np.einsum('ij,jlc->ilc', rows, horizontal), 0, 255)


def assert_close_to_reference(view: np.ndarray, expected: np.ndarray) -> None:
    """>= 99.8% of the values within 1 grey level of the float64 reference, mean absolute
    difference < 0.35 (rounding alone gives 0.25), none more than 8 levels off. PIL
    stores its first (horizontal or vertical) pass in 8 bits: rounding moves values by
    < 1 level, and clipping the bicubic overshoot at saturated edges to [0, 255] before the
    second pass moves a few values by several levels."""
    diff = np.abs(view.astype(np.float64) - expected)
    assert (diff <= 1).mean() >= 0.998, (diff <= 1).mean()
    assert diff.mean() < 0.35 and diff.max() <= 8, (diff.mean(), diff.max())


def test_views_are_antialiased_bicubic_resizes_of_their_crops(photo_bgr):
    """Default views (PIL bicubic, as SiameseIM) are antialiased bicubic resizes of the
    recorded crops, shrinking and enlarging; OpenCV's resize (``backend='cv2'``, the old
    default), which does not antialias, fails the same check on a shrinking crop."""
    no_colour = [dict(type='m3i_mm.RandomGrayscale', prob=0.0)]
    views = M3IViews(size=224, scale=(0.08, 1.0), flip_prob=0.5, view1_pipeline=no_colour,
                     view2_pipeline=no_colour)
    np.random.seed(0)
    shrunk = enlarged = 0
    for _ in range(6):
        out = views(dict(img=photo_bgr.copy()))
        for view, box, flip in zip(out['img'], out['crop_boxes'], out['flips']):
            x1, y1, x2, y2 = (int(v) for v in box)
            expected = reference_resize(photo_bgr[y1:y2, x1:x2], 224, 224)
            assert_close_to_reference(view, expected[:, ::-1] if flip else expected)
            shrunk += (x2 - x1) > 224
            enlarged += (x2 - x1) < 224
    assert shrunk and enlarged  # both directions were checked
    # a 400 x 280 crop shrunk to 224 x 224
    crop = photo_bgr[100:380, 50:450]
    expected = reference_resize(crop, 224, 224)
    assert_close_to_reference(views.resize(crop), expected)
    aliased = np.abs(M3IViews(size=224, backend='cv2').resize(crop) - expected)
    assert (aliased > 2).mean() > 0.05 and aliased.max() > 10


def test_hue_saturation_contrast_brightness_equal_torchvision_on_pil_images(photo_bgr):
    """Each adjustment equals torchvision's on the PIL image SiameseIM would have (RGB)."""
    import torchvision.transforms.functional as TF
    crop = np.ascontiguousarray(photo_bgr[150:246, 200:296])
    pil = Image.fromarray(np.ascontiguousarray(crop[..., ::-1]))
    reference = dict(hue=TF.adjust_hue, saturation=TF.adjust_saturation,
                     contrast=TF.adjust_contrast, brightness=TF.adjust_brightness)
    factors = dict(hue=(-0.5, -0.1, -0.037, 0.02, 0.1, 0.26, 0.5),
                   saturation=(0.0, 0.8, 1.2, 1.7), contrast=(0.0, 0.6, 1.0, 1.4),
                   brightness=(0.0, 0.63, 1.0, 1.37))
    for name, values in factors.items():
        for factor in values:
            ours = ColorJitter.adjust(name, crop, factor)[..., ::-1]
            theirs = np.asarray(reference[name](pil, factor))
            np.testing.assert_array_equal(ours, theirs, err_msg=f'{name} {factor}')


def test_grayscale_rounds_the_itu_luma():
    """Against round(0.299 R + 0.587 G + 0.114 B) in float64, on every 8-bit level of each
    channel: within 1 level (PIL's 16-bit fixed-point weights differ from the decimal ones
    by < 1e-5, which can move a value that lies within 0.003 of .5), and exact for >= 99.9%
    of the pixels; truncation, mmcv's rule, is off by one on about half of them."""
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    bgr[0, :, 0] = bgr[1, :, 1] = bgr[2, :, 2] = np.arange(256)
    np.random.seed(0)
    gray = RandomGrayscale(prob=1.0)(dict(img=bgr.copy()))['img']
    assert gray.shape == bgr.shape and (gray == gray[..., :1]).all()
    luma = 0.299 * bgr[..., 2] + 0.587 * bgr[..., 1] + 0.114 * bgr[..., 0].astype(np.float64)
    diff = np.abs(gray[..., 0].astype(np.float64) - np.floor(luma + 0.5))
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
    assert (np.floor(luma) != np.floor(luma + 0.5)).mean() > 0.4
    # and exactly PIL's convert('L'), the reference SiameseIM's pipeline uses
    from PIL import Image
    pil = np.asarray(Image.fromarray(np.ascontiguousarray(bgr[..., ::-1])).convert('L'))
    np.testing.assert_array_equal(gray[..., 0], pil)
    np.random.seed(0)
    unchanged = RandomGrayscale(prob=0.0)(dict(img=bgr.copy()))['img']
    np.testing.assert_array_equal(unchanged, bgr)
    with pytest.raises(ValueError, match='prob'):
        RandomGrayscale(prob=1.5)
