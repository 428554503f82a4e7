"""Tiny datasets made from the real photos shipped in scikit-image and scikit-learn.

Used by `make demo` and the tests: everything is generated offline, nothing downloaded.
"""
import os
import os.path as osp
from typing import Dict, List, Sequence

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
