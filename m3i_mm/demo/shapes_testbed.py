"""A procedural testbed in which labels, captions and pixels carry different information.

Every image is a crop of one of the photos shipped with scikit-image (the background) with
2-4 non-overlapping objects drawn on it: one large object and 1-3 small ones, each with a
shape, a colour and a texture, at random positions and rotations. What each kind of
pre-training target can teach:

===========  ======================================  =============================
attribute    what it is                              named by
===========  ======================================  =============================
shape        shape of the large object (6 classes)   the label (class folder name)
colour       colour of the large object (6)          the caption
count        number of objects (2, 3 or 4)           the caption
texture      texture of the large object (4)         nothing: pixels only
background   the photo the background comes from     nothing: pixels only
===========  ======================================  =============================

A caption describes the colours of all objects and where each small object lies relative to
the large one ("a big red thing with a little blue one to its left ..."), in varied
sentences; it never names a shape, a texture or a photo (:data:`CAPTION_FORBIDDEN`). Each
image also has a segmentation map: 0 for the background and ``1 + shape`` for every pixel
an object covers (at least half), so dense structure (object masks, the shape of the small
objects) is only in the pixels. Attributes and maps are kept for evaluation only.

:func:`write_testbed` writes the three pre-training sources (labelled class folders, an
image-caption manifest, unlabelled images) and the evaluation splits, each split drawn from
its own random stream, so no image is in two of them.
"""
import io
import json
import math
import os
import os.path as osp
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .photo_datasets import COLOR_PHOTOS, GRAY_PHOTOS, load_photo, random_crops

SHAPES = ('circle', 'square', 'triangle', 'star', 'cross', 'hexagon')
#: Colour names and their RGB values (hues far apart, so that a name is unambiguous).
COLOURS = (('red', (214, 39, 40)), ('green', (44, 160, 44)), ('blue', (31, 90, 220)),
           ('yellow', (240, 210, 30)), ('purple', (148, 70, 200)), ('cyan', (30, 200, 210)))
COLOUR_NAMES = tuple(name for name, _ in COLOURS)
TEXTURES = ('solid', 'stripes', 'dots', 'checks')
BACKGROUNDS = COLOR_PHOTOS + GRAY_PHOTOS
COUNTS = (2, 3, 4)
#: Evaluated attributes, their classes, and which pre-training target names them.
ATTRIBUTES = dict(shape=SHAPES, colour=COLOUR_NAMES, count=tuple(str(c) for c in COUNTS),
                  texture=TEXTURES, background=BACKGROUNDS)
NAMED_BY = dict(shape='label', colour='caption', count='caption', texture='pixels only',
                background='pixels only')
#: Classes of the segmentation maps: 0 = background, ``1 + i`` = ``SHAPES[i]``.
SEG_CLASSES = ('background', ) + SHAPES
#: Words a caption never contains: the shape (class) names and other words for shapes,
#: the textures and the photos.
CAPTION_FORBIDDEN = frozenset(
    SHAPES + ('round', 'circular', 'ring', 'disc', 'box', 'rectangle', 'triangular', 'plus',
              'cross', 'hexagonal', 'polygon', 'stars', 'squares', 'circles', 'triangles',
              'crosses', 'hexagons') + TEXTURES + ('striped', 'dotted', 'checked', 'plain') +
    ('astronaut', 'chelsea', 'cat', 'coffee', 'cup', 'rocket', 'motorcycle', 'retina',
     'hubble', 'galaxy', 'ihc', 'camera', 'cameraman', 'coins', 'moon', 'page', 'text',
     'brick', 'grass', 'gravel', 'cell', 'photo'))
SPLITS = ('labelled', 'captioned', 'unlabelled', 'eval_train', 'eval_test')

_SUPERSAMPLE = 8       # masks are drawn at 8x and box-filtered: anti-aliased edges
_SHADE = 0.45          # brightness of the dark parts of a texture
_LARGE_RADIUS = (0.16, 0.21)  # circumradius as a fraction of the image side
_SMALL_RADIUS = (0.065, 0.10)
_RELATIONS = dict(
    left=('to the left of', 'left of', 'on the left side of'),
    right=('to the right of', 'right of', 'on the right side of'),
    above=('above', 'over', 'on top of'),
    below=('below', 'under', 'beneath'))
_BIG = ('big', 'large', 'huge', 'main')
_SMALL = ('small', 'little', 'tiny')
_THING = ('thing', 'object', 'item', 'piece', 'figure')
_NUMBER = {2: 'two', 3: 'three', 4: 'four'}


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    return load_photo(name)


def _shape_polygon(shape: str, cx: float, cy: float, radius: float,
                   angle: float) -> Optional[List[Tuple[float, float]]]:
    """Vertices of ``shape`` (circumradius ``radius``, rotated by ``angle``); None: circle."""
    if shape == 'circle':
        return None
    if shape == 'star':
        points = [(radius if k % 2 == 0 else 0.45 * radius, math.pi * k / 5) for k in range(10)]
    elif shape == 'cross':  # a plus sign: arms of width 0.36 * 2r
        h = 0.36
        corners = [(h, 1), (h, h), (1, h), (1, -h), (h, -h), (h, -1), (-h, -1), (-h, -h),
                   (-1, -h), (-1, h), (-h, h), (-h, 1)]
        points = [(radius * math.hypot(x, y) / math.sqrt(1 + h * h), math.atan2(y, x))
                  for x, y in corners]
    else:
        sides = dict(square=4, triangle=3, hexagon=6)[shape]
        points = [(radius, 2 * math.pi * k / sides) for k in range(sides)]
    return [(cx + r * math.cos(a + angle), cy + r * math.sin(a + angle)) for r, a in points]


def _coverage(shape: str, cx: float, cy: float, radius: float, angle: float,
              size: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape, ``(size, size)`` float32 in [0, 1]."""
    s = _SUPERSAMPLE
    canvas = Image.new('L', (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    polygon = _shape_polygon(shape, cx * s, cy * s, radius * s, angle)
    if polygon is None:
        r = radius * s
        draw.ellipse((cx * s - r, cy * s - r, cx * s + r, cy * s + r), fill=255)
    else:
        draw.polygon(polygon, fill=255)
    return np.asarray(canvas.resize((size, size), Image.BOX), np.float32) / 255.0


def _texture(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Brightness factor per pixel (1 or :data:`_SHADE`), with a random phase."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x += rng.uniform(0, 6)
    y += rng.uniform(0, 6)
    if texture == 'solid':
        light = np.ones((size, size), bool)
    elif texture == 'stripes':
        light = ((x + y) % 6) < 3
    elif texture == 'dots':
        light = ((x % 6) - 3)**2 + ((y % 6) - 3)**2 > 1.7**2
    elif texture == 'checks':
        light = ((x // 3) + (y // 3)) % 2 == 0
    else:
        raise ValueError(f'unknown texture {texture!r}; use one of {TEXTURES}')
    return np.where(light, 1.0, _SHADE).astype(np.float32)


def _relation(dx: float, dy: float) -> str:
    """Where an object lies relative to another, by the dominant axis (image y grows down)."""
    if abs(dx) >= abs(dy):
        return 'left' if dx < 0 else 'right'
    return 'above' if dy < 0 else 'below'


def _place(radii: Sequence[float], size: int, rng: np.random.Generator) -> List[tuple]:
    """Non-overlapping centres (the circumscribed circles 3 px apart) inside the image."""
    for _ in range(1000):
        centres: List[tuple] = []
        for r in radii:
            for _ in range(200):
                cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
                if all(math.hypot(cx - x, cy - y) >= r + q + 3 for (x, y), q in
                       zip(centres, radii)):
                    centres.append((float(cx), float(cy)))
                    break
            else:
                break
        if len(centres) == len(radii):
            return centres
    raise RuntimeError(f'could not place {len(radii)} objects on a {size}-px image')


def caption_of(colours: Sequence[str], relations: Sequence[str],
               rng: np.random.Generator) -> str:
    """A sentence naming the colour of the large object (``colours[0]``), the colour of each
    small object and its relation to the large one, and so the number of objects; wording,
    template and order of the small objects drawn from ``rng``."""
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    order = rng.permutation(len(relations))
    smalls = [(colours[1 + i], relations[i]) for i in order]
    big, thing = pick(_BIG), pick(_THING)
    parts = [f'a {pick(_SMALL)} {c} one {pick(_RELATIONS[r])} it' for c, r in smalls]
    listing = parts[0] if len(parts) == 1 else ', '.join(parts[:-1]) + ' and ' + parts[-1]
    template = int(rng.integers(4))
    if template == 0:
        return f'a {big} {colours[0]} {thing} with {listing}'
    if template == 1:
        return (f'{_NUMBER[len(colours)]} {thing}s: the {big} one is {colours[0]}, '
                f'with {listing}')
    if template == 2:
        lines = [f'a {pick(_SMALL)} {c} {thing} sits {pick(_RELATIONS[r])} the {big} '
                 f'{colours[0]} one' for c, r in smalls]
        return '; '.join(lines)
    return f'{colours[0]} is the colour of the {big} {thing}, which has {listing}'


def render_scene(rng: np.random.Generator, size: int = 96) -> dict:
    """One image of the testbed.

    Returns:
        ``dict(image=(size, size, 3) uint8, seg=(size, size) uint8, attributes={name: class
        index}, caption=str, objects=[dict(shape, colour, texture, centre, radius,
        relation)])``; ``objects[0]`` is the large object.
    """
    shape, colour, texture = (int(rng.integers(len(v))) for v in (SHAPES, COLOURS, TEXTURES))
    background = int(rng.integers(len(BACKGROUNDS)))
    count = int(rng.choice(COUNTS))
    radii = [rng.uniform(*_LARGE_RADIUS) * size] + [
        rng.uniform(*_SMALL_RADIUS) * size for _ in range(count - 1)]
    centres = _place(radii, size, rng)
    objects = [dict(shape=shape, colour=colour, texture=texture)] + [
        dict(shape=int(rng.integers(len(SHAPES))), colour=int(rng.integers(len(COLOURS))),
             texture=int(rng.integers(len(TEXTURES)))) for _ in range(count - 1)]
    image = random_crops(_photo(BACKGROUNDS[background]), 1, size, rng, min_frac=0.3)[0]
    image = image.astype(np.float32)
    seg = np.zeros((size, size), np.uint8)
    for obj, (cx, cy), radius in zip(objects, centres, radii):
        angle = float(rng.uniform(0, 2 * math.pi))
        alpha = _coverage(SHAPES[obj['shape']], cx, cy, radius, angle, size)
        paint = np.asarray(COLOURS[obj['colour']][1], np.float32) * \
            _texture(TEXTURES[obj['texture']], size, rng)[..., None]
        image = alpha[..., None] * paint + (1 - alpha[..., None]) * image
        seg[alpha >= 0.5] = 1 + obj['shape']
        obj.update(centre=(cx, cy), radius=float(radius), angle=angle)
    for obj in objects[1:]:
        obj['relation'] = _relation(obj['centre'][0] - centres[0][0],
                                    obj['centre'][1] - centres[0][1])
    caption = caption_of([COLOUR_NAMES[o['colour']] for o in objects],
                         [o['relation'] for o in objects[1:]], rng)
    attributes = dict(shape=shape, colour=colour, count=COUNTS.index(count), texture=texture,
                      background=background)
    return dict(image=np.clip(np.rint(image), 0, 255).astype(np.uint8), seg=seg,
                attributes=attributes, caption=caption, objects=objects)


def generate_split(num: int, size: int = 96, seed: int = 0, split: str = 'labelled') -> dict:
    """``num`` images of one split, from the random stream of ``(seed, split)``.

    Returns:
        ``dict(images=(N, size, size, 3) uint8, segs=(N, size, size) uint8,
        attributes={name: (N,) int64}, captions=[str])``.
    """
    if split not in SPLITS:
        raise ValueError(f'unknown split {split!r}; use one of {SPLITS}')
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    scenes = [render_scene(rng, size) for _ in range(num)]
    return dict(images=np.stack([s['image'] for s in scenes]),
                segs=np.stack([s['seg'] for s in scenes]),
                attributes={name: np.asarray([s['attributes'][name] for s in scenes],
                                             np.int64) for name in ATTRIBUTES},
                captions=[s['caption'] for s in scenes])


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format='PNG')
    return buf.getvalue()


def write_testbed(root: str, sizes: Dict[str, int], image_size: int = 96,
                  seed: int = 0) -> Dict[str, str]:
    """Write the sources and evaluation splits of the testbed under ``root`` (reused when
    ``root`` already holds the same settings).

    Args:
        root: Output folder.
        sizes: Images per split, keys of :data:`SPLITS` (missing: none).
        image_size: Side of the images.
        seed: Seed of all splits.

    Returns:
        ``dict(labelled=class folders named by shape, captions=JSONL manifest (path,
        caption), unlabelled=image folder, eval=.npz of the evaluation splits)`` (sources
        with 0 images are left out). The npz holds ``<split>_images``, ``<split>_segs`` and
        ``<split>_<attribute>`` for ``eval_train`` and ``eval_test``.
    """
    from .photo_datasets import write_caption_manifest
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f'unknown splits {sorted(unknown)}; use {SPLITS}')
    settings = dict(sizes={k: int(sizes.get(k, 0)) for k in SPLITS}, image_size=image_size,
                    seed=seed, version=1)
    counts = settings['sizes']
    paths = {}
    if counts['labelled']:
        paths['labelled'] = osp.join(root, 'labelled')
    if counts['captioned']:
        paths['captions'] = osp.join(root, 'captions', 'manifest.jsonl')
    if counts['unlabelled']:
        paths['unlabelled'] = osp.join(root, 'unlabelled')
    if counts['eval_train'] or counts['eval_test']:
        paths['eval'] = osp.join(root, 'eval.npz')
    marker = osp.join(root, 'testbed.json')
    if osp.exists(marker):
        with open(marker) as f:
            if json.load(f) == settings:
                return paths
        raise ValueError(f'{root!r} holds a testbed with other settings; use another folder')
    os.makedirs(root, exist_ok=True)
    split = lambda name: generate_split(counts[name], image_size, seed, name)  # noqa: E731
    if counts['labelled']:
        data = split('labelled')
        for i, (image, shape) in enumerate(zip(data['images'], data['attributes']['shape'])):
            folder = osp.join(paths['labelled'], SHAPES[shape])
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(image).save(osp.join(folder, f'{i:05d}.png'))
    if counts['captioned']:
        data = split('captioned')
        write_caption_manifest(osp.dirname(paths['captions']),
                               [(_png(im), c) for im, c in zip(data['images'],
                                                               data['captions'])])
    if counts['unlabelled']:
        data = split('unlabelled')
        os.makedirs(paths['unlabelled'], exist_ok=True)
        for i, image in enumerate(data['images']):
            Image.fromarray(image).save(osp.join(paths['unlabelled'], f'{i:05d}.png'))
    if 'eval' in paths:
        arrays = {}
        for name in ('eval_train', 'eval_test'):
            data = split(name)
            arrays[f'{name}_images'] = data['images']
            arrays[f'{name}_segs'] = data['segs']
            arrays.update({f'{name}_{k}': v for k, v in data['attributes'].items()})
        np.savez(paths['eval'], **arrays)
    with open(marker, 'w') as f:  # last: a cut-short write is redone
        json.dump(settings, f)
    return paths


def load_eval_split(path: str, split: str) -> dict:
    """An evaluation split of :func:`write_testbed`'s npz: ``dict(images, segs,
    attributes={name: labels})``."""
    with np.load(path) as data:
        return dict(images=data[f'{split}_images'], segs=data[f'{split}_segs'],
                    attributes={k: data[f'{split}_{k}'] for k in ATTRIBUTES})
