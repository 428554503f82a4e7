"""The two views of M3I (m3i_method.md section 3.1) and their packing.

``M3IViews`` crops two views of a decoded image (random resized crop + horizontal flip,
with the crop boxes and flips recorded for the relative position embedding), then runs
each view through its own photometric pipeline of standard mmpretrain transforms.
``PackM3IInputs`` turns the result into ``inputs`` (2, 3, S, S) uint8 and an mmpretrain
``DataSample`` carrying the optional label and caption, the source and the geometry.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform, Compose
from PIL import Image
import mmpretrain.datasets.transforms  # noqa: F401  (registers the default views' transforms)
from mmpretrain.structures import DataSample

from m3i_mm.registry import TRANSFORMS

Box = Tuple[float, float, float, float]

# Scoped names (RandomApply is mmcv's, in the root registry): M3IViews also works where
# mmpretrain is not the default scope.
_COLOUR_PIPELINE = [
    dict(type='RandomApply', prob=0.8, transforms=[
        dict(type='m3i_mm.ColorJitter', brightness=0.4, contrast=0.4, saturation=0.2,
             hue=0.1)]),
    dict(type='m3i_mm.RandomGrayscale', prob=0.2),
]
#: SiameseIM view 1 (input view) and view 2 (target view) photometric augmentations.
DEFAULT_VIEW1_PIPELINE = _COLOUR_PIPELINE + [
    dict(type='mmpretrain.GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf',
         prob=1.0),
]
DEFAULT_VIEW2_PIPELINE = _COLOUR_PIPELINE + [
    dict(type='mmpretrain.GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf',
         prob=0.1),
    dict(type='mmpretrain.Solarize', thr=128, prob=0.2),
]


def pil_gray(img: np.ndarray) -> np.ndarray:
    """Luma of a BGR uint8 image as PIL's ``convert('L')`` computes it (ITU-R 601-2 weights
    0.299 R + 0.587 G + 0.114 B in 16-bit fixed point, rounded): ``(H, W)`` uint8."""
    bgr = img.astype(np.uint32)
    luma = bgr[..., 2] * 19595 + bgr[..., 1] * 38470 + bgr[..., 0] * 7471 + 0x8000
    return (luma >> 16).astype(np.uint8)


def pil_blend(degenerate: Union[np.ndarray, int], img: np.ndarray, factor: float) -> np.ndarray:
    """``PIL.Image.blend(degenerate, img, factor)``: ``degenerate + factor * (img -
    degenerate)`` in float32, clipped to [0, 255] and truncated to uint8, as PIL does."""
    base = np.asarray(degenerate, dtype=np.float32)
    out = base + np.float32(factor) * (img.astype(np.float32) - base)
    return np.clip(out, 0, 255).astype(np.uint8)


@TRANSFORMS.register_module()
class ColorJitter(BaseTransform):
    """Random brightness, contrast, saturation and hue, applied in random order, with the
    arithmetic of torchvision's ``ColorJitter`` on PIL images (SiameseIM's augmentation).

    Factors are drawn uniformly from ``[1 - b, 1 + b]`` (brightness, contrast, saturation)
    and ``[-h, h]`` (hue, in turns of the colour wheel). On BGR uint8 images:

    - brightness, contrast, saturation: a PIL blend (float32, truncated) of the image with
      black, with its rounded mean luma, with its luma;
    - hue: PIL's HSV (hue in 1/255 turns), hue channel + ``int(f * 255)`` (truncated toward
      zero) modulo 256, back to RGB.

    (mmcv 2.1's ``adjust_hue`` fails for negative hue shifts under numpy 2, so mmpretrain's
    ColorJitter cannot be used with ``hue > 0``.)
    """

    def __init__(self, brightness: float = 0., contrast: float = 0., saturation: float = 0.,
                 hue: float = 0.) -> None:
        if min(brightness, contrast, saturation) < 0 or not 0 <= hue <= 0.5:
            raise ValueError('ColorJitter needs brightness/contrast/saturation >= 0 and hue in '
                             f'[0, 0.5], got {(brightness, contrast, saturation, hue)}')
        self.ranges = dict(brightness=brightness, contrast=contrast, saturation=saturation,
                           hue=hue)

    @staticmethod
    def adjust(name: str, img: np.ndarray, factor: float) -> np.ndarray:
        """One adjustment of a BGR uint8 image by ``factor``."""
        if name == 'hue':
            hsv = np.array(Image.fromarray(np.ascontiguousarray(img[..., ::-1])).convert('HSV'))
            hsv[..., 0] += np.uint8(int(factor * 255) % 256)  # wraps modulo 256
            return np.array(Image.fromarray(hsv, 'HSV').convert('RGB'))[..., ::-1].copy()
        if name == 'brightness':
            return pil_blend(0, img, factor)
        gray = pil_gray(img)
        if name == 'contrast':
            return pil_blend(int(gray.mean() + 0.5), img, factor)
        if name == 'saturation':
            return pil_blend(gray[..., None], img, factor)
        raise ValueError(f'unknown colour adjustment {name!r}')

    def transform(self, results: dict) -> dict:
        img = results['img']
        for index in np.random.permutation(4):
            name = ('brightness', 'contrast', 'saturation', 'hue')[index]
            spread = self.ranges[name]
            if spread == 0:
                continue
            # torchvision: hue in [-h, h]; the other factors in [max(0, 1 - s), 1 + s]
            low, high = (-spread, spread) if name == 'hue' else (max(0.0, 1 - spread), 1 + spread)
            img = self.adjust(name, img, np.random.uniform(low, high))
        results['img'] = img
        return results


@TRANSFORMS.register_module()
class RandomGrayscale(BaseTransform):
    """With probability ``prob``, replace a BGR uint8 image by its luma in all three
    channels, rounded as PIL's ``convert('L')`` (torchvision's ``RandomGrayscale`` on PIL
    images, SiameseIM's augmentation; mmcv's truncates instead)."""

    def __init__(self, prob: float = 0.1) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f'RandomGrayscale prob must be in [0, 1], got {prob}')
        self.prob = prob

    def transform(self, results: dict) -> dict:
        if np.random.rand() < self.prob:
            results['img'] = np.repeat(pil_gray(results['img'])[..., None], 3, axis=2)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(prob={self.prob})'


def sample_crop_box(height: int, width: int, scale: Tuple[float, float],
                    ratio: Tuple[float, float], rng: np.random.Generator) -> Box:
    """A random-resized-crop box ``(x1, y1, x2, y2)`` (area fraction in ``scale``, aspect
    ratio in ``ratio``, log-uniform); after 10 failed draws, the largest centred box."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            x1 = int(rng.integers(0, width - w + 1))
            y1 = int(rng.integers(0, height - h + 1))
            return float(x1), float(y1), float(x1 + w), float(y1 + h)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    x1, y1 = (width - w) // 2, (height - h) // 2
    return float(x1), float(y1), float(x1 + w), float(y1 + h)


@TRANSFORMS.register_module()
class M3IViews(BaseTransform):
    """Two randomly resized, flipped and colour-augmented views of ``results['img']``.

    Adds ``img`` (a list of two ``(size, size, 3)`` uint8 views), ``crop_boxes``
    (``(2, 4)`` float32, ``(x1, y1, x2, y2)`` in original pixels) and ``flips`` (``(2,)``
    bool, horizontal flip applied after cropping).

    Args:
        size: Output side of both views.
        scale: Area fraction range of the crops (SiameseIM: 0.08-1).
        ratio: Aspect ratio range of the crops.
        flip_prob: Probability of a horizontal flip per view.
        view1_pipeline: Photometric transforms of the input view (mmpretrain/mmcv types).
        view2_pipeline: Photometric transforms of the target view.
        interpolation: ``'bicubic'`` or ``'bilinear'``.
        backend: ``'pillow'`` (default): PIL's resize, which SiameseIM uses (torchvision on
            PIL images); it antialiases when shrinking (the filter support grows with the
            scale factor). ``'cv2'``: OpenCV's resize, faster but without antialiasing, so
            shrunk crops alias (up to 33 grey levels from PIL on a 400x280 -> 224 crop).
    """

    def __init__(self,
                 size: int = 224,
                 scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3),
                 flip_prob: float = 0.5,
                 view1_pipeline: Optional[List[dict]] = None,
                 view2_pipeline: Optional[List[dict]] = None,
                 interpolation: str = 'bicubic',
                 backend: str = 'pillow') -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f'scale must satisfy 0 < min <= max <= 1, got {scale}')
        if interpolation not in ('bicubic', 'bilinear'):
            raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got "
                             f'{interpolation!r}')
        if backend not in ('pillow', 'cv2'):
            raise ValueError(f"backend must be 'pillow' or 'cv2', got {backend!r}")
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.flip_prob = flip_prob
        self.interpolation = interpolation
        self.backend = backend
        self.pipelines = [
            Compose([TRANSFORMS.build(t) for t in (DEFAULT_VIEW1_PIPELINE
                                                   if view1_pipeline is None else view1_pipeline)]),
            Compose([TRANSFORMS.build(t) for t in (DEFAULT_VIEW2_PIPELINE
                                                   if view2_pipeline is None else view2_pipeline)]),
        ]

    def resize(self, crop: np.ndarray) -> np.ndarray:
        """A crop resized to ``(size, size)`` with the view's interpolation and backend."""
        return mmcv.imresize(np.ascontiguousarray(crop), (self.size, self.size),
                             interpolation=self.interpolation, backend=self.backend)

    def _view(self, img: np.ndarray, rng: np.random.Generator, index: int) -> tuple:
        height, width = img.shape[:2]
        box = sample_crop_box(height, width, self.scale, self.ratio, rng)
        x1, y1, x2, y2 = (int(v) for v in box)
        view = self.resize(img[y1:y2, x1:x2])
        flip = bool(rng.random() < self.flip_prob)
        if flip:
            view = np.ascontiguousarray(view[:, ::-1])
        view = self.pipelines[index](dict(img=view))['img']
        return view, box, flip

    def transform(self, results: dict) -> dict:
        img = results['img']
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'M3IViews needs a decoded (H, W, 3) image, got '
                             f'{getattr(img, "shape", type(img))}')
        # Draws from numpy's global RNG, which mmengine seeds per worker and rank.
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        views, boxes, flips = zip(*(self._view(img, rng, i) for i in range(2)))
        results['img'] = list(views)
        results['crop_boxes'] = np.asarray(boxes, dtype=np.float32)
        results['flips'] = np.asarray(flips, dtype=bool)
        results['img_shape'] = (self.size, self.size)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, scale={self.scale}, '
                f'ratio={self.ratio}, flip_prob={self.flip_prob}, '
                f'interpolation={self.interpolation!r}, backend={self.backend!r})')


@TRANSFORMS.register_module()
class PackM3IInputs(BaseTransform):
    """Pack two views and the sample's annotations for :class:`M3IDataPreprocessor`.

    ``inputs``: ``(2, 3, S, S)`` uint8 (channel order as decoded, BGR for mmcv). The
    ``DataSample`` holds ``gt_label`` when the sample has one (label >= 0) and the metainfo
    ``caption`` (str or None), ``source`` (int), ``crop_boxes``, ``flips`` and
    ``sample_key``.
    """

    def __init__(self, meta_keys: Sequence[str] = ('source', 'source_name', 'sample_key',
                                                   'img_path')) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        views = results['img']
        if not isinstance(views, (list, tuple)) or len(views) != 2:
            raise ValueError('PackM3IInputs needs the two views of M3IViews in results["img"]')
        inputs = torch.from_numpy(np.stack([v.transpose(2, 0, 1) for v in views]).copy())
        sample = DataSample()
        label = results.get('gt_label', -1)
        if label is not None and int(label) >= 0:
            sample.set_gt_label(int(label))
        caption = results.get('caption')
        if caption is not None and not str(caption).strip():
            caption = None
        sample.set_metainfo(dict(
            caption=caption,
            crop_boxes=results['crop_boxes'],
            flips=results['flips'],
            **{k: results[k] for k in self.meta_keys if k in results}))
        return dict(inputs=inputs, data_samples=sample)
