"""ImageNet-22k -> ImageNet-1k classifier mapping, as the official InternImage fine-tuning uses.

The official L/XL/H/G ImageNet-1k fine-tuning (``classification/utils.py``,
``load_pretrained``) loads the *whole* ImageNet-22k classifier, backbone, neck and head, and
keeps the 1000 rows of the 21841-way head that belong to the ImageNet-1k classes
(``meta_data/map22kto1k.txt``). The list of rows is data: ``data/imagenet22k_to_1k.txt``
next to this file (its header states the source). ImageNet-1k class 850 (teddy bear) is not
among the 21841 classes; the official list gives it the row of class 849 (teapot).

Configs start the head this way with::

    head=dict(init_cfg=dict(type='m3i_mm.PretrainedImageNet22kTo1k',
                            checkpoint='m3i://internimage_l_22k_192to384', prefix='head.'))
"""
import functools
import os.path as osp
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from m3i_mm.registry import WEIGHT_INITIALIZERS

IMAGENET22K_NUM_CLASSES = 21841
IMAGENET1K_NUM_CLASSES = 1000
MAPPING_FILE = osp.join(osp.dirname(osp.abspath(__file__)), 'data', 'imagenet22k_to_1k.txt')


@functools.lru_cache(maxsize=None)
def imagenet22k_to_1k() -> Tuple[Tuple[int, ...], Tuple[str, ...]]:
    """(22k row of each ImageNet-1k class, synset id of that row), 1000 entries each.

    Raises:
        ValueError: if the data file is not 1000 ``index synset`` lines with indices in
            ``[0, 21841)``.
    """
    indices, synsets = [], []
    with open(MAPPING_FILE, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.startswith('#'):
                continue
            fields = line.split()
            if len(fields) != 2 or not fields[0].isdigit():
                raise ValueError(f'{MAPPING_FILE}:{number}: expected "<index> <synset>", '
                                 f'got {line.strip()!r}')
            index = int(fields[0])
            if index >= IMAGENET22K_NUM_CLASSES:
                raise ValueError(f'{MAPPING_FILE}:{number}: index {index} is not one of the '
                                 f'{IMAGENET22K_NUM_CLASSES} ImageNet-22k classes')
            indices.append(index)
            synsets.append(fields[1])
    if len(indices) != IMAGENET1K_NUM_CLASSES:
        raise ValueError(f'{MAPPING_FILE}: {len(indices)} classes, expected '
                         f'{IMAGENET1K_NUM_CLASSES}')
    return tuple(indices), tuple(synsets)


def select_imagenet1k_rows(state: Dict[str, torch.Tensor],
                           keys: List[str]) -> Dict[str, torch.Tensor]:
    """``state`` with the 21841-row tensors under ``keys`` cut to the 1000 ImageNet-1k rows.

    Raises:
        KeyError: if a key is missing; ValueError: if its first dimension is not 21841.
    """
    rows = torch.tensor(imagenet22k_to_1k()[0])
    out = dict(state)
    for key in keys:
        if key not in state:
            raise KeyError(f'{key!r} not in the checkpoint (it has e.g. {sorted(state)[:8]})')
        tensor = state[key]
        if tensor.shape[0] != IMAGENET22K_NUM_CLASSES:
            raise ValueError(f'{key} has {tensor.shape[0]} rows; the ImageNet-22k -> 1k '
                             f'mapping needs a {IMAGENET22K_NUM_CLASSES}-class head')
        out[key] = tensor.index_select(0, rows).clone()
    return out


@WEIGHT_INITIALIZERS.register_module()
class PretrainedImageNet22kTo1k:
    """Initialise a linear classification head (mmpretrain ``LinearClsHead``: ``fc``) from
    the 21841-way head of an ImageNet-22k checkpoint, keeping the ImageNet-1k rows.

    Args:
        checkpoint: Path, URL or ``m3i://NAME`` of the 22k classifier checkpoint (official
            layouts are converted by the zoo/loader).
        prefix: Prefix of the head in the (converted) checkpoint.
        map_location: Where tensors are loaded.
    """

    def __init__(self, checkpoint: str, prefix: str = 'head.',
                 map_location: str = 'cpu') -> None:
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.map_location = map_location

    def __call__(self, module: nn.Module) -> None:
        from mmengine.logging import print_log
        from mmengine.runner import CheckpointLoader

        from .internimage import convert_internimage
        raw = CheckpointLoader.load_checkpoint(self.checkpoint, map_location=self.map_location)
        state = convert_internimage(raw)['state_dict']
        head = {k[len(self.prefix):]: v for k, v in state.items() if k.startswith(self.prefix)}
        own = module.state_dict()
        head = select_imagenet1k_rows(head, [k for k in own if k in head])
        missing = sorted(set(own) - set(head))
        if missing:
            raise KeyError(f'{self.checkpoint}: no {self.prefix}{missing[0]} (and '
                           f'{len(missing) - 1} more) for the classification head')
        module.load_state_dict({k: head[k] for k in own}, strict=True)
        print_log(f'classification head: the ImageNet-1k rows of the ImageNet-22k head of '
                  f'{self.checkpoint} (prefix {self.prefix!r})', logger='current')

    def _get_init_info(self) -> str:
        return f'{self.__class__.__name__}: load from {self.checkpoint}'
