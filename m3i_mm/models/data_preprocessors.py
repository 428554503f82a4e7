"""Data preprocessor for M3I's multi-source, two-view batches."""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmengine.model import BaseDataPreprocessor

from m3i_mm.registry import MODELS


@dataclass
class M3IBatch:
    """What the M3I model reads besides the images.

    Attributes:
        labels: ``(N,)`` long, ``-1`` where a sample has no label.
        captions: ``N`` captions, ``None`` where a sample has none.
        crop_boxes: ``(N, 2, 4)`` crop boxes of view 1 and view 2 in original pixels.
        flips: ``(N, 2)`` bool, horizontal flips of the views.
        sources: ``(N,)`` long source ids.
    """
    labels: torch.Tensor
    captions: List[Optional[str]]
    crop_boxes: torch.Tensor
    flips: torch.Tensor
    sources: torch.Tensor


@MODELS.register_module()
class M3IDataPreprocessor(BaseDataPreprocessor):
    """Stack and normalise two-view batches; gather labels, captions and view geometry.

    Input: ``inputs`` a list of ``(2, 3, S, S)`` uint8 tensors (or one stacked tensor) and
    the ``DataSample`` list of :class:`~m3i_mm.datasets.PackM3IInputs`. Output:
    ``dict(inputs=(N, 2, 3, S, S) float, data_samples=[...], batch=M3IBatch)``.

    Args:
        mean: Per-channel mean (in the output channel order).
        std: Per-channel std.
        to_rgb: Reverse the channel order (mmcv decodes BGR).
    """

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375), to_rgb: bool = True) -> None:
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 1, 3, 1, 1),
                             persistent=False)
        self.to_rgb = to_rgb

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = data['inputs']
        if isinstance(inputs, (list, tuple)):
            shapes = {tuple(t.shape) for t in inputs}
            if len(shapes) != 1:
                raise ValueError(f'M3I views must share one size in a batch, got {shapes}')
            inputs = torch.stack(list(inputs))
        if inputs.dim() != 5 or inputs.shape[1:3] != (2, 3):
            raise ValueError('M3IDataPreprocessor expects (N, 2, 3, S, S) two-view inputs, got '
                             f'{tuple(inputs.shape)}')
        if self.to_rgb:
            inputs = inputs.flip(2)
        inputs = (inputs.float() - self.mean) / self.std
        samples = data.get('data_samples') or []
        if len(samples) != inputs.shape[0]:
            raise ValueError(f'{inputs.shape[0]} inputs but {len(samples)} data samples')
        device = inputs.device
        labels = torch.tensor([int(s.gt_label[0]) if 'gt_label' in s else -1 for s in samples],
                              dtype=torch.long, device=device)
        boxes = torch.as_tensor(np.stack([s.metainfo['crop_boxes'] for s in samples]),
                                dtype=torch.float32, device=device).view(-1, 2, 4)
        flips = torch.as_tensor(np.stack([s.metainfo['flips'] for s in samples]),
                                dtype=torch.bool, device=device).view(-1, 2)
        sources = torch.tensor([int(s.metainfo.get('source', 0)) for s in samples],
                               dtype=torch.long, device=device)
        captions = [s.metainfo.get('caption') for s in samples]
        batch = M3IBatch(labels, captions, boxes, flips, sources)
        return dict(inputs=inputs, data_samples=samples, batch=batch)
