"""Tiny datasets made from the real photos shipped in scikit-image and scikit-learn.

Used by `make demo` and the tests: everything is generated offline, nothing downloaded.
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

# Colour photographs bundled in skimage/data (no network fetch needed).
COLOR_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'motorcycle_left', 'retina',
                'hubble_deep_field', 'ihc')
GRAY_PHOTOS = ('camera', 'coins', 'moon', 'page', 'brick', 'grass', 'gravel', 'cell')
_EXT = {'rocket': 'jpg', 'hubble_deep_field': 'jpg', 'retina': 'jpg'}


def photo_path(name: str) -> str:
    import skimage.data
    return osp.join(osp.dirname(skimage.data.__file__), f'{name}.{_EXT.get(name, "png")}')


def load_photo(name: str) -> np.ndarray:
    """An RGB uint8 array (grey photos are replicated to three channels)."""
    if name in ('china', 'flower'):
        from sklearn.datasets import load_sample_image
        return load_sample_image(f'{name}.jpg')
    return np.asarray(Image.open(photo_path(name)).convert('RGB'))


def random_crops(image: np.ndarray, num: int, size: int, rng: np.random.Generator,
                 min_frac: float = 0.3) -> List[np.ndarray]:
    """``num`` random square crops of ``image`` resized to ``size`` x ``size``."""
    h, w = image.shape[:2]
    crops = []
    for _ in range(num):
        side = int(min(h, w) * rng.uniform(min_frac, 1.0))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = Image.fromarray(image[y:y + side, x:x + side]).resize((size, size),
                                                                    Image.BILINEAR)
        crops.append(np.asarray(crop))
    return crops


def write_classification_folder(root: str, classes: Sequence[str] = COLOR_PHOTOS[:4],
                                per_class: int = 4, size: int = 32,
                                seed: int = 0) -> Dict[str, List[str]]:
    """An ImageNet-style folder ``root/<class>/<i>.jpg``: class = which photo it came from."""
    rng = np.random.default_rng(seed)
    files: Dict[str, List[str]] = {}
    for cls in classes:
        os.makedirs(osp.join(root, cls), exist_ok=True)
        files[cls] = []
        for i, crop in enumerate(random_crops(load_photo(cls), per_class, size, rng)):
            path = osp.join(root, cls, f'{i:03d}.jpg')
            Image.fromarray(crop).save(path, quality=95)
            files[cls].append(path)
    return files


# --------------------------------------------------------------------------------------
# Image-caption corpora (manifests and WebDataset-style tar shards), with corrupt samples.

#: Ways to break a sample: ``truncated`` (JPEG cut inside its scan data), ``random_bytes``
#: (noise with an image extension), ``missing`` (listed but absent; in shards: a caption
#: without image), ``empty_caption`` and, in shards only, ``no_caption`` (image without
#: caption member).
BAD_SAMPLE_KINDS = ('truncated', 'random_bytes', 'missing', 'empty_caption', 'no_caption')


def photo_caption_pairs(num: int, size: int = 32, seed: int = 0,
                        photos: Sequence[str] = COLOR_PHOTOS) -> List[tuple]:
    """``num`` (JPEG bytes, caption) pairs: random crops of the bundled photos, in turn."""
    import io
    rng = np.random.default_rng(seed)
    images = {name: load_photo(name) for name in photos}
    pairs = []
    for i in range(num):
        name = photos[i % len(photos)]
        crop = random_crops(images[name], 1, size, rng)[0]
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format='JPEG', quality=90)
        pairs.append((buf.getvalue(), f'a photo of {name.replace("_", " ")}, crop {i}'))
    return pairs


def corrupt_image_bytes(data: bytes, kind: str, seed: int = 0) -> bytes:
    """``data`` broken the way ``kind`` says (``truncated`` or ``random_bytes``).

    A truncated JPEG is cut in the middle of its entropy-coded data (after the start of
    scan), where some decoders still return a partly grey image instead of failing.
    """
    if kind == 'truncated':
        start_of_scan = data.find(b'\xff\xda')
        return data[:(max(start_of_scan, 0) + len(data)) // 2]
    if kind == 'random_bytes':
        noise = np.random.default_rng(seed).integers(0, 256, len(data), dtype=np.uint8)
        noise[:2] = (0x00, 0x01)  # never a JPEG/PNG signature
        return noise.tobytes()
    raise ValueError(f'unknown corruption {kind!r}; use truncated or random_bytes')


def write_caption_manifest(root: str, pairs: Sequence[tuple], manifest: str = 'manifest.jsonl',
                           bad: Optional[Dict[int, str]] = None,
                           image_dir: str = 'images') -> str:
    """Images as ``root/image_dir/<i>.jpg`` plus a manifest of (path, caption) rows.

    The manifest format follows its extension: ``.jsonl`` (``{"path", "caption"}``),
    ``.csv`` (header ``path,caption``) or ``.tsv`` (unquoted; a tab or line break in a
    caption is refused). ``bad`` maps row numbers to a kind of
    :data:`BAD_SAMPLE_KINDS` (not ``no_caption``). Returns the manifest path.
    """
    import csv
    import json
    bad = bad or {}
    os.makedirs(osp.join(root, image_dir), exist_ok=True)
    rows = []
    for i, (data, caption) in enumerate(pairs):
        kind = bad.get(i)
        rel = f'{image_dir}/{i:05d}.jpg'
        if kind in ('truncated', 'random_bytes'):
            data = corrupt_image_bytes(data, kind, seed=i)
        elif kind == 'empty_caption':
            caption = ''
        elif kind not in (None, 'missing'):
            raise ValueError(f'manifest rows cannot be broken as {kind!r}')
        if kind != 'missing':
            with open(osp.join(root, rel), 'wb') as f:
                f.write(data)
        rows.append((rel, caption))
    path = osp.join(root, manifest)
    ext = osp.splitext(manifest)[1]
    with open(path, 'w', encoding='utf-8', newline='') as f:
        if ext == '.jsonl':
            f.writelines(json.dumps(dict(path=p, caption=c)) + '\n' for p, c in rows)
        elif ext == '.csv':
            writer = csv.writer(f)
            writer.writerow(('path', 'caption'))
            writer.writerows(rows)
        elif ext == '.tsv':
            # TSV has no quoting: one tab per row separates path and caption, as the reader
            # splits it
            for p, c in rows:
                if any(ch in p + c for ch in '\t\r\n'):
                    raise ValueError(f'a TSV manifest cannot hold a tab or line break: {p!r}, '
                                     f'{c!r}')
            f.write('path\tcaption\n')
            f.writelines(f'{p}\t{c}\n' for p, c in rows)
        else:
            raise ValueError(f'manifest must end in .jsonl, .csv or .tsv, got {manifest}')
    return path


def write_caption_shards(root: str, pairs: Sequence[tuple], num_shards: int,
                         bad: Optional[Dict[int, str]] = None,
                         pattern: str = 'data-{:06d}.tar',
                         caption_format: str = 'txt') -> List[str]:
    """WebDataset-style tar shards: ``<i>.jpg`` + ``<i>.txt`` (or ``.json``) per pair.

    Pairs are dealt to ``num_shards`` shards in contiguous runs. ``bad`` maps pair numbers
    to a kind of :data:`BAD_SAMPLE_KINDS`; ``missing`` drops the image (the key is then
    not a sample). Returns the shard paths.
    """
    import io
    import json
    import tarfile
    bad = bad or {}
    unknown = set(bad.values()) - set(BAD_SAMPLE_KINDS)
    if unknown:
        raise ValueError(f'unknown corruption(s) {sorted(unknown)}; use {BAD_SAMPLE_KINDS}')
    os.makedirs(root, exist_ok=True)
    per_shard = -(-len(pairs) // num_shards)
    paths = []
    for s in range(num_shards):
        path = osp.join(root, pattern.format(s))
        with tarfile.open(path, 'w', format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s * per_shard, min(len(pairs), (s + 1) * per_shard)):
                data, caption = pairs[i]
                kind = bad.get(i)
                if kind in ('truncated', 'random_bytes'):
                    data = corrupt_image_bytes(data, kind, seed=i)
                elif kind == 'empty_caption':
                    caption = ''
                members = [] if kind == 'missing' else [(f'{i:05d}.jpg', data)]
                if kind != 'no_caption':
                    text = caption if caption_format == 'txt' else json.dumps(
                        dict(caption=caption))
                    members.append((f'{i:05d}.{caption_format}', text.encode('utf-8')))
                for name, payload in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------
# Dense-prediction sets in the COCO, LVIS v1 and ADE20k layouts, derived from the photos.
#
# Each photo is split into regions by Felzenszwalb's graph segmentation. A region's class is
# its tone: where its mean luminance falls among all regions of the set (darkest 10%, up to
# the median, up to 90%, brightest 10%), so the classes follow the image content and, as in
# real data, some are rarer than others. The larger regions become instances (holes filled,
# largest connected part, outer contour as a polygon); an instance's mask, box and area are
# those of its polygon, as in COCO. Every pixel of a label map carries its region's class
# (ADE20k convention: 0 = ignore, classes from 1). The validation split holds the same
# photos as the training split: these sets exercise data loading, training and the
# metrics; they are not benchmarks.

#: Photos of the dense sets.
DENSE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'motorcycle_left', 'china')
#: Classes of the dense sets, darkest first, and the luminance quantiles of the regions that
#: separate them.
TONE_CLASSES = ('dark', 'mid-dark', 'mid-light', 'light')
TONE_QUANTILES = (0.1, 0.5, 0.9)
#: Split names of the files, COCO 2017 style (``train2017/``, ``instances_val2017.json``).
DENSE_SPLITS = ('train', 'val')


class PhotoRegions:
    """One photo of a dense set: the image, its regions and their classes.

    Attributes:
        name: The photo.
        image: RGB uint8 array, ``(H, W, 3)``.
        segments: Region id per pixel, ``(H, W)``.
        region_class: Class index (into :data:`TONE_CLASSES`) per region id.
        instances: ``(class index, polygon)`` per instance; a polygon is a flat
            ``[x0, y0, x1, y1, ...]`` list in pixel coordinates.
    """

    def __init__(self, name: str, image: np.ndarray, segments: np.ndarray) -> None:
        self.name = name
        self.image = image
        self.segments = segments
        self.region_class: Dict[int, int] = {}
        self.instances: List[tuple] = []

    @property
    def label_map(self) -> np.ndarray:
        """ADE20k-style label map: class index + 1 per pixel (uint8)."""
        lut = np.zeros(self.segments.max() + 1, np.uint8)
        for region, cls in self.region_class.items():
            lut[region] = cls + 1
        return lut[self.segments]


def _resize_long_side(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    return np.asarray(Image.fromarray(image).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))


def _outer_polygon(mask: np.ndarray) -> Optional[List[float]]:
    """Outer contour of the largest connected part of ``mask`` (holes filled)."""
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours
    parts, num = ndimage.label(ndimage.binary_fill_holes(mask))
    if num == 0:
        return None
    sizes = ndimage.sum(np.ones_like(parts), parts, index=range(1, num + 1))
    largest = parts == 1 + int(np.argmax(sizes))
    contours = find_contours(np.pad(largest, 1).astype(np.float32), 0.5)
    contour = approximate_polygon(max(contours, key=len), tolerance=0.5) - 1
    if len(contour) < 4:  # closed contours repeat their first point
        return None
    h, w = mask.shape
    # (row, col) of pixel centres -> COCO (x, y), whose pixel centres are at +0.5
    xs = np.clip(contour[:, 1] + 0.5, 0, w)
    ys = np.clip(contour[:, 0] + 0.5, 0, h)
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def photo_regions(photos: Sequence[str] = DENSE_PHOTOS, size: int = 128,
                  max_instances: int = 5, min_frac: float = 0.02,
                  max_frac: float = 0.5) -> List[PhotoRegions]:
    """Regions, classes and instances of ``photos`` resized to ``size`` on the long side.

    Args:
        photos: Photo names (see :func:`load_photo`).
        size: Long side of the images in pixels.
        max_instances: Instances per image at most (the largest qualifying regions).
        min_frac: Smallest instance, as a fraction of the image area.
        max_frac: Largest instance (bigger regions are background), same unit.
    """
    from skimage.segmentation import felzenszwalb
    luma = np.array([0.299, 0.587, 0.114])
    photos_regions, region_luma = [], []
    for name in photos:
        image = _resize_long_side(load_photo(name), size)
        segments = felzenszwalb(image, scale=300, sigma=0.8, min_size=size * size // 100)
        item = PhotoRegions(name, image, segments)
        for region in np.unique(segments):
            region_luma.append((item, int(region),
                                float(image[segments == region].mean(0) @ luma)))
        photos_regions.append(item)
    edges = np.quantile([lum for _, _, lum in region_luma], TONE_QUANTILES)
    for item, region, lum in region_luma:
        item.region_class[region] = int(np.searchsorted(edges, lum))
    for item in photos_regions:
        area = item.segments.size
        ids, counts = np.unique(item.segments, return_counts=True)
        candidates = sorted(((c, int(r)) for r, c in zip(ids, counts)
                             if min_frac * area <= c <= max_frac * area), reverse=True)
        for _, region in candidates[:max_instances]:
            polygon = _outer_polygon(item.segments == region)
            if polygon is not None:
                item.instances.append((item.region_class[region], polygon))
    return photos_regions


def _polygon_geometry(polygon: List[float], height: int, width: int) -> tuple:
    """(area, [x, y, w, h]) of the rasterised polygon, as pycocotools computes them."""
    from pycocotools import mask as mask_utils
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], height, width))
    return float(mask_utils.area(rle)), [round(float(v), 2) for v in mask_utils.toBbox(rle)]


def _image_file(split: str, index: int) -> str:
    return f'{split}2017/{index + 1:012d}.jpg'


def _write_split_images(root: str, split: str, items: Sequence[PhotoRegions]) -> None:
    os.makedirs(osp.join(root, f'{split}2017'), exist_ok=True)
    for i, item in enumerate(items):
        Image.fromarray(item.image).save(osp.join(root, _image_file(split, i)), quality=95)


def _write_instance_split(root: str, split: str, items: Sequence[PhotoRegions],
                          ann_name: str, **content) -> str:
    """The split's images and its annotation file ``root/annotations/<ann_name>``."""
    import json
    _write_split_images(root, split, items)
    path = osp.join(root, 'annotations', ann_name)
    with open(path, 'w') as f:
        json.dump(content, f)
    return path


def _instance_annotations(items: Sequence[PhotoRegions]) -> List[dict]:
    annotations = []
    for i, item in enumerate(items):
        h, w = item.image.shape[:2]
        for cls, polygon in item.instances:
            area, bbox = _polygon_geometry(polygon, h, w)
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1,
                                    category_id=cls + 1, segmentation=[polygon], area=area,
                                    bbox=bbox))
    return annotations


def write_coco_instances(root: str, photos: Sequence[str] = DENSE_PHOTOS, size: int = 128,
                         regions: Optional[Sequence[PhotoRegions]] = None) -> Dict[str, str]:
    """A COCO-2017-layout instance set: ``root/{train,val}2017/*.jpg`` and
    ``root/annotations/instances_{train,val}2017.json`` (polygon masks, classes
    :data:`TONE_CLASSES`). ``regions``: :func:`photo_regions` already computed (then
    ``photos`` and ``size`` are not used). Returns the annotation file per split."""
    items = regions if regions is not None else photo_regions(photos, size)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [dict(id=i + 1, name=name, supercategory='tone')
                  for i, name in enumerate(TONE_CLASSES)]
    annotations = [dict(ann, iscrowd=0) for ann in _instance_annotations(items)]
    files = {}
    for split in DENSE_SPLITS:
        images = [dict(id=i + 1, file_name=osp.basename(_image_file(split, i)),
                       height=item.image.shape[0], width=item.image.shape[1])
                  for i, item in enumerate(items)]
        files[split] = _write_instance_split(
            root, split, items, f'instances_{split}2017.json', images=images,
            annotations=annotations, categories=categories)
    return files


def write_lvis_instances(root: str, photos: Sequence[str] = DENSE_PHOTOS, size: int = 128,
                         regions: Optional[Sequence[PhotoRegions]] = None) -> Dict[str, str]:
    """An LVIS-v1-layout instance set: ``root/{train,val}2017/*.jpg`` and
    ``root/annotations/lvis_v1_{train,val}.json``.

    LVIS specifics: images are named by ``coco_url`` (mmdet keeps the part after
    ``http://images.cocodataset.org/``), list the classes verified absent
    (``neg_category_ids``: all classes without an instance in the image) and
    ``not_exhaustive_category_ids`` (none); categories carry ``image_count``,
    ``instance_count`` and a ``frequency`` group. The groups are ranked within this tiny
    set (fewest images: ``r``, most: ``f``, the rest: ``c``) because LVIS's absolute
    thresholds (10 and 100 images) would make every class rare. ``regions`` as for
    :func:`write_coco_instances`. Returns the annotation file per split.
    """
    items = regions if regions is not None else photo_regions(photos, size)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    annotations = _instance_annotations(items)
    image_ids = {c: set() for c in range(1, len(TONE_CLASSES) + 1)}
    instance_count = dict.fromkeys(image_ids, 0)
    for ann in annotations:
        image_ids[ann['category_id']].add(ann['image_id'])
        instance_count[ann['category_id']] += 1
    by_count = sorted(image_ids, key=lambda c: (len(image_ids[c]), c))
    frequency = {c: 'c' for c in by_count}
    frequency[by_count[0]], frequency[by_count[-1]] = 'r', 'f'
    categories = [{'id': c, 'name': TONE_CLASSES[c - 1], 'synset': f'tone_{c}.n.01',
                   'synonyms': [TONE_CLASSES[c - 1]],
                   'def': f'an image region of {TONE_CLASSES[c - 1]} tone',
                   'frequency': frequency[c], 'image_count': len(image_ids[c]),
                   'instance_count': instance_count[c]} for c in image_ids]
    files = {}
    for split in DENSE_SPLITS:
        images = []
        for i, item in enumerate(items):
            present = {c for c, ids in image_ids.items() if i + 1 in ids}
            images.append(dict(
                id=i + 1, height=item.image.shape[0], width=item.image.shape[1],
                coco_url=f'http://images.cocodataset.org/{_image_file(split, i)}',
                neg_category_ids=sorted(set(image_ids) - present),
                not_exhaustive_category_ids=[]))
        files[split] = _write_instance_split(
            root, split, items, f'lvis_v1_{split}.json', images=images,
            annotations=annotations, categories=categories)
    return files


def write_ade20k_folder(root: str, photos: Sequence[str] = DENSE_PHOTOS, size: int = 128,
                        regions: Optional[Sequence[PhotoRegions]] = None) -> Dict[str, str]:
    """An ADEChallengeData2016-layout set: ``root/images/{training,validation}/*.jpg`` and
    ``root/annotations/{training,validation}/*.png`` label maps (0 = ignore, class ``i``
    of :data:`TONE_CLASSES` stored as ``i + 1``; mmseg's ``reduce_zero_label=True`` maps
    them back to ``i``). ``regions`` as for :func:`write_coco_instances`. Returns the
    annotation folder per split."""
    items = regions if regions is not None else photo_regions(photos, size)
    folders = {}
    for split in ('training', 'validation'):
        prefix = 'train' if split == 'training' else 'val'
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for i, item in enumerate(items):
            stem = f'ADE_{prefix}_{i + 1:08d}'
            Image.fromarray(item.image).save(osp.join(root, 'images', split, f'{stem}.jpg'),
                                             quality=95)
            Image.fromarray(item.label_map).save(
                osp.join(root, 'annotations', split, f'{stem}.png'))
        folders[split] = osp.join(root, 'annotations', split)
    return folders


def write_demo_datasets(root: str = 'data/demo') -> Dict[str, str]:
    """Every tiny set the ``configs/demo`` configs read, under ``root``: ``cls``
    (ImageNet-style folders, 64 px), ``coco``, ``lvis`` and ``ade``. Returns their roots."""
    roots = {name: osp.join(root, name) for name in ('cls', 'coco', 'lvis', 'ade')}
    write_classification_folder(roots['cls'], size=64)
    regions = photo_regions()  # one segmentation of the photos serves all three sets
    write_coco_instances(roots['coco'], regions=regions)
    write_lvis_instances(roots['lvis'], regions=regions)
    write_ade20k_folder(roots['ade'], regions=regions)
    return roots


# --------------------------------------------------------------------------------------
# The three kinds of M3I pre-training sources, for the demo and the tests.

def write_m3i_demo_sources(root: str = 'data/demo/m3i', size: int = 96,
                           seed: int = 0) -> Dict[str, str]:
    """Image-caption pairs (a JSONL manifest), labelled class folders and unlabelled
    images under ``root``; the sources of ``configs/m3i/m3i_internimage-tiny_*``.

    Returns:
        ``{'captions': manifest path, 'labelled': folder, 'unlabelled': folder}``.
    """
    captions = write_caption_manifest(osp.join(root, 'captions'),
                                      photo_caption_pairs(48, size=size, seed=seed))
    labelled = osp.join(root, 'labelled')
    write_classification_folder(labelled, classes=COLOR_PHOTOS[:4], per_class=8, size=size,
                                seed=seed + 1)
    unlabelled = osp.join(root, 'unlabelled')
    os.makedirs(unlabelled, exist_ok=True)
    rng = np.random.default_rng(seed + 2)
    for name in GRAY_PHOTOS[:4]:
        for i, crop in enumerate(random_crops(load_photo(name), 4, size, rng)):
            Image.fromarray(crop).save(osp.join(unlabelled, f'{name}_{i}.jpg'), quality=95)
    return dict(captions=captions, labelled=labelled, unlabelled=unlabelled)


def write_digits_sources(root: str, size: int = 64, test_fraction: float = 0.25,
                         seed: int = 0) -> Dict[str, object]:
    """scikit-learn's 8x8 digits, upsampled to ``size`` px, as M3I sources.

    The training split is divided into three equal parts: labelled class folders
    (``labelled/<digit>/``), an image-caption manifest ("a handwritten seven") and unlabelled
    images. Returns the folders plus the held-out split as arrays for probing.

    Returns:
        ``dict(labelled=..., captions=..., unlabelled=..., test_images=(N, size, size, 3)
        uint8, test_labels=(N,), train_images=..., train_labels=...)``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    names = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
    digits = load_digits()
    images = np.stack([
        np.asarray(Image.fromarray((d * (255 / 16)).astype(np.uint8)).resize(
            (size, size), Image.BILINEAR)) for d in digits.images])
    images = np.repeat(images[..., None], 3, axis=-1)
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=test_fraction, random_state=seed,
        stratify=digits.target)
    parts = np.array_split(np.random.default_rng(seed).permutation(len(train_x)), 3)
    labelled = osp.join(root, 'labelled')
    for i in parts[0]:
        folder = osp.join(labelled, str(train_y[i]))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(train_x[i]).save(osp.join(folder, f'{i:04d}.png'))
    pairs = []
    for i in parts[1]:
        import io
        buf = io.BytesIO()
        Image.fromarray(train_x[i]).save(buf, format='PNG')
        pairs.append((buf.getvalue(), f'a handwritten {names[train_y[i]]}'))
    captions = write_caption_manifest(osp.join(root, 'captions'), pairs)
    unlabelled = osp.join(root, 'unlabelled')
    os.makedirs(unlabelled, exist_ok=True)
    for i in parts[2]:
        Image.fromarray(train_x[i]).save(osp.join(unlabelled, f'{i:04d}.png'))
    return dict(labelled=labelled, captions=captions, unlabelled=unlabelled,
                test_images=test_x, test_labels=test_y, train_images=train_x,
                train_labels=train_y)
