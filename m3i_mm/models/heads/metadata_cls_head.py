"""A linear classifier whose logits also read per-sample metadata (iNaturalist's month and
location), as the official InternImage-H iNaturalist 2018 classifier
(``classification/models/intern_image_meta_former.py``, ``InternImageMetaFormer``)."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.structures import DataSample

from m3i_mm.registry import MODELS

__all__ = ['MetadataLinearClsHead', 'MetadataEncoder', 'ResidualMLP']


class ResidualMLP(nn.Module):
    """``x + norm2(relu(fc2(norm1(relu(fc1(x))))))`` (the official ``MetaEncoder``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.fc2 = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(torch.relu(self.fc1(x)))
        return x + self.norm2(torch.relu(self.fc2(y)))


class MetadataEncoder(nn.Sequential):
    """Linear -> ReLU -> LayerNorm -> :class:`ResidualMLP` (the official ``meta_head_1/2``;
    same module indices, so official keys map one to one)."""

    def __init__(self, in_features: int, channels: int) -> None:
        super().__init__(nn.Linear(in_features, channels), nn.ReLU(), nn.LayerNorm(channels),
                         ResidualMLP(channels))


@MODELS.register_module()
class MetadataLinearClsHead(LinearClsHead):
    """``fc(image features) + meta_fc(meta_norm(concat(encoder_i(metadata_i))))``.

    Each metadata field is read from the data samples (``PackInputs(algorithm_keys=...)``
    puts it there), encoded by its :class:`MetadataEncoder`, and the concatenation is
    normalised (LayerNorm, eps 1e-6) and mapped to class logits that are added to the image
    logits. Training (:meth:`loss`) and prediction (:meth:`predict`) use the metadata;
    ``forward`` (mmpretrain's ``mode='tensor'``, which passes no data samples) returns the
    image logits alone.

    Args:
        num_classes: Number of classes.
        in_channels: Width of the image feature.
        metadata: Field name -> its number of values, in the order of the encoders. Default:
            the official iNaturalist fields, month (4) and location (3).
        metadata_channels: Width of each encoder (official ``meta_dim`` 64).
        init_cfg: Default: the official initialisation (truncated normal, std 0.02, on every
            Linear; LayerNorms at weight 1, bias 0).
        **kwargs: ``LinearClsHead`` arguments (``loss``, ``topk``, ...).
    """

    def __init__(self, num_classes: int, in_channels: int,
                 metadata: Optional[Dict[str, int]] = None, metadata_channels: int = 64,
                 init_cfg: Optional[dict] = dict(type='TruncNormal', layer='Linear', std=0.02),
                 **kwargs) -> None:
        super().__init__(num_classes, in_channels, init_cfg=init_cfg, **kwargs)
        metadata = dict(metadata or dict(temporal_info=4, spatial_info=3))
        if not metadata:
            raise ValueError('MetadataLinearClsHead needs at least one metadata field')
        self.metadata_keys: Tuple[str, ...] = tuple(metadata)
        self.metadata_dims: Tuple[int, ...] = tuple(int(d) for d in metadata.values())
        self.meta_encoders = nn.ModuleList(
            MetadataEncoder(dim, metadata_channels) for dim in self.metadata_dims)
        width = metadata_channels * len(metadata)
        self.meta_norm = nn.LayerNorm(width, eps=1e-6)
        self.meta_fc = nn.Linear(width, num_classes)

    def metadata_tensors(self, data_samples: Optional[Sequence[DataSample]],
                         like: torch.Tensor) -> List[torch.Tensor]:
        """The ``(N, dim)`` tensor of every metadata field, on ``like``'s device and dtype."""
        if not data_samples:
            raise ValueError('MetadataLinearClsHead needs data samples carrying '
                             f'{self.metadata_keys} (PackInputs(algorithm_keys=...))')
        tensors = []
        for key, dim in zip(self.metadata_keys, self.metadata_dims):
            values = []
            for i, sample in enumerate(data_samples):
                if sample is None or key not in sample:
                    raise KeyError(f'data sample {i} has no {key!r}: pack it with '
                                   f'PackInputs(algorithm_keys={self.metadata_keys})')
                values.append(torch.as_tensor(sample.get(key), dtype=like.dtype))
            tensor = torch.stack(values).to(like.device)
            if tensor.shape != (len(data_samples), dim):
                raise ValueError(f'{key!r} must hold {dim} values per sample, got a batch of '
                                 f'shape {tuple(tensor.shape)}')
            tensors.append(tensor)
        return tensors

    def metadata_logits(self, data_samples: Optional[Sequence[DataSample]],
                        like: torch.Tensor) -> torch.Tensor:
        """``(N, num_classes)`` logits of the samples' metadata."""
        encoded = [encoder(x) for encoder, x in
                   zip(self.meta_encoders, self.metadata_tensors(data_samples, like))]
        return self.meta_fc(self.meta_norm(torch.cat(encoded, dim=-1)))

    def scores(self, feats: Tuple[torch.Tensor],
               data_samples: Optional[Sequence[DataSample]]) -> torch.Tensor:
        """Image logits plus metadata logits."""
        logits = self(feats)
        return logits + self.metadata_logits(data_samples, logits)

    def loss(self, feats: Tuple[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> dict:
        return self._get_loss(self.scores(feats, data_samples), data_samples, **kwargs)

    def predict(self, feats: Tuple[torch.Tensor],
                data_samples: Optional[List[Optional[DataSample]]] = None
                ) -> List[DataSample]:
        return self._get_predictions(self.scores(feats, data_samples), data_samples)
