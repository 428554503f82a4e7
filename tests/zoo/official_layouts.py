"""Key layouts (name -> shape) of the official InternImage detection and segmentation
checkpoints, written down from facts: the official configs (OpenGVLab/InternImage commit
31c962d: detection/configs/{coco,lvis}, segmentation/configs/{ade20k,coco_stuff164k}) and the
attribute names and parameter shapes of the modules they build in mmcv 1.x, mmdet 2.28 and
mmseg 0.27 (and the official mmdet_custom/mmseg_custom heads). Not derived from m3i_mm's
code or mmdet 3.x's: the tests compare these layouts with what our models hold.

Facts used, module by module (mmcv 1.x naming):

- ``ConvModule``: ``conv`` (bias only without a norm, unless asked) and the norm named by
  its kind: ``bn`` (BN/SyncBN, with running statistics), ``gn``.
- ``BaseTransformerLayer``: ``attentions.K`` (in the order of ``operation_order``),
  ``ffns.0`` (``FFN``: ``layers.0.0`` Linear(E, F), ``layers.1`` Linear(F, E)), ``norms.K``.
- ``MultiheadAttention``: ``attn`` = ``nn.MultiheadAttention`` (``in_proj_weight`` (3E, E),
  ``in_proj_bias``, ``out_proj``).
- ``MultiScaleDeformableAttention``: ``sampling_offsets`` Linear(E, heads*levels*points*2),
  ``attention_weights`` Linear(E, heads*levels*points), ``value_proj``, ``output_proj``.
- official ``EfficientFFN`` (InternImage-G DINO): ``fc1_s`` Linear(E, F/4), ``fc2_s``
  Linear(F/4, E) without bias (s = 0..3), ``fc2_bias`` (E).
- mmdet 2.x: ``FPN`` (``lateral_convs.i``, ``fpn_convs.i``; 5 outputs by max-pooling, no
  extra convs), ``RPNHead`` (``rpn_conv``, ``rpn_cls`` (A), ``rpn_reg`` (4A), A = 3 anchors),
  ``Shared2FCBBoxHead`` (``shared_fcs.{0,1}``, ``fc_cls`` (K+1), ``fc_reg`` (4K)),
  ``ConvFCBBoxHead`` with 4 shared convs + 1 fc (``shared_convs.i``, ``shared_fcs.0``),
  ``FCNMaskHead`` (``convs.0..3``, ``upsample`` ConvTranspose2d (C, C, 2, 2), ``conv_logits``
  (K)), ``CascadeRoIHead`` (``bbox_head.s``/``mask_head.s`` for the 3 stages),
  ``ChannelMapper`` (``convs.i``, ``extra_convs.0``: 3x3 stride 2 from the last input, GN).
- official DINO: ``DINOHead`` (``cls_branches.0..D`` Linear(E, K), ``reg_branches.0..D`` =
  Linear-ReLU-Linear-ReLU-Linear(E, 4), ``label_embedding`` (K, E)), ``DinoTransformer``
  (``level_embeds`` (4, E), ``enc_output`` Linear(E, E), ``enc_output_norm``, ``query_embed``
  (Q, E)), encoder layers ``self_attn, norm, ffn, norm``, ``DinoTransformerDecoder`` (layers
  ``self_attn, norm, cross_attn, norm, ffn, norm``, ``ref_point_head`` = Linear(2E, E)-ReLU-
  Linear(E, E) at indices 0 and 2, ``norm``). The CB detectors: ``CBInternImage``
  (``cb_modules.0`` a full InternImage, ``cb_modules.1`` without ``patch_embed`` plus
  ``gamma0..3``, ``cb_linears.i.j`` Conv2d(C_{i+j}, C_i, 1) for j >= 1) and the neck given as
  a one-element list, i.e. ``nn.Sequential``: ``neck.0.``.
- mmseg 0.x: ``UPerHead`` (``psp_modules.i.1`` after the pooling, ``bottleneck``,
  ``lateral_convs.i``, ``fpn_convs.i``, ``fpn_bottleneck``, ``conv_seg``; SyncBN),
  ``FCNHead`` auxiliary (``convs.0``, ``conv_seg``).
- official Mask2Former: ``MSDeformAttnPixelDecoder`` (``input_convs.i`` from the top level
  down, with bias and GN; encoder layers ``self_attn, norm, ffn, norm``; ``level_encoding``;
  ``lateral_convs.0``/``output_convs.0`` for the lowest level, GN, no bias;
  ``mask_feature``), ``transformer_decoder`` (layers ``cross_attn, norm, self_attn, norm,
  ffn, norm``; ``post_norm``), ``query_embed``, ``query_feat``, ``level_embed``, ``cls_embed``
  (K+1), ``mask_embed.{0,2,4}``; ``conv_seg`` is removed, ``decoder_input_projs`` are
  identities (feature and decoder widths are equal).
"""
from typing import Dict, Optional, Sequence, Union

from tests.models.backbones.official_checkpoint import official_shapes

Layout = Dict[str, tuple]

#: The official detection and segmentation configs set layer_scale=1.0 for T..XL and None
#: for H/G (so T's detectors have gammas that its classifier lacks).
DOWNSTREAM_LAYER_SCALE = {'t': True, 's': True, 'b': True, 'l': True, 'xl': True,
                          'h': False, 'g': False}


def arch_settings(arch: Union[str, dict]) -> dict:
    """Full InternImage settings of a variant name or a (tiny) arch dict."""
    from m3i_mm.models.backbones.intern_image import InternImage
    if isinstance(arch, str):
        return {**InternImage._defaults, **InternImage.arch_settings[arch]}
    return {**InternImage._defaults, **InternImage.arch_settings['t'], **arch}


def has_layer_scale(arch: Union[str, dict]) -> bool:
    """Whether the official downstream backbone has gammas (a tiny arch dict says it)."""
    if isinstance(arch, str):
        return DOWNSTREAM_LAYER_SCALE[arch]
    return arch_settings(arch)['layer_scale'] is not None


def widths(arch: Union[str, dict]) -> list:
    c = arch_settings(arch)['channels']
    return [c * 2**i for i in range(4)]


def internimage(arch: Union[str, dict], prefix: str = 'backbone.', stem: bool = True
                ) -> Layout:
    """The official downstream InternImage backbone (no classification head)."""
    a = arch_settings(arch)
    shapes = official_shapes(a['channels'], a['depths'], a['groups'],
                             layer_scale=has_layer_scale(arch),
                             post_norm=a['post_norm'], res_post_norm=a['res_post_norm'],
                             dw_kernel_size=a['dw_kernel_size'] or 3,
                             post_norm_ids=a['level2_post_norm_block_ids'],
                             center_feature_scale=a['center_feature_scale'], num_classes=0)
    return {prefix + k: v for k, v in shapes.items() if stem or not k.startswith('patch_embed.')}


def linear(prefix: str, cin: int, cout: int, bias: bool = True) -> Layout:
    out = {f'{prefix}.weight': (cout, cin)}
    if bias:
        out[f'{prefix}.bias'] = (cout, )
    return out


def norm(prefix: str, channels: int, kind: str = 'ln') -> Layout:
    out = {f'{prefix}.weight': (channels, ), f'{prefix}.bias': (channels, )}
    if kind == 'bn':
        out.update({f'{prefix}.running_mean': (channels, ), f'{prefix}.running_var': (channels, ),
                    f'{prefix}.num_batches_tracked': ()})
    return out


def conv(prefix: str, cin: int, cout: int, k: int, bias: bool = True) -> Layout:
    out = {f'{prefix}.weight': (cout, cin, k, k)}
    if bias:
        out[f'{prefix}.bias'] = (cout, )
    return out


def conv_module(prefix: str, cin: int, cout: int, k: int, norm_kind: Optional[str] = None,
                bias: Optional[bool] = None) -> Layout:
    """mmcv ConvModule: ``bias='auto'`` means a bias only without a norm."""
    out = conv(f'{prefix}.conv', cin, cout, k, bias=(norm_kind is None) if bias is None else bias)
    if norm_kind is not None:
        out.update(norm(f'{prefix}.{norm_kind}', cout, norm_kind))
    return out


def mha(prefix: str, dims: int) -> Layout:
    return {f'{prefix}.attn.in_proj_weight': (3 * dims, dims),
            f'{prefix}.attn.in_proj_bias': (3 * dims, ),
            **linear(f'{prefix}.attn.out_proj', dims, dims)}


def msda(prefix: str, dims: int, heads: int, levels: int, points: int) -> Layout:
    return {**linear(f'{prefix}.sampling_offsets', dims, heads * levels * points * 2),
            **linear(f'{prefix}.attention_weights', dims, heads * levels * points),
            **linear(f'{prefix}.value_proj', dims, dims),
            **linear(f'{prefix}.output_proj', dims, dims)}


def ffn(prefix: str, dims: int, hidden: int, efficient_splits: int = 0) -> Layout:
    if not efficient_splits:
        return {**linear(f'{prefix}.layers.0.0', dims, hidden),
                **linear(f'{prefix}.layers.1', hidden, dims)}
    out: Layout = {}
    part = hidden // efficient_splits
    for s in range(efficient_splits):
        out.update(linear(f'{prefix}.fc1_{s}', dims, part))
        out.update(linear(f'{prefix}.fc2_{s}', part, dims, bias=False))
    out[f'{prefix}.fc2_bias'] = (dims, )
    return out


def layer(prefix: str, order: Sequence[str], dims: int, hidden: int, attention) -> Layout:
    """An mmcv 1.x BaseTransformerLayer; ``attention(kind, prefix)`` gives each attention."""
    out: Layout = {}
    n_attn = n_norm = 0
    for op in order:
        if op in ('self_attn', 'cross_attn'):
            out.update(attention(op, f'{prefix}.attentions.{n_attn}'))
            n_attn += 1
        elif op == 'norm':
            out.update(norm(f'{prefix}.norms.{n_norm}', dims))
            n_norm += 1
        elif op == 'ffn':
            out.update(attention('ffn', f'{prefix}.ffns.0'))
    return out


# ----------------------------------------------------------------------------- mmdet 2.x
def fpn(in_channels: Sequence[int], out: int = 256) -> Layout:
    layout: Layout = {}
    for i, cin in enumerate(in_channels):
        layout.update(conv_module(f'neck.lateral_convs.{i}', cin, out, 1))
        layout.update(conv_module(f'neck.fpn_convs.{i}', out, out, 3))
    return layout


def rpn_head(channels: int = 256, anchors: int = 3) -> Layout:
    return {**conv('rpn_head.rpn_conv', channels, channels, 3),
            **conv('rpn_head.rpn_cls', channels, anchors, 1),
            **conv('rpn_head.rpn_reg', channels, 4 * anchors, 1)}


def fcn_mask_head(prefix: str, classes: int, channels: int = 256) -> Layout:
    layout: Layout = {}
    for i in range(4):
        layout.update(conv_module(f'{prefix}.convs.{i}', channels, channels, 3))
    layout[f'{prefix}.upsample.weight'] = (channels, channels, 2, 2)  # ConvTranspose2d
    layout[f'{prefix}.upsample.bias'] = (channels, )
    layout.update(conv(f'{prefix}.conv_logits', channels, classes, 1))
    return layout


def mask_rcnn(arch: Union[str, dict], classes: int = 80, fc: int = 1024) -> Layout:
    """Official Mask R-CNN T/S/B (mask_rcnn_internimage_*_fpn_{1x,3x}_coco.py)."""
    layout = internimage(arch)
    layout.update(fpn(widths(arch)))
    layout.update(rpn_head())
    box = 'roi_head.bbox_head'
    layout.update(linear(f'{box}.shared_fcs.0', 256 * 7 * 7, fc))
    layout.update(linear(f'{box}.shared_fcs.1', fc, fc))
    layout.update(linear(f'{box}.fc_cls', fc, classes + 1))
    layout.update(linear(f'{box}.fc_reg', fc, 4 * classes))
    layout.update(fcn_mask_head('roi_head.mask_head', classes))
    return layout


def cascade(arch: Union[str, dict], classes: int = 80, fc: int = 1024) -> Layout:
    """Official Cascade Mask R-CNN L/XL: 3 stages of 4conv-1fc SyncBN box heads."""
    layout = internimage(arch)
    layout.update(fpn(widths(arch)))
    layout.update(rpn_head())
    for stage in range(3):
        box = f'roi_head.bbox_head.{stage}'
        for i in range(4):
            layout.update(conv_module(f'{box}.shared_convs.{i}', 256, 256, 3, 'bn'))
        layout.update(linear(f'{box}.shared_fcs.0', 256 * 7 * 7, fc))
        layout.update(linear(f'{box}.fc_cls', fc, classes + 1))
        layout.update(linear(f'{box}.fc_reg', fc, 4 * classes))
        layout.update(fcn_mask_head(f'roi_head.mask_head.{stage}', classes))
    return layout


def channel_mapper(prefix: str, in_channels: Sequence[int], out: int, num_outs: int = 4
                   ) -> Layout:
    layout: Layout = {}
    for i, cin in enumerate(in_channels):
        layout.update(conv_module(f'{prefix}.convs.{i}', cin, out, 1, 'gn'))
    for i in range(num_outs - len(in_channels)):
        cin = in_channels[-1] if i == 0 else out
        layout.update(conv_module(f'{prefix}.extra_convs.{i}', cin, out, 3, 'gn'))
    return layout


DINO_DIMS = dict(dims=256, hidden=2048, heads=8, levels=4, points=4, encoder_layers=6,
                 decoder_layers=6, queries=900, neck=256)


def dino_head(classes: int, dims: int = 256, hidden: int = 2048, heads: int = 8,
              levels: int = 4, points: int = 4, encoder_layers: int = 6,
              decoder_layers: int = 6, queries: int = 900, efficient_splits: int = 0,
              **_) -> Layout:
    """``bbox_head.*`` of the official DINOHead / CBDINOHead."""
    def attention(kind, prefix):
        if kind == 'ffn':
            return ffn(prefix, dims, hidden, efficient_splits)
        if kind == 'self_attn' and 'decoder' in prefix:
            return mha(prefix, dims)
        return msda(prefix, dims, heads, levels, points)

    t = 'bbox_head.transformer'
    layout: Layout = {}
    for i in range(encoder_layers):
        layout.update(layer(f'{t}.encoder.layers.{i}', ('self_attn', 'norm', 'ffn', 'norm'),
                            dims, hidden, attention))
    for i in range(decoder_layers):
        layout.update(layer(f'{t}.decoder.layers.{i}', ('self_attn', 'norm', 'cross_attn',
                                                        'norm', 'ffn', 'norm'),
                            dims, hidden, attention))
    layout.update(linear(f'{t}.decoder.ref_point_head.0', 2 * dims, dims))
    layout.update(linear(f'{t}.decoder.ref_point_head.2', dims, dims))
    layout.update(norm(f'{t}.decoder.norm', dims))
    layout[f'{t}.level_embeds'] = (levels, dims)
    layout.update(linear(f'{t}.enc_output', dims, dims))
    layout.update(norm(f'{t}.enc_output_norm', dims))
    layout[f'{t}.query_embed.weight'] = (queries, dims)
    for i in range(decoder_layers + 1):
        layout.update(linear(f'bbox_head.cls_branches.{i}', dims, classes))
        layout.update(linear(f'bbox_head.reg_branches.{i}.0', dims, dims))
        layout.update(linear(f'bbox_head.reg_branches.{i}.2', dims, dims))
        layout.update(linear(f'bbox_head.reg_branches.{i}.4', dims, 4))
    layout['bbox_head.label_embedding.weight'] = (classes, dims)
    return layout


def dino(arch: Union[str, dict], classes: int = 80, composite: bool = False,
         efficient_ffn: bool = False, **dims) -> Layout:
    """Official DINO (T/L/H/G) or, with ``composite``, CB-InternImage DINO (4 scales: stages
    1-3 of the backbone + one extra level)."""
    d = {**DINO_DIMS, **dims}
    w = widths(arch)
    if composite:
        layout = internimage(arch, 'backbone.cb_modules.0.')
        layout.update(internimage(arch, 'backbone.cb_modules.1.', stem=False))
        for i in range(4):
            layout[f'backbone.cb_modules.1.gamma{i}'] = (w[i], )
            for j in range(1, 4 - i):
                layout.update(conv(f'backbone.cb_linears.{i}.{j}', w[i + j], w[i], 1))
        neck = 'neck.0'
    else:
        layout = internimage(arch)
        neck = 'neck'
    layout.update(channel_mapper(neck, w[1:], d['neck'], d['levels']))
    layout.update(dino_head(classes, efficient_splits=4 if efficient_ffn else 0, **d))
    return layout


# ----------------------------------------------------------------------------- mmseg 0.x
def upernet(arch: Union[str, dict], classes: int = 150, channels: int = 512,
            aux_channels: int = 256) -> Layout:
    """Official UperNet T..H (upernet_internimage_*_160k_ade20k.py)."""
    w = widths(arch)
    layout = internimage(arch)
    h = 'decode_head'
    for i in range(4):  # pool scales 1, 2, 3, 6
        layout.update(conv_module(f'{h}.psp_modules.{i}.1', w[3], channels, 1, 'bn'))
    layout.update(conv_module(f'{h}.bottleneck', w[3] + 4 * channels, channels, 3, 'bn'))
    for i in range(3):
        layout.update(conv_module(f'{h}.lateral_convs.{i}', w[i], channels, 1, 'bn'))
        layout.update(conv_module(f'{h}.fpn_convs.{i}', channels, channels, 3, 'bn'))
    layout.update(conv_module(f'{h}.fpn_bottleneck', 4 * channels, channels, 3, 'bn'))
    layout.update(conv(f'{h}.conv_seg', channels, classes, 1))
    layout.update(conv_module('auxiliary_head.convs.0', w[2], aux_channels, 3, 'bn'))
    layout.update(conv('auxiliary_head.conv_seg', aux_channels, classes, 1))
    return layout


MASK2FORMER_DIMS = dict(dims=1024, hidden=4096, heads=32, levels=3, points=4,
                        encoder_layers=6, decoder_layers=9, queries=200)


def mask2former(arch: Union[str, dict], classes: int, dims: int = 1024, hidden: int = 4096,
                heads: int = 32, levels: int = 3, points: int = 4, encoder_layers: int = 6,
                decoder_layers: int = 9, queries: int = 200) -> Layout:
    """Official Mask2Former-H (mask2former_internimage_h_896_80k_*.py)."""
    w = widths(arch)
    layout = internimage(arch)
    p = 'decode_head.pixel_decoder'

    def attention(kind, prefix):
        if kind == 'ffn':
            return ffn(prefix, dims, hidden)
        return msda(prefix, dims, heads, levels, points) if 'pixel_decoder' in prefix else \
            mha(prefix, dims)

    for i in range(levels):
        layout.update(conv_module(f'{p}.input_convs.{i}', w[3 - i], dims, 1, 'gn', bias=True))
    for i in range(encoder_layers):
        layout.update(layer(f'{p}.encoder.layers.{i}', ('self_attn', 'norm', 'ffn', 'norm'),
                            dims, hidden, attention))
    layout[f'{p}.level_encoding.weight'] = (levels, dims)
    layout.update(conv_module(f'{p}.lateral_convs.0', w[0], dims, 1, 'gn'))
    layout.update(conv_module(f'{p}.output_convs.0', dims, dims, 3, 'gn'))
    layout.update(conv(f'{p}.mask_feature', dims, dims, 1))
    d = 'decode_head.transformer_decoder'
    for i in range(decoder_layers):
        layout.update(layer(f'{d}.layers.{i}', ('cross_attn', 'norm', 'self_attn', 'norm',
                                                'ffn', 'norm'), dims, hidden, attention))
    layout.update(norm(f'{d}.post_norm', dims))
    layout['decode_head.query_embed.weight'] = (queries, dims)
    layout['decode_head.query_feat.weight'] = (queries, dims)
    layout['decode_head.level_embed.weight'] = (levels, dims)
    layout.update(linear('decode_head.cls_embed', dims, classes + 1))
    for i in (0, 2, 4):
        layout.update(linear(f'decode_head.mask_embed.{i}', dims, dims))
    return layout
