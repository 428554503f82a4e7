"""m3i_mm.demo.shapes_testbed: the procedural testbed of the paradigm comparison."""
import hashlib
import json
import os
import os.path as osp
import re

import numpy as np
import pytest
from matplotlib.path import Path
from PIL import Image
from scipy.ndimage import binary_erosion

from m3i_mm.demo import shapes_testbed as tb


def test_splits_are_deterministic_and_differ_by_seed_and_split():
    a = tb.generate_split(12, size=64, seed=3, split='eval_test')
    b = tb.generate_split(12, size=64, seed=3, split='eval_test')
    assert np.array_equal(a['images'], b['images']) and np.array_equal(a['segs'], b['segs'])
    assert a['captions'] == b['captions']
    assert all(np.array_equal(a['attributes'][k], b['attributes'][k]) for k in tb.ATTRIBUTES)
    other_seed = tb.generate_split(12, size=64, seed=4, split='eval_test')
    other_split = tb.generate_split(12, size=64, seed=3, split='eval_train')
    for other in (other_seed, other_split):
        assert not any(np.array_equal(x, y) for x in a['images'] for y in other['images'])
    assert a['images'].shape == (12, 64, 64, 3) and a['images'].dtype == np.uint8
    assert a['segs'].shape == (12, 64, 64) and a['segs'].max() < len(tb.SEG_CLASSES)
    with pytest.raises(ValueError, match='unknown split'):
        tb.generate_split(2, split='test')


def test_attributes_are_balanced_enough_to_probe():
    data = tb.generate_split(600, size=48, seed=0, split='eval_train')
    for name, classes in tb.ATTRIBUTES.items():
        counts = np.bincount(data['attributes'][name], minlength=len(classes))
        assert len(counts) == len(classes), name
        # uniform draws: every class present, none more than twice its share
        assert counts.min() > 0 and counts.max() < 2 * len(data['captions']) / len(classes), \
            (name, counts)


def _words(caption: str) -> set:
    return set(re.findall(r'[a-z]+', caption.lower()))


def test_captions_never_name_a_shape_texture_or_photo_but_name_colours_and_count():
    data = tb.generate_split(300, size=48, seed=1, split='captioned')
    rng = np.random.default_rng(1)
    templates = set()
    for caption, colour, count in zip(data['captions'], data['attributes']['colour'],
                                      data['attributes']['count']):
        words = _words(caption)
        assert not words & tb.CAPTION_FORBIDDEN, caption
        assert tb.COLOUR_NAMES[colour] in words, caption
        templates.add(caption.split(' ')[0] if caption.split(' ')[0] not in
                      tb.COLOUR_NAMES else 'colour-first')
    assert len(set(data['captions'])) == len(data['captions'])  # varied sentences
    assert len(templates) >= 4, templates
    # each small object is named with its colour and its relation to the large one
    for _ in range(50):
        count = int(rng.integers(1, 4))
        colours = [tb.COLOUR_NAMES[i] for i in rng.integers(len(tb.COLOURS), size=count + 1)]
        relations = [('left', 'right', 'above', 'below')[i] for i in rng.integers(4, size=count)]
        caption = tb.caption_of(colours, relations, rng)
        for relation, pattern in (('left', r'\bleft\b'), ('right', r'\bright\b'),
                                  ('above', r'\b(above|over|on top)\b'),
                                  ('below', r'\b(below|under|beneath)\b')):
            assert len(re.findall(pattern, caption)) == relations.count(relation), \
                (caption, relations)
        for colour in colours[1:]:
            assert colour in caption
        number = caption.split(' ')[0]
        if number in ('two', 'three', 'four'):
            assert ('two', 'three', 'four').index(number) == count - 1, caption


def _coverage_reference(shape: str, obj: dict, size: int, sub: int = 8) -> np.ndarray:
    """Fraction of each pixel inside the outline, from ``sub`` x ``sub`` sample points per
    pixel tested with matplotlib's point-in-polygon (independent of PIL's rasteriser)."""
    cx, cy = obj['centre']
    coords = (np.arange(size * sub) + 0.5) / sub
    ys, xs = np.meshgrid(coords, coords, indexing='ij')
    points = np.stack([xs.ravel(), ys.ravel()], -1)
    polygon = tb._shape_polygon(shape, cx, cy, obj['radius'], obj['angle'])
    if polygon is None:
        inside = ((points - (cx, cy))**2).sum(1) <= obj['radius']**2
    else:
        inside = Path(polygon).contains_points(points)
    return inside.reshape(size, sub, size, sub).mean((1, 3))


def test_seg_maps_match_the_drawn_objects_and_solid_objects_have_their_colour():
    rng = np.random.default_rng(5)
    size = 64
    solid_checked = 0
    for _ in range(25):
        scene = tb.render_scene(rng, size)
        seg = scene['seg']
        objects = scene['objects']
        assert len(objects) == tb.COUNTS[scene['attributes']['count']]
        assert objects[0]['radius'] > max(o['radius'] for o in objects[1:])  # one large object
        union = np.zeros((size, size), bool)
        unsure = np.zeros((size, size), bool)
        for obj in objects:
            coverage = _coverage_reference(tb.SHAPES[obj['shape']], obj, size)
            inside = coverage >= 0.5
            # edge pixels, where two rasterisers (8x supersampled PIL fill, point sampling)
            # may differ by a fraction of a pixel
            unsure |= np.abs(coverage - 0.5) < 0.25
            assert (seg[inside & ~unsure] == 1 + obj['shape']).all()
            union |= inside
            if tb.TEXTURES[obj['texture']] == 'solid':
                core = coverage == 1
                colour = np.asarray(tb.COLOURS[obj['colour']][1])
                assert core.sum() > 10
                assert np.abs(scene['image'][core].astype(int) - colour).max() <= 1
                solid_checked += 1
        # the background class is everywhere else
        assert (seg[~union & ~unsure] == 0).all()
    assert solid_checked > 5


def test_labels_name_only_the_shape_and_backgrounds_are_the_shipped_photos(monkeypatch):
    calls = []

    def fake_photo(name):  # a constant image per photo: the background must be it
        calls.append(name)
        return np.full((60, 80, 3), 7 * tb.BACKGROUNDS.index(name), np.uint8)

    monkeypatch.setattr(tb, '_photo', fake_photo)
    rng = np.random.default_rng(0)
    for _ in range(30):
        scene = tb.render_scene(rng, 64)
        background = scene['seg'] == 0
        alpha_free = background & (np.abs(scene['image'].astype(int) -
                                          7 * scene['attributes']['background']).max(-1) == 0)
        assert alpha_free.sum() > 0.5 * background.sum()
    assert set(calls) <= set(tb.BACKGROUNDS)
    # the real photos: grey photos give grey backgrounds
    monkeypatch.undo()
    rng = np.random.default_rng(2)
    grey = [s for s in (tb.render_scene(rng, 48) for _ in range(40))
            if tb.BACKGROUNDS[s['attributes']['background']] in tb.GRAY_PHOTOS]
    assert grey
    for scene in grey:
        far = scene['seg'] == 0
        pixels = scene['image'][far].astype(int)
        assert (np.ptp(pixels, axis=1) <= 1).mean() > 0.9


def _hash(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_written_sources_are_disjoint_labelled_by_shape_and_reused(tmp_path):
    sizes = dict(labelled=18, captioned=15, unlabelled=12, eval_train=10, eval_test=8)
    paths = tb.write_testbed(str(tmp_path / 'tb'), sizes, image_size=48, seed=2)
    hashes = {}
    # labelled: class folders named by the large object's shape, nothing else
    expected = tb.generate_split(18, 48, 2, 'labelled')
    folders = sorted(os.listdir(paths['labelled']))
    assert set(folders) <= set(tb.SHAPES)
    for folder in folders:
        for name in os.listdir(osp.join(paths['labelled'], folder)):
            image = np.asarray(Image.open(osp.join(paths['labelled'], folder, name)))
            index = int(name.split('.')[0])
            assert np.array_equal(image, expected['images'][index])
            assert folder == tb.SHAPES[expected['attributes']['shape'][index]]
            hashes.setdefault(_hash(image), []).append('labelled')
    with open(paths['captions']) as f:
        rows = [json.loads(line) for line in f]
    assert [r['caption'] for r in rows] == tb.generate_split(15, 48, 2, 'captioned')['captions']
    for row in rows:
        image = np.asarray(Image.open(osp.join(osp.dirname(paths['captions']), row['path'])))
        hashes.setdefault(_hash(image), []).append('captioned')
    for name in os.listdir(paths['unlabelled']):
        hashes.setdefault(_hash(np.asarray(Image.open(osp.join(paths['unlabelled'], name)))),
                          []).append('unlabelled')
    for split in ('eval_train', 'eval_test'):
        data = tb.load_eval_split(paths['eval'], split)
        assert len(data['images']) == sizes[split] and set(data['attributes']) == \
            set(tb.ATTRIBUTES)
        for image in data['images']:
            hashes.setdefault(_hash(image), []).append(split)
    assert sum(len(v) for v in hashes.values()) == sum(sizes.values())
    assert all(len(v) == 1 for v in hashes.values())  # no image in two places
    # reused with the same settings, refused with others
    mtime = os.path.getmtime(paths['eval'])
    assert tb.write_testbed(str(tmp_path / 'tb'), sizes, image_size=48, seed=2) == paths
    assert os.path.getmtime(paths['eval']) == mtime
    with pytest.raises(ValueError, match='other settings'):
        tb.write_testbed(str(tmp_path / 'tb'), sizes, image_size=48, seed=3)
    with pytest.raises(ValueError, match='unknown splits'):
        tb.write_testbed(str(tmp_path / 'x'), dict(train=3))
