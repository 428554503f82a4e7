"""The layer-wise lr decay rules of the official InternImage code, one per codebase.

The official repository (OpenGVLab/InternImage, commit 31c962d) numbers the layers of an
InternImage model in two incompatible ways, and the released numbers depend on which one a
recipe used:

* ``classification`` -- ``classification/models/intern_image.py`` (``lr_decay_keywords``) with
  ``classification/optimizer.py``: the last block trains at ``rate**0``, block ``b`` of ``D``
  (counted over all stages from 0) at ``rate**(D-1-b)``; the stem goes with the first block;
  ``levels.s.downsample``/``levels.s.norm`` (s < 3) go with the first block of stage ``s+1``;
  every other parameter (the last stage's norm, the stage-3 post-norms of H/G, the head)
  trains at ``rate**0``. Names are matched by substring, first key wins.
* ``detection`` / ``segmentation`` -- ``{detection,segmentation}/mmcv_custom/
  custom_layer_decay_optimizer_constructor.py`` (``get_num_layer_for_swin``) with
  ``num_layers = sum(depths) + 2``: the stem is layer 0, block ``b`` is layer ``b + 1``,
  everything outside the backbone is the last layer, and ``scale = rate**(num_layers - id - 1)``.
  So the last block trains at ``rate**1``, the stem at ``rate**(D+1)``, heads at ``rate**0``.
  Quirks kept on purpose (they are what the released models were trained with):
  ``levels.s.downsample``/``levels.s.norm`` take the id of the first block of stage ``s+1``
  (stage 3's norm the id of stage 3's first block); ``levels.2.post_norms.k`` takes the id of
  block ``k`` of stage 2 (the name is parsed positionally); DETR level embeddings
  (``level_embeds``, ``level_embed`` in mmdet 3.x) are layer 0; names under
  ``backbone.cb_modules`` (CB-InternImage) are not recognised and train as heads. The
  segmentation rule also puts Mask2Former's ``decode_head.{mask_embed, cls_embed, level_embed,
  query_embed, query_feat}`` and ``backbone.cb_modules.0.patch_embed`` at layer 0.

Each function maps a full parameter name (as ``model.named_parameters()`` gives it; the
backbone under ``backbone.``) to its decay exponent ``e``: the parameter trains at
``base_lr * rate**e``.
"""
import functools
from typing import Callable, Dict, Sequence, Tuple

#: DETR-style level embeddings: ``level_embeds`` in the official mmdet 2.x code,
#: ``level_embed`` in mmdet 3.x (the same parameter).
LEVEL_EMBED = 'level_embed'
#: Mask2Former parameters the official segmentation rule puts at layer 0.
MASK2FORMER_LAYER0 = ('decode_head.mask_embed', 'decode_head.cls_embed',
                      'decode_head.level_embed', 'decode_head.query_embed',
                      'decode_head.query_feat')


def classification_exponent(name: str, depths: Sequence[int]) -> int:
    """Decay exponent of ``name`` under the official classification rule."""
    # The official table maps keywords to exponents; the first keyword found in the name
    # wins, in the table's order: blocks from the last one backwards, then the stem and the
    # stage transitions. Names matching none train at the full lr.
    for keyword, exponent in _classification_table(tuple(depths)).items():
        if keyword in name:
            return exponent
    return 0


@functools.lru_cache(maxsize=None)
def _classification_table(depths: Tuple[int, ...]) -> Dict[str, int]:
    table = {}
    exponent = 0
    for stage in (3, 2, 1, 0):
        for block in reversed(range(depths[stage])):
            table[f'levels.{stage}.blocks.{block}.'] = exponent
            exponent += 1
    table['patch_embed'] = table['levels.0.blocks.0.']
    for stage in (0, 1, 2):
        table[f'levels.{stage}.downsample'] = table[f'levels.{stage + 1}.blocks.0.']
        table[f'levels.{stage}.norm'] = table[f'levels.{stage + 1}.blocks.0.']
    return table


def _dense_layer_id(name: str, depths: Sequence[int], segmentation: bool) -> int:
    """Layer id of the official det/seg rule (``get_num_layer_for_swin``)."""
    num_layers = sum(depths) + 2
    if name.startswith('backbone.patch_embed'):
        return 0
    if segmentation and name.startswith(
            MASK2FORMER_LAYER0 + ('backbone.cb_modules.0.patch_embed', )):
        return 0
    if LEVEL_EMBED in name:
        return 0
    if name.startswith('backbone.levels.'):
        parts = name.split('.')
        stage = int(parts[2])
        if parts[3] in ('downsample', 'norm'):
            return 1 + sum(depths[:min(stage + 1, 3)])
        return int(parts[4]) + 1 + sum(depths[:stage])
    return num_layers - 1


def detection_exponent(name: str, depths: Sequence[int]) -> int:
    """Decay exponent of ``name`` under the official detection rule."""
    return sum(depths) + 1 - _dense_layer_id(name, depths, segmentation=False)


def segmentation_exponent(name: str, depths: Sequence[int]) -> int:
    """Decay exponent of ``name`` under the official segmentation rule."""
    return sum(depths) + 1 - _dense_layer_id(name, depths, segmentation=True)


#: Exponent functions by ``layer_decay_numbering`` name.
NUMBERINGS: Dict[str, Callable[[str, Sequence[int]], int]] = {
    'classification': classification_exponent,
    'detection': detection_exponent,
    'segmentation': segmentation_exponent,
}

#: Substrings of the parameters the official classification recipe trains at
#: ``DCN_LR_MUL`` (``classification/optimizer.py``): DCNv3 offsets and centre-feature-scale
#: projections (``attention_weights`` and ``alpha_beta`` belong to other operators of that
#: code and match nothing in InternImage). The mask projection is not among them.
CLASSIFICATION_DCN_KEYS = ('offset', 'attention_weights', 'center_feature_scale_proj',
                           'alpha_beta')
#: Parameters the official det/seg rule trains at ``offset_lr_scale`` (DETR/Mask2Former
#: deformable attention); the segmentation rule applies it only under ``backbone``.
DENSE_OFFSET_KEYS = ('sampling_offsets', 'reference_points')
#: Substrings of parameters the official det/seg rule never decays (besides 1-D tensors and
#: biases).
DENSE_NO_DECAY_KEYS = ('relative_position', 'norm', 'sampling_offsets')
