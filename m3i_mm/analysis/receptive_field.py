"""Effective receptive fields (Luo et al., NeurIPS 2016), as the large-kernel (RepLKNet) and
InternImage papers show them.

The field of a feature map at an image is ``|d (sum_c relu(f[c, h/2, w/2])) / d x|`` summed
over the image's colour channels: how strongly each input pixel moves the centre output of
the map. The sum over channels of the rectified outputs is RepLKNet's target (Luo et al.
back-propagate 1 from every channel of the centre location, i.e. the plain sum, which is
identically zero after a LayerNorm without affine parameters: the stage-final norm of
InternImage-T at init). The magnitude of the gradient is kept (RepLKNet keeps its positive
part). Averaged over images it is the effective receptive field; its size is given as the
radius, around the centre output's pixel, of the disc holding a share of the field's mass
(:func:`mass_radius`).
"""
from typing import Callable, Dict, Iterable, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

__all__ = ['input_gradient_of_centre', 'effective_receptive_field', 'mass_radius',
           'stage_features']


def stage_features(backbone: nn.Module, images: torch.Tensor, stage: int) -> torch.Tensor:
    """The NCHW output of ``stage`` of an InternImage (or of the lead backbone of a
    CB-InternImage); the stage must be among the backbone's ``out_indices``."""
    out_indices = tuple(backbone.out_indices)
    if stage not in out_indices:
        raise ValueError(f'stage {stage} is not among the backbone outputs {out_indices}')
    outputs = backbone(images)
    if hasattr(backbone, 'cb_modules'):
        outputs = outputs[-1]
    return outputs[out_indices.index(stage)]


def input_gradient_of_centre(features: Callable[[torch.Tensor], torch.Tensor],
                             image: torch.Tensor) -> Tuple[np.ndarray, Tuple[int, int]]:
    """``|d sum_c relu(f[c, h // 2, w // 2]) / d image|`` summed over colour channels.

    Args:
        features: Maps a ``(1, 3, H, W)`` image to a ``(1, C, h, w)`` feature map.
        image: ``(1, 3, H, W)``.

    Returns:
        The ``(H, W)`` float64 map and the feature map's size ``(h, w)``.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f'expected one (1, 3, H, W) image, got {tuple(image.shape)}')
    x = image.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        feats = features(x)
        h, w = feats.shape[-2:]
        (grad, ) = torch.autograd.grad(feats[0, :, h // 2, w // 2].relu().sum(), x)
    return grad[0].abs().sum(0).double().cpu().numpy(), (int(h), int(w))


def effective_receptive_field(features: Callable[[torch.Tensor], torch.Tensor],
                              images: Iterable[torch.Tensor],
                              progress: Callable[[Iterable], Iterable] = iter
                              ) -> Tuple[np.ndarray, Tuple[int, int]]:
    """The mean of :func:`input_gradient_of_centre` over ``images`` (all of one size).

    Returns:
        The ``(H, W)`` field and the feature map's size ``(h, w)``.
    """
    total, size, count = None, None, 0
    for image in progress(images):
        grad, size = input_gradient_of_centre(features, image)
        if total is not None and grad.shape != total.shape:
            raise ValueError(f'images of different sizes: {grad.shape} and {total.shape}')
        total = grad if total is None else total + grad
        count += 1
    if count == 0:
        raise ValueError('effective_receptive_field needs at least one image')
    return total / count, size


def mass_radius(field: np.ndarray, centre: Tuple[float, float],
                shares: Sequence[float] = (0.5, 0.9, 0.99)) -> Dict[float, float]:
    """For each share, the radius (pixels) of the smallest disc around ``centre`` (``(y, x)``
    in pixel indices) holding at least that share of the field's mass.

    Raises:
        ValueError: for a field without mass or shares outside (0, 1].
    """
    total = float(field.sum())
    if not total > 0:
        raise ValueError('the field has no mass (all gradients are zero)')
    if any(not 0 < s <= 1 for s in shares):
        raise ValueError(f'shares must be in (0, 1], got {list(shares)}')
    ys, xs = np.indices(field.shape)
    distance = np.hypot(ys - centre[0], xs - centre[1]).ravel()
    order = np.argsort(distance, kind='stable')
    cumulative = np.cumsum(field.ravel()[order]) / total
    radii = {}
    for share in shares:
        # the last pixel needed; a tolerance so that share 1.0 is reached despite rounding
        index = int(np.searchsorted(cumulative, share - 1e-12))
        radii[share] = float(distance[order][min(index, distance.size - 1)])
    return radii
