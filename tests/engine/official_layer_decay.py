"""The official InternImage layer-wise lr decay rules, written for the tests from the official
code's definitions (OpenGVLab/InternImage 31c962d: classification/models/intern_image.py
``lr_decay_keywords`` with classification/optimizer.py; {detection,segmentation}/mmcv_custom/
custom_layer_decay_optimizer_constructor.py ``get_num_layer_for_swin`` and the constructor),
independently of m3i_mm's implementation. Each function gives the decay exponent ``e`` of a
parameter (it trains at ``lr * rate**e``), or whether it is exempt from weight decay."""
import re

#: classification/optimizer.py: names trained at DCN_LR_MUL (with layer decay on)
CLS_DCN_KEYS = ('offset', 'attention_weights', 'center_feature_scale_proj', 'alpha_beta')


def official_classification_exponent(name: str, depths) -> int:
    """lr_decay_keywords: blocks counted back from the last (exponent 0); stem = first
    block; levels.s.{downsample,norm} (s < 3) = first block of stage s+1; rest: 0."""
    total = sum(depths)
    first = [sum(depths[:s]) for s in range(4)]
    block = re.search(r'levels\.(\d)\.blocks\.(\d+)\.', name)
    if block:
        return total - 1 - (first[int(block.group(1))] + int(block.group(2)))
    if 'patch_embed' in name:
        return total - 1
    transition = re.search(r'levels\.([012])\.(downsample|norm)', name)
    if transition:
        return total - 1 - first[int(transition.group(1)) + 1]
    return 0


def official_dense_exponent(name: str, depths, segmentation: bool) -> int:
    """get_num_layer_for_swin with num_layers = sum(depths) + 2, as an exponent.
    mmdet 3.x calls the DETR level embedding ``level_embed`` (mmdet 2.x: ``level_embeds``)."""
    num_layers = sum(depths) + 2
    layer_id = num_layers - 1
    mask2former = ('decode_head.mask_embed', 'decode_head.cls_embed', 'decode_head.level_embed',
                   'decode_head.query_embed', 'decode_head.query_feat')
    if name.startswith('backbone.patch_embed') or re.search(r'(^|\.)level_embeds?(\.|$)', name):
        layer_id = 0
    elif segmentation and (name.startswith(mask2former)
                           or name.startswith('backbone.cb_modules.0.patch_embed')):
        layer_id = 0
    elif name.startswith('backbone.levels'):
        parts = name.split('.')
        stage = int(parts[2])
        if parts[3] in ('downsample', 'norm'):
            layer_id = 1 + sum(depths[:stage + 1]) if stage < 3 else 1 + sum(depths[:3])
        else:
            layer_id = int(parts[4]) + 1 + sum(depths[:stage])
    return num_layers - layer_id - 1


def official_dense_no_decay(name: str, param) -> bool:
    return (param.ndim == 1 or name.endswith('.bias') or 'relative_position' in name
            or 'norm' in name or 'sampling_offsets' in name)


def official_dense_offset_scale(name: str, offset_lr_scale: float, segmentation: bool) -> float:
    """offset_lr_scale on deformable-attention sampling offsets / reference points (the
    segmentation constructor only under ``backbone``)."""
    if 'sampling_offsets' in name or 'reference_points' in name:
        if not segmentation or 'backbone' in name:
            return offset_lr_scale
    return 1.0
