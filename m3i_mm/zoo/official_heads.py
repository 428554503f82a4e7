"""Convert the transformer heads of the official InternImage detectors and segmentors.

The official DINO (``detection/mmdet_custom``, on mmdet 2.28 / mmcv 1.x) and Mask2Former
(``segmentation/mmseg_custom``, on mmseg 0.27 / mmcv 1.x) build their transformers from mmcv
1.x ``BaseTransformerLayer``s, which keep their sub-modules in lists (``attentions.K``,
``ffns.0``, ``norms.K``) in the order of the layer's ``operation_order``. mmdet 3.x names
them (``self_attn``, ``cross_attn``, ``ffn``, ``norms.K``) and renames a few DINO
parameters. Everything else (backbone aside, which :mod:`m3i_mm.zoo.internimage` renames)
keeps its name and shape: the ChannelMapper neck, the DINO classification/regression
branches, the Mask2Former pixel decoder's convolutions and the query/class/mask embeddings.

Official layouts, read from the official code and configs (commit 31c962d) and the mmcv 1.x
/ mmdet 2.x / mmseg 0.x sources, -> mmdet 3.3 / mmseg 1.2:

DINO (``bbox_head.`` of ``DINOHead``/``CBDINOHead``; ``transformer`` is ``DinoTransformer``;
prefix ``bbox_head.transformer.`` written ``T.``):

- ``T.encoder.layers.i.attentions.0`` -> ``encoder.layers.i.self_attn``;
  ``T.encoder.layers.i.ffns.0`` -> ``encoder.layers.i.ffn``; ``norms.k`` keep their index;
- ``T.decoder.layers.i.attentions.0`` -> ``decoder.layers.i.self_attn``,
  ``attentions.1`` -> ``cross_attn``, ``ffns.0`` -> ``ffn``, ``norms.k`` as is;
- ``T.decoder.ref_point_head.{0,2}`` (a Sequential Linear-ReLU-Linear) ->
  ``decoder.ref_point_head.layers.{0,1}``; ``T.decoder.norm`` -> ``decoder.norm``;
- ``T.level_embeds`` -> ``level_embed``; ``T.enc_output`` -> ``memory_trans_fc``;
  ``T.enc_output_norm`` -> ``memory_trans_norm``; ``T.query_embed`` -> ``query_embedding``;
- ``bbox_head.label_embedding`` -> ``dn_query_generator.label_embedding``;
- ``bbox_head.cls_branches``, ``bbox_head.reg_branches`` and the ``neck`` as they are.

(encoder order ``self_attn, norm, ffn, norm``; decoder ``self_attn, norm, cross_attn, norm,
ffn, norm``.) The InternImage-G DINO uses the official ``EfficientFFN``: the hidden layer
split in 4 (``fc1_s``: Linear(256, 512), ``fc2_s``: Linear(512, 256) without bias, one
``fc2_bias``), summed. Stacking the ``fc1_s`` rows and the ``fc2_s`` columns gives mmcv's
``FFN`` (``layers.0.0``: Linear(256, 2048), ``layers.1``: Linear(2048, 256)) computing the
same function. The composite CB detectors keep their single ChannelMapper in a list
(``neck=[dict(...)]`` builds an ``nn.Sequential``): ``neck.0.`` becomes ``neck.``.

Mask2Former (``decode_head.``): the pixel decoder's encoder layers (``self_attn, norm, ffn,
norm``) and the transformer decoder's layers, whose order is ``cross_attn, norm, self_attn,
norm, ffn, norm``: ``attentions.0`` is the *cross*-attention, ``attentions.1`` the
self-attention (both ``MultiheadAttention`` of the same shape, so only the order tells them
apart).
"""
import re
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch

from .converters import register_converter
from .errors import ConverterError
from .internimage import convert_state_dict, extract_state_dict

Rules = Sequence[Tuple[str, str]]

DINO_RULES: Rules = (
    (r'^bbox_head\.transformer\.encoder\.layers\.(\d+)\.attentions\.0\.',
     r'encoder.layers.\1.self_attn.'),
    (r'^bbox_head\.transformer\.encoder\.layers\.(\d+)\.ffns\.0\.', r'encoder.layers.\1.ffn.'),
    (r'^bbox_head\.transformer\.encoder\.layers\.(\d+)\.norms\.(\d+)\.',
     r'encoder.layers.\1.norms.\2.'),
    (r'^bbox_head\.transformer\.decoder\.layers\.(\d+)\.attentions\.0\.',
     r'decoder.layers.\1.self_attn.'),
    (r'^bbox_head\.transformer\.decoder\.layers\.(\d+)\.attentions\.1\.',
     r'decoder.layers.\1.cross_attn.'),
    (r'^bbox_head\.transformer\.decoder\.layers\.(\d+)\.ffns\.0\.', r'decoder.layers.\1.ffn.'),
    (r'^bbox_head\.transformer\.decoder\.layers\.(\d+)\.norms\.(\d+)\.',
     r'decoder.layers.\1.norms.\2.'),
    (r'^bbox_head\.transformer\.decoder\.ref_point_head\.0\.',
     'decoder.ref_point_head.layers.0.'),
    (r'^bbox_head\.transformer\.decoder\.ref_point_head\.2\.',
     'decoder.ref_point_head.layers.1.'),
    (r'^bbox_head\.transformer\.decoder\.norm\.', 'decoder.norm.'),
    (r'^bbox_head\.transformer\.level_embeds$', 'level_embed'),
    (r'^bbox_head\.transformer\.enc_output\.', 'memory_trans_fc.'),
    (r'^bbox_head\.transformer\.enc_output_norm\.', 'memory_trans_norm.'),
    (r'^bbox_head\.transformer\.query_embed\.', 'query_embedding.'),
    (r'^bbox_head\.label_embedding\.', 'dn_query_generator.label_embedding.'),
    (r'^bbox_head\.((cls|reg)_branches\.\d+\.)', r'bbox_head.\1'),
)

MASK2FORMER_RULES: Rules = (
    (r'^decode_head\.pixel_decoder\.encoder\.layers\.(\d+)\.attentions\.0\.',
     r'decode_head.pixel_decoder.encoder.layers.\1.self_attn.'),
    (r'^decode_head\.pixel_decoder\.encoder\.layers\.(\d+)\.ffns\.0\.',
     r'decode_head.pixel_decoder.encoder.layers.\1.ffn.'),
    (r'^decode_head\.pixel_decoder\.encoder\.layers\.(\d+)\.norms\.(\d+)\.',
     r'decode_head.pixel_decoder.encoder.layers.\1.norms.\2.'),
    (r'^decode_head\.pixel_decoder\.(input_convs|lateral_convs|output_convs)\.',
     r'decode_head.pixel_decoder.\1.'),
    (r'^decode_head\.pixel_decoder\.(level_encoding|mask_feature)\.',
     r'decode_head.pixel_decoder.\1.'),
    (r'^decode_head\.transformer_decoder\.layers\.(\d+)\.attentions\.0\.',
     r'decode_head.transformer_decoder.layers.\1.cross_attn.'),
    (r'^decode_head\.transformer_decoder\.layers\.(\d+)\.attentions\.1\.',
     r'decode_head.transformer_decoder.layers.\1.self_attn.'),
    (r'^decode_head\.transformer_decoder\.layers\.(\d+)\.ffns\.0\.',
     r'decode_head.transformer_decoder.layers.\1.ffn.'),
    (r'^decode_head\.transformer_decoder\.layers\.(\d+)\.norms\.(\d+)\.',
     r'decode_head.transformer_decoder.layers.\1.norms.\2.'),
    (r'^decode_head\.transformer_decoder\.post_norm\.', 'decode_head.transformer_decoder.'
     'post_norm.'),
    (r'^decode_head\.(decoder_input_projs\.\d+|query_embed|query_feat|level_embed|cls_embed|'
     r'mask_embed\.\d+)\.', r'decode_head.\1.'),
)

_EFFICIENT_FFN = re.compile(r'^(.*\.ffns\.0)\.fc1_0\.weight$')


def merge_efficient_ffns(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Replace every official ``EfficientFFN`` (``PREFIX.fc1_s``, ``PREFIX.fc2_s``,
    ``PREFIX.fc2_bias``) by the equivalent mmcv ``FFN`` weights (``PREFIX.layers.0.0``,
    ``PREFIX.layers.1``); other keys are returned unchanged.

    Raises:
        ConverterError: If the split parts are incomplete or their shapes do not chain.
    """
    prefixes = [m.group(1) for m in map(_EFFICIENT_FFN.match, state) if m]
    if not prefixes:
        return state
    out = dict(state)
    for prefix in prefixes:
        splits = 0
        while f'{prefix}.fc1_{splits}.weight' in out:
            splits += 1
        names = [f'{prefix}.fc1_{s}.{p}' for s in range(splits) for p in ('weight', 'bias')]
        names += [f'{prefix}.fc2_{s}.weight' for s in range(splits)] + [f'{prefix}.fc2_bias']
        missing = [n for n in names if n not in out]
        extra = [k for k in out if k.startswith(prefix + '.') and k not in names]
        if missing or extra:
            raise ConverterError(f'EfficientFFN {prefix} is incomplete: missing {missing}, '
                                 f'unexpected {extra}')
        fc1_w = torch.cat([out.pop(f'{prefix}.fc1_{s}.weight') for s in range(splits)], 0)
        fc1_b = torch.cat([out.pop(f'{prefix}.fc1_{s}.bias') for s in range(splits)], 0)
        fc2_w = torch.cat([out.pop(f'{prefix}.fc2_{s}.weight') for s in range(splits)], 1)
        fc2_b = out.pop(f'{prefix}.fc2_bias')
        if not (fc1_w.shape[0] == fc1_b.shape[0] == fc2_w.shape[1]
                and fc2_w.shape[0] == fc2_b.shape[0] == fc1_w.shape[1]):
            raise ConverterError(
                f'EfficientFFN {prefix}: shapes do not chain (fc1 {tuple(fc1_w.shape)}, '
                f'fc2 {tuple(fc2_w.shape)}, fc2_bias {tuple(fc2_b.shape)})')
        out[f'{prefix}.layers.0.0.weight'] = fc1_w
        out[f'{prefix}.layers.0.0.bias'] = fc1_b
        out[f'{prefix}.layers.1.weight'] = fc2_w
        out[f'{prefix}.layers.1.bias'] = fc2_b
    return out


def rename_keys(state: Dict[str, torch.Tensor], rules: Rules, roots: Sequence[str],
                what: str) -> Dict[str, torch.Tensor]:
    """Rename the keys under ``roots`` by the first matching rule; keep other keys.

    Raises:
        ConverterError: If a key under ``roots`` matches no rule (the message lists them:
            the file is not the official layout this converter knows), or two keys map to
            one name.
    """
    compiled = [(re.compile(p), r) for p, r in rules]
    out: Dict[str, torch.Tensor] = {}
    unknown: List[str] = []
    for key, value in state.items():
        new = key
        if key.startswith(tuple(roots)):
            for pattern, repl in compiled:
                if pattern.match(key):
                    new = pattern.sub(repl, key)
                    break
            else:
                unknown.append(key)
                continue
        if new in out:
            raise ConverterError(f'{what}: two checkpoint keys map to {new!r}')
        out[new] = value
    if unknown:
        raise ConverterError(
            f'{what}: {len(unknown)} checkpoint keys are not in the official layout this '
            f'converter knows: {unknown[:12]}{" ..." if len(unknown) > 12 else ""}')
    return out


def convert_dino_head(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official DINO head keys -> mmdet 3.x ``DINO``; other keys unchanged."""
    return rename_keys(merge_efficient_ffns(state), DINO_RULES, ('bbox_head.', ),
                       'official DINO head')


def convert_mask2former_head(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official Mask2Former head keys -> mmseg 1.x ``Mask2FormerHead``; others unchanged."""
    return rename_keys(state, MASK2FORMER_RULES, ('decode_head.', ),
                       'official Mask2Former head')


def _converted(checkpoint: Any, state: Dict[str, torch.Tensor], source: str) -> dict:
    meta = dict(checkpoint['meta']) if isinstance(checkpoint, dict) and isinstance(
        checkpoint.get('meta'), dict) else {}
    meta['converted_from'] = source
    return {'state_dict': state, 'meta': meta}


def _backbone_then(head: Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]],
                   checkpoint: Any, source: str) -> dict:
    state, fmt = convert_state_dict(extract_state_dict(checkpoint))
    if fmt != 'openmmlab':
        raise ConverterError(f'{source}: expected an mmdet/mmseg checkpoint (backbone.* keys), '
                             f'got the {fmt} layout of a backbone alone')
    return _converted(checkpoint, head(state), source)


@register_converter('internimage_dino')
def convert_internimage_dino(checkpoint: Any) -> dict:
    """Zoo converter: an official InternImage DINO detector -> mmdet 3.x ``DINO``."""
    return _backbone_then(convert_dino_head, checkpoint, 'official InternImage DINO (mmdet 2.x)')


@register_converter('internimage_mask2former')
def convert_internimage_mask2former(checkpoint: Any) -> dict:
    """Zoo converter: an official InternImage Mask2Former -> mmseg 1.x ``Mask2FormerHead``."""
    return _backbone_then(convert_mask2former_head, checkpoint,
                          'official InternImage Mask2Former (mmseg 0.x)')


@register_converter('cb_internimage_dino')
def convert_cb_internimage_dino(checkpoint: Any) -> dict:
    """Zoo converter: an official CB-InternImage DINO -> ``m3i_mm.CBDINO`` (mmdet 3.x)."""
    from .cb_internimage import convert_cb_internimage
    state = convert_cb_internimage(checkpoint)['state_dict']
    state = {('neck.' + k[len('neck.0.'):] if k.startswith('neck.0.') else k): v
             for k, v in state.items()}
    return _converted(checkpoint, convert_dino_head(state),
                      'official CB-InternImage DINO (mmdet 2.x)')
