"""Shared by the analysis tools that look inside a model: the backbone of any config of the
tree (classifier, detector, segmentor, M3I pre-training) with a checkpoint's weights, and
images prepared as the config's data preprocessor prepares them.
"""
import copy
import inspect
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict

from m3i_mm.utils.errors import UsageError
from .launch import check_checkpoint_arg

__all__ = ['Normalisation', 'backbone_config', 'build_backbone', 'is_m3i_config',
           'normalisation_of', 'read_image', 'resize_short_side', 'image_tensor']

#: Key prefix of the backbone in every checkpoint layout the tools read (m3i_mm,
#: mmpretrain/mmdet/mmseg, official files after conversion, extracted M3I backbones).
DEFAULT_PREFIX = 'backbone.'
#: The EMA target encoder's backbone in an M3I pre-training checkpoint.
M3I_EMA_PREFIX = 'target_encoder.module.0.'


def is_m3i_config(cfg: Config) -> bool:
    """Whether the config's model is the M3I pre-trainer."""
    model_type = (cfg.get('model') or {}).get('type', '')
    return isinstance(model_type, str) and model_type.split('.')[-1] == 'M3I'


def backbone_config(cfg: Config, path: str = 'the config') -> ConfigDict:
    """``cfg.model.backbone``.

    Raises:
        UsageError: when the config has no model with a backbone.
    """
    model = cfg.get('model')
    if not isinstance(model, dict) or not isinstance(model.get('backbone'), dict):
        kind = model.get('type', '?') if isinstance(model, dict) else 'no model'
        raise UsageError(f'{path} has no model.backbone (model: {kind}); give a classifier, '
                         'detector, segmentor or M3I config with an InternImage backbone')
    return copy.deepcopy(model['backbone'])


def build_backbone(cfg: Config, checkpoint: Optional[str] = None,
                   prefix: str = DEFAULT_PREFIX, config_path: str = 'the config',
                   use_config_weights: bool = True,
                   check: Optional[Callable[[nn.Module], None]] = None) -> Tuple[nn.Module, str]:
    """The config's backbone, in eval mode, with all stages as outputs, and its weights.

    Args:
        cfg: The config.
        checkpoint: Weights to load (path, URL or ``m3i://NAME``; any layout the backbone's
            ``init_cfg`` loader reads: m3i_mm, mmpretrain/mmdet/mmseg, official InternImage
            files, M3I pre-training checkpoints). None: the config's own ``init_cfg``
            checkpoint if ``use_config_weights`` and it has one, else random init.
        prefix: Key prefix of the backbone in the checkpoint (``'backbone.'``; an M3I
            pre-training checkpoint's EMA encoder: ``'target_encoder.module.0.'``).
        config_path: How to name the config in errors.
        use_config_weights: Without ``checkpoint``, load the config's ``init_cfg`` weights.
        check: Called with the built backbone before any weights are read (to refuse a
            backbone early, e.g. one without DCNv3 stages).

    Returns:
        The backbone and a description of its weights (for titles and logs).

    Raises:
        UsageError: no backbone, or a checkpoint that does not fit it.
    """
    from mmengine.registry import MODELS, DefaultScope
    backbone_cfg = backbone_config(cfg, config_path)
    config_init = backbone_cfg.pop('init_cfg', None)
    backbone_cfg['out_indices'] = (0, 1, 2, 3)
    if 'with_cp' in backbone_cfg:
        backbone_cfg['with_cp'] = False
    if checkpoint is not None:
        check_checkpoint_arg(checkpoint, 'checkpoint')
        init = dict(type='Pretrained', checkpoint=checkpoint, prefix=prefix)
        weights = f'{checkpoint} ({prefix}*)' if prefix != DEFAULT_PREFIX else checkpoint
    elif (use_config_weights and isinstance(config_init, dict)
          and config_init.get('type') == 'Pretrained'):
        init = dict(config_init)
        check_checkpoint_arg(init['checkpoint'], "the config's backbone init_cfg checkpoint")
        weights = f'{init["checkpoint"]} (the config\'s init_cfg)'
    else:
        init, weights = None, 'random init'
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope') or 'm3i_mm'):
        try:
            backbone = MODELS.build(backbone_cfg)
        except KeyError as exc:
            raise UsageError(f'{config_path}: cannot build the backbone '
                             f'{backbone_cfg.get("type")!r}: {exc.args[0] if exc.args else exc}'
                             ) from exc
    if check is not None:
        check(backbone)
    if init is not None:
        backbone.init_cfg = init
    try:
        backbone.init_weights()
    except ValueError as exc:  # no keys under the prefix, shapes of another arch
        raise UsageError(f'cannot load {weights} into the backbone of {config_path}: {exc}'
                         ) from exc
    backbone.eval()
    for param in backbone.parameters():
        param.requires_grad_(False)
    return backbone, weights


@dataclass(frozen=True)
class Normalisation:
    """How the config's data preprocessor turns decoded images into model inputs.

    Attributes:
        mean, std: Per channel, in the model's channel order (None: no normalisation).
        rgb: Whether the model takes RGB (the preprocessor converts mmcv's BGR).
    """
    mean: Optional[Tuple[float, float, float]]
    std: Optional[Tuple[float, float, float]]
    rgb: bool


def normalisation_of(cfg: Config) -> Normalisation:
    """The normalisation of the config's data preprocessor (the top-level
    ``data_preprocessor`` of mmpretrain configs, overridden by ``model.data_preprocessor``;
    for M3I configs the defaults of :class:`~m3i_mm.models.M3IDataPreprocessor`)."""
    merged = dict(cfg.get('data_preprocessor') or {})
    merged.update((cfg.get('model') or {}).get('data_preprocessor') or {})
    if is_m3i_config(cfg):
        from m3i_mm.models.data_preprocessors import M3IDataPreprocessor
        params = inspect.signature(M3IDataPreprocessor.__init__).parameters
        for key in ('mean', 'std', 'to_rgb'):
            merged.setdefault(key, params[key].default)
    rgb = bool(merged.get('to_rgb', merged.get('bgr_to_rgb', False)))
    mean, std = merged.get('mean'), merged.get('std')
    return Normalisation(tuple(float(v) for v in mean) if mean is not None else None,
                         tuple(float(v) for v in std) if std is not None else None, rgb)


def read_image(path: str) -> np.ndarray:
    """An image file as an ``(H, W, 3)`` RGB uint8 array.

    Raises:
        FileNotFoundError / UsageError: naming the file.
    """
    import mmcv
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path!r}')
    try:
        image = mmcv.imread(path, flag='color', channel_order='rgb')
    except Exception as exc:  # cv2/PIL raise many types for undecodable files
        raise UsageError(f'cannot decode the image {path!r}: {exc}') from exc
    if image is None:
        raise UsageError(f'cannot decode the image {path!r} (not an image file?)')
    return image


def resize_short_side(image: np.ndarray, short_side: Optional[int]) -> np.ndarray:
    """The image with its shorter side resized to ``short_side`` (bicubic, PIL); None: as is."""
    if short_side is None:
        return image
    from PIL import Image
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def image_tensor(rgb: np.ndarray, norm: Normalisation,
                 device: str = 'cpu') -> torch.Tensor:
    """``(1, 3, H, W)`` float model input from an RGB uint8 image."""
    pixels = rgb if norm.rgb else rgb[..., ::-1]
    x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float()
    if norm.mean is not None:
        x = x - torch.tensor(norm.mean).view(3, 1, 1)
    if norm.std is not None:
        x = x / torch.tensor(norm.std).view(3, 1, 1)
    return x.unsqueeze(0).to(device)

