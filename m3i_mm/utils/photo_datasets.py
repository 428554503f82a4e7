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
    ``.csv`` or ``.tsv`` (header ``path,caption``). ``bad`` maps row numbers to a kind of
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
        elif ext in ('.csv', '.tsv'):
            writer = csv.writer(f, delimiter=',' if ext == '.csv' else '\t')
            writer.writerow(('path', 'caption'))
            writer.writerows(rows)
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
