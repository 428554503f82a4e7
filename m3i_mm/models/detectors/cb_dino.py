"""DINO with a composite (CB-InternImage) backbone, as the official system-level detectors.

Semantics of the official ``CBDINO`` / ``CBDINOHead`` / ``CBChannelMapper``
(``detection/mmdet_custom/models/{detectors/cbnet_dino.py, dense_heads/cbdino_head.py,
necks/cbnet_channel_mapper.py}``, commit 31c962d): in training, the features of both
backbones go through the same neck and the same DINO head, each with its own denoising
queries, and the loss is ``0.5 * loss(assisting) + 1.0 * loss(lead)``; at test time only the
lead backbone's features are used. The official head runs the two copies as one batch of
two images (its code assumes one image per GPU); here the head runs once per copy, which
gives the same losses for any batch size.
"""
from typing import Dict, List, Tuple, Union

from mmdet.models.detectors import DINO
from mmdet.structures import SampleList
from torch import Tensor

from m3i_mm.registry import MODELS


@MODELS.register_module()
class CBDINO(DINO):
    """mmdet 3.x DINO for a backbone returning ``(assisting, lead)`` feature tuples.

    Args:
        assisting_loss_weight: Weight of the assisting backbone's losses (official 0.5).
        *args, **kwargs: As for ``mmdet.models.DINO``; the backbone must be a
            composite backbone such as ``m3i_mm.CBInternImage``.
    """

    def __init__(self, *args, assisting_loss_weight: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.assisting_loss_weight = assisting_loss_weight

    def _neck(self, feats: Tuple[Tensor, ...]) -> Tuple[Tensor, ...]:
        return self.neck(feats) if self.with_neck else feats

    def _backbone_pair(self, batch_inputs: Tensor):
        outs = self.backbone(batch_inputs)
        if not (isinstance(outs, tuple) and len(outs) == 2 and isinstance(outs[0], tuple)):
            raise TypeError(f'CBDINO needs a composite backbone returning (assisting, lead) '
                            f'feature tuples; {type(self.backbone).__name__} returned '
                            f'{type(outs).__name__} of length {len(outs)}')
        return outs

    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        """The lead backbone's features through the neck (used for prediction)."""
        return self._neck(self._backbone_pair(batch_inputs)[1])

    def loss(self, batch_inputs: Tensor,
             batch_data_samples: SampleList) -> Dict[str, Union[Tensor, List[Tensor]]]:
        """Weighted DINO losses of both backbones; keys ``<loss>`` (lead) and
        ``assisting.<loss>`` (assisting, already multiplied by its weight)."""
        assisting, lead = self._backbone_pair(batch_inputs)
        losses = {}
        for prefix, feats, weight in (('assisting.', assisting, self.assisting_loss_weight),
                                      ('', lead, 1.0)):
            head_inputs = self.forward_transformer(self._neck(feats), batch_data_samples)
            part = self.bbox_head.loss(**head_inputs, batch_data_samples=batch_data_samples)
            for key, value in part.items():
                if weight != 1.0 and 'loss' in key:
                    value = [v * weight for v in value] if isinstance(value, (list, tuple)) \
                        else value * weight
                losses[prefix + key] = value
        return losses
