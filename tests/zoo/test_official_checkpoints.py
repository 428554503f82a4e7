"""Official detection and segmentation checkpoints load strictly through ``m3i://NAME``.

Three kinds of evidence, none needing the real files:

1. Every detection/segmentation entry of the index, at full size: a checkpoint with exactly
   the official key names and shapes (``official_layouts``, written from the official
   configs and the mmcv 1.x / mmdet 2.x / mmseg 0.x module definitions) is served from a
   loopback server and loaded by ``load_checkpoint(model, 'm3i://NAME', strict=True)`` into
   the model of the entry's ``Config``, built on the meta device (shapes without memory), with
   the entry's own converter. So: the converter named in the index turns the official layout
   into exactly our model's keys with the right shapes ("as is" families: only the backbone
   is renamed).
2. Per family, a tiny variant with real, distinct values: every official tensor lands in the
   parameter this test says it must (the expected places are stated here, independently of
   the converters).
3. Numerics in float64: the merged InternImage-G EfficientFFN computes the official
   function, and a converted official Mask2Former decoder layer (cross-attention first)
   computes what the official layer computes.
"""
import copy
import io
import os.path as osp
import re
from typing import Dict, Optional

import pytest
import torch
import torch.nn.functional as F
import yaml
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import load_checkpoint

from m3i_mm.zoo import load_index
from m3i_mm.zoo.index import DEFAULT_INDEX
from m3i_mm.zoo.official_heads import merge_efficient_ffns
from tests.configs.conftest import memoise_external_config_lookup  # noqa: F401  (speed)
from tests.configs.test_all_configs import walk_dicts
from tests.conftest import REPO
from tests.models.backbones.official_checkpoint import expected_name, random_state_dict
from tests.zoo import official_layouts as layouts

CLASSIFICATION = ('InternImage', 'M3I')  # collections of the backbone entries

# entry -> (layout, keyword arguments of the layout: facts of the official config). The
# config is the entry's `Config`, or the one named here.
ENTRIES: Dict[str, tuple] = {
    **{f'mask_rcnn_internimage_{v}_fpn_{s}_coco': (layouts.mask_rcnn, dict(arch=v))
       for v in 'tsb' for s in ('1x', '3x')},
    **{f'cascade_internimage_{v}_fpn_{s}_coco': (layouts.cascade, dict(arch=v))
       for v in ('l', 'xl') for s in ('1x', '3x')},
    'dino_4scale_internimage_t_1x_coco': (layouts.dino, dict(arch='t')),
    'dino_4scale_internimage_l_1x_coco_layer_wise_lr': (layouts.dino, dict(arch='l')),
    'dino_4scale_internimage_l_1x_coco_0.1x_backbone_lr': (layouts.dino, dict(arch='l')),
    'dino_4scale_internimage_h_objects365_coco': (layouts.dino, dict(arch='h')),
    'dino_4scale_internimage_g_objects365_coco': (layouts.dino,
                                                  dict(arch='g', efficient_ffn=True)),
    'dino_4scale_cbinternimage_h_objects365_coco': (layouts.dino,
                                                    dict(arch='h', composite=True)),
    'dino_4scale_cbinternimage_h_objects365_80classes': (layouts.dino,
                                                         dict(arch='h', composite=True)),
    'dino_4scale_cbinternimage_h_objects365_lvis': (layouts.dino, dict(
        arch='h', composite=True, classes=1203)),
    'upernet_internimage_t_512_160k_ade20k': (layouts.upernet, dict(arch='t')),
    'upernet_internimage_s_512_160k_ade20k': (layouts.upernet, dict(arch='s')),
    'upernet_internimage_b_512_160k_ade20k': (layouts.upernet, dict(arch='b')),
    'upernet_internimage_l_640_160k_ade20k': (layouts.upernet, dict(arch='l')),
    'upernet_internimage_xl_640_160k_ade20k': (layouts.upernet, dict(arch='xl')),
    'upernet_internimage_h_896_160k_ade20k': (layouts.upernet, dict(arch='h')),
    'mask2former_internimage_h_896_80k_cocostuff164k': (layouts.mask2former,
                                                        dict(arch='h', classes=171)),
    'mask2former_internimage_h_896_80k_cocostuff2ade20k': (layouts.mask2former,
                                                           dict(arch='h', classes=150)),
}
#: The 80-class Objects365 detector is the official `load_from` of the CB-H COCO fine-tuning.
CONFIG_OF = {'dino_4scale_cbinternimage_h_objects365_80classes':
             'configs/dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py'}


def repo_index():
    return load_index([DEFAULT_INDEX])


def metafile_record(name: str) -> dict:
    """The entry's item in its metafile, as written."""
    entry = repo_index()[name]
    with open(entry.source) as f:
        return copy.deepcopy(next(m for m in yaml.safe_load(f)['Models'] if m['Name'] == name))


def serve_as_entry(server, write_index, monkeypatch, record: dict, checkpoint) -> str:
    """Serve ``checkpoint`` as the weights of a copy of a metafile ``record`` (same name and
    converter) in an index that replaces the repository's; returns the m3i:// name."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    record = dict(record, Weights=server.serve(f'/hub/{record["Name"]}.pth',
                                               buffer.getvalue()))
    monkeypatch.setattr('m3i_mm.zoo.index.DEFAULT_INDEX', osp.join(REPO, 'no-such-index.yml'))
    write_index([record])
    return f'm3i://{record["Name"]}'


def build_model(cfg: Config, device: Optional[str] = None):
    """The config's model (backbone ``init_cfg`` dropped: nothing is downloaded)."""
    model_cfg = copy.deepcopy(cfg.model)
    for node in walk_dicts(model_cfg):
        if isinstance(node.get('init_cfg'), dict) and node['init_cfg'].get('type') == 'Pretrained':
            node['init_cfg'] = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        if device is None:
            return MODELS.build(model_cfg)
        with torch.device(device):
            # modules that create tensors with legacy constructors ignore the device context
            return MODELS.build(model_cfg).to(device)


def describe_difference(expected: Dict[str, tuple], actual: Dict[str, tuple]) -> str:
    missing = sorted(set(actual) - set(expected))
    extra = sorted(set(expected) - set(actual))
    shapes = [f'{k}: {expected[k]} vs {actual[k]}' for k in sorted(set(expected) & set(actual))
              if tuple(expected[k]) != tuple(actual[k])]
    return (f'{len(missing)} model keys not covered {missing[:8]}; {len(extra)} converted keys '
            f'the model lacks {extra[:8]}; shape mismatches {shapes[:8]}')


# ------------------------------------------------------------------------ 1. full size
def test_every_downstream_entry_is_proven_here():
    entries = repo_index()
    downstream = {n for n, e in entries.items() if e.collection not in CLASSIFICATION}
    assert downstream == set(ENTRIES), (
        f'entries without a layout proof: {sorted(downstream - set(ENTRIES))}; proofs of '
        f'entries not in the index: {sorted(set(ENTRIES) - downstream)}')


@pytest.mark.parametrize('name', sorted(ENTRIES))
def test_official_layout_loads_strictly_at_full_size(name, server, write_index, monkeypatch):
    layout_fn, facts = ENTRIES[name]
    entry = repo_index()[name]
    config = CONFIG_OF.get(name, entry.config)
    path = osp.join(REPO, config)
    if not osp.isfile(path):
        pytest.fail(f'{name}: its config {config} does not exist')
    cfg = Config.fromfile(path)
    model = build_model(cfg, device='meta')
    official = {k: torch.empty(shape, device='meta')
                for k, shape in layout_fn(**facts).items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    from m3i_mm.zoo import apply_converter
    converted = apply_converter(entry.converter, {'state_dict': official})['state_dict']
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours, describe_difference(
        {k: tuple(v.shape) for k, v in converted.items()}, ours)
    # ... and the real loading path: m3i://NAME, the entry's converter, mmengine strict load
    uri = serve_as_entry(server, write_index, monkeypatch, metafile_record(name),
                         {'state_dict': official, 'meta': {'epoch': 12}})
    load_checkpoint(model, uri, strict=True)


def test_strict_loading_names_what_is_missing(server, write_index, monkeypatch):
    """A file that does not cover the model is refused, naming the missing key."""
    name = 'mask_rcnn_internimage_t_fpn_1x_coco'
    model = build_model(Config.fromfile(osp.join(REPO, repo_index()[name].config)), 'meta')
    official = {k: torch.empty(s, device='meta') for k, s in layouts.mask_rcnn('t').items()}
    del official['roi_head.mask_head.conv_logits.weight']
    uri = serve_as_entry(server, write_index, monkeypatch, metafile_record(name),
                         {'state_dict': official})
    with pytest.raises(RuntimeError, match=r'missing keys in source state_dict: '
                                           r'roi_head\.mask_head\.conv_logits\.weight'):
        load_checkpoint(model, uri, strict=True)


# ---------------------------------------------------------------- 2. tiny, real values
TINY = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16])


def tiny_arch(variant: str) -> dict:
    """The variant's settings (norms, layer scale of the downstream configs, ...) at tiny
    width and depth."""
    settings = layouts.arch_settings(variant)
    arch = dict(settings, **TINY)
    arch['layer_scale'] = 1.0 if layouts.DOWNSTREAM_LAYER_SCALE[variant] else None
    if settings['level2_post_norm_block_ids']:
        arch['level2_post_norm_block_ids'] = [1]
    return arch


def tiny_config(config: str, arch: dict, overrides: dict) -> Config:
    """The config with the tiny backbone (PyTorch DCNv3 path) and ``overrides`` merged."""
    cfg = Config.fromfile(osp.join(REPO, config))
    cfg.model.backbone.arch = arch
    cfg.merge_from_dict({'model.backbone.dcn_backend': 'pytorch',
                         'model.backbone.with_cp': False, **overrides})
    return cfg


# mmdet 3.x's DINO decoder encodes reference points with 128 sine features per coordinate,
# so its width stays 256 (= 2 x 128); the rest is small.
TINY_DINO = dict(dims=256, hidden=64, heads=4, levels=4, points=2, encoder_layers=1,
                 decoder_layers=2, queries=10, neck=256)


def dino_overrides(w, d=TINY_DINO, classes=4) -> dict:
    attn = dict(embed_dims=d['dims'], num_heads=d['heads'], num_levels=d['levels'],
                num_points=d['points'])
    ffn = dict(embed_dims=d['dims'], feedforward_channels=d['hidden'])
    return {'model.num_queries': d['queries'],
            'model.neck.in_channels': w[1:], 'model.neck.out_channels': d['neck'],
            'model.encoder.num_layers': d['encoder_layers'],
            'model.encoder.layer_cfg.self_attn_cfg': attn,
            'model.encoder.layer_cfg.ffn_cfg': ffn,
            'model.decoder.num_layers': d['decoder_layers'],
            'model.decoder.layer_cfg.self_attn_cfg': dict(embed_dims=d['dims'],
                                                          num_heads=d['heads']),
            'model.decoder.layer_cfg.cross_attn_cfg': attn,
            'model.decoder.layer_cfg.ffn_cfg': ffn,
            'model.positional_encoding.num_feats': d['dims'] // 2,
            'model.bbox_head.num_classes': classes, 'model.bbox_head.embed_dims': d['dims'],
            'model.dn_cfg.group_cfg.num_dn_queries': 4,
            'model.test_cfg.max_per_img': d['queries']}


TINY_M2F = dict(dims=32, hidden=64, heads=4, levels=3, points=2, encoder_layers=1,
                decoder_layers=3, queries=6)


def mask2former_overrides(w, d=TINY_M2F, classes=5) -> dict:
    h = 'model.decode_head.'
    return {h + 'in_channels': w, h + 'feat_channels': d['dims'],
            h + 'out_channels': d['dims'], h + 'num_queries': d['queries'],
            h + 'num_classes': classes,
            h + 'loss_cls.class_weight': [1.0] * classes + [0.1],
            h + 'pixel_decoder.encoder.num_layers': d['encoder_layers'],
            h + 'pixel_decoder.encoder.layer_cfg.self_attn_cfg': dict(
                embed_dims=d['dims'], num_heads=d['heads'], num_levels=d['levels'],
                num_points=d['points']),
            h + 'pixel_decoder.encoder.layer_cfg.ffn_cfg': dict(
                embed_dims=d['dims'], feedforward_channels=d['hidden']),
            h + 'pixel_decoder.positional_encoding.num_feats': d['dims'] // 2,
            h + 'positional_encoding.num_feats': d['dims'] // 2,
            h + 'transformer_decoder.num_layers': d['decoder_layers'],
            h + 'transformer_decoder.layer_cfg.self_attn_cfg': dict(
                embed_dims=d['dims'], num_heads=d['heads']),
            h + 'transformer_decoder.layer_cfg.cross_attn_cfg': dict(
                embed_dims=d['dims'], num_heads=d['heads']),
            h + 'transformer_decoder.layer_cfg.ffn_cfg': dict(
                embed_dims=d['dims'], feedforward_channels=d['hidden'])}


# Where each official head key must land (the test's statement; backbone keys follow
# tests/models/backbones/official_checkpoint.EXPECTED under their prefix).
DINO_EXPECTED = [
    (r'^bbox_head\.transformer\.(en|de)coder\.layers\.(\d+)\.attentions\.0\.(.*)$',
     r'\1coder.layers.\2.self_attn.\3'),
    (r'^bbox_head\.transformer\.decoder\.layers\.(\d+)\.attentions\.1\.(.*)$',
     r'decoder.layers.\1.cross_attn.\2'),
    (r'^bbox_head\.transformer\.(en|de)coder\.layers\.(\d+)\.ffns\.0\.(.*)$',
     r'\1coder.layers.\2.ffn.\3'),
    (r'^bbox_head\.transformer\.(en|de)coder\.layers\.(\d+)\.norms\.(\d)\.(.*)$',
     r'\1coder.layers.\2.norms.\3.\4'),
    (r'^bbox_head\.transformer\.decoder\.ref_point_head\.0\.(.*)$',
     r'decoder.ref_point_head.layers.0.\1'),
    (r'^bbox_head\.transformer\.decoder\.ref_point_head\.2\.(.*)$',
     r'decoder.ref_point_head.layers.1.\1'),
    (r'^bbox_head\.transformer\.decoder\.norm\.(.*)$', r'decoder.norm.\1'),
    (r'^bbox_head\.transformer\.level_embeds$', 'level_embed'),
    (r'^bbox_head\.transformer\.enc_output\.(.*)$', r'memory_trans_fc.\1'),
    (r'^bbox_head\.transformer\.enc_output_norm\.(.*)$', r'memory_trans_norm.\1'),
    (r'^bbox_head\.transformer\.query_embed\.weight$', 'query_embedding.weight'),
    (r'^bbox_head\.label_embedding\.weight$', 'dn_query_generator.label_embedding.weight'),
    (r'^neck\.0\.(.*)$', r'neck.\1'),
]
MASK2FORMER_EXPECTED = [
    (r'^(decode_head\.transformer_decoder\.layers\.\d+)\.attentions\.0\.(.*)$',
     r'\1.cross_attn.\2'),
    (r'^(decode_head\.transformer_decoder\.layers\.\d+)\.attentions\.1\.(.*)$',
     r'\1.self_attn.\2'),
    (r'^(decode_head\.pixel_decoder\.encoder\.layers\.\d+)\.attentions\.0\.(.*)$',
     r'\1.self_attn.\2'),
    (r'^(decode_head\..*\.layers\.\d+)\.ffns\.0\.(.*)$', r'\1.ffn.\2'),
]


def expected_place(key: str, head_rules) -> str:
    """Our key for an official key: backbone keys (also of either CB backbone) per the
    backbone table, head keys per ``head_rules``, anything else unchanged."""
    backbone = re.match(r'^(backbone\.(?:cb_modules\.\d+\.)?)((?:patch_embed|levels)\..*)$', key)
    if backbone:
        return backbone.group(1) + expected_name(backbone.group(2))[len('backbone.'):]
    for pattern, repl in head_rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return key


def cascade_overrides(w) -> dict:
    cfg = Config.fromfile(osp.join(REPO, FAMILIES['cascade'][0]))
    heads = [dict(head, num_classes=3, fc_out_channels=64)
             for head in cfg.model.roi_head.bbox_head]
    return {'model.neck.in_channels': w, 'model.roi_head.bbox_head': heads,
            'model.roi_head.mask_head.num_classes': 3}


FAMILIES = {
    # family: (config, variant, layout of the tiny variant, config overrides, head rules)
    'mask_rcnn': ('configs/mask_rcnn/mask-rcnn_internimage-t_fpn_1x_coco.py', 't',
                  lambda a: layouts.mask_rcnn(a, classes=3, fc=64),
                  lambda w: {'model.neck.in_channels': w,
                             'model.roi_head.bbox_head.num_classes': 3,
                             'model.roi_head.bbox_head.fc_out_channels': 64,
                             'model.roi_head.mask_head.num_classes': 3}, []),
    'cascade': ('configs/cascade_mask_rcnn/cascade-mask-rcnn_internimage-xl_fpn_1x_coco.py',
                'xl', lambda a: layouts.cascade(a, classes=3, fc=64), cascade_overrides, []),
    'upernet': ('configs/upernet/upernet_internimage-h_16xb1-160k_ade20k-896x896.py', 'h',
                lambda a: layouts.upernet(a, classes=5, channels=32, aux_channels=16),
                lambda w: {'model.decode_head.in_channels': w,
                           'model.decode_head.channels': 32,
                           'model.decode_head.num_classes': 5,
                           'model.auxiliary_head.in_channels': w[2],
                           'model.auxiliary_head.channels': 16,
                           'model.auxiliary_head.num_classes': 5}, []),
    'dino': ('configs/dino/dino-4scale_internimage-t_8xb2-layer-decay-12e_coco.py', 't',
             lambda a: layouts.dino(a, classes=4, **TINY_DINO), dino_overrides, DINO_EXPECTED),
    'cb_dino': ('configs/dino/dino-4scale_cb-internimage-h_o365-pre_64xb1-20k_coco.py', 'h',
                lambda a: layouts.dino(a, classes=4, composite=True, **TINY_DINO),
                dino_overrides, DINO_EXPECTED),
    'mask2former': ('configs/mask2former/'
                    'mask2former_internimage-h_coco-stuff164k-pre_16xb1-80k_ade20k-896x896.py',
                    'h', lambda a: layouts.mask2former(a, classes=5, **TINY_M2F),
                    mask2former_overrides, MASK2FORMER_EXPECTED),
}


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_tiny_official_checkpoint_lands_in_the_right_parameters(family, server, write_index,
                                                                 monkeypatch):
    config, variant, layout_fn, overrides_fn, head_rules = FAMILIES[family]
    arch = tiny_arch(variant)
    cfg = tiny_config(config, arch, overrides_fn(layouts.widths(arch)))
    torch.manual_seed(0)
    model = build_model(cfg)
    official = random_state_dict(layout_fn(arch), seed=11)
    index = repo_index()
    entry = next(n for n in ENTRIES if index[n].config == config)
    uri = serve_as_entry(server, write_index, monkeypatch, metafile_record(entry),
                         {'state_dict': official, 'meta': {'epoch': 1}})
    load_checkpoint(model, uri, strict=True)
    ours = model.state_dict()
    for key, value in official.items():
        assert torch.equal(ours[expected_place(key, head_rules)], value), key


# --------------------------------------------------------------------- 3. numerics
def test_merged_efficient_ffn_computes_the_official_function():
    """Official EfficientFFN: x + sum_s fc2_s(relu(fc1_s(x))) + fc2_bias (split 4, no
    dropout), in float64, against mmcv's FFN with the merged weights."""
    from mmcv.cnn.bricks.transformer import FFN
    torch.manual_seed(0)
    dims, hidden, splits = 8, 24, 4
    p = 'bbox_head.transformer.encoder.layers.0.ffns.0'
    official = {k: torch.randn(s, dtype=torch.float64)
                for k, s in layouts.ffn(p, dims, hidden, splits).items()}
    x = torch.randn(5, 3, dims, dtype=torch.float64)
    expected = x + official[f'{p}.fc2_bias']
    for s in range(splits):
        h = F.relu(x @ official[f'{p}.fc1_{s}.weight'].T + official[f'{p}.fc1_{s}.bias'])
        expected = expected + h @ official[f'{p}.fc2_{s}.weight'].T
    merged = {k[len(p) + 1:]: v for k, v in merge_efficient_ffns(official).items()}
    module = FFN(embed_dims=dims, feedforward_channels=hidden).double()
    module.load_state_dict(merged, strict=True)
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


def reference_attention(q, k, v, weights: dict, prefix: str, heads: int):
    """nn.MultiheadAttention's function, written out (batch first)."""
    w, b = weights[f'{prefix}.attn.in_proj_weight'], weights[f'{prefix}.attn.in_proj_bias']
    d = q.shape[-1]
    qp, kp, vp = (t @ w[i * d:(i + 1) * d].T + b[i * d:(i + 1) * d]
                  for i, t in enumerate((q, k, v)))

    def split(t):
        return t.view(t.shape[0], t.shape[1], heads, d // heads).transpose(1, 2)

    attn = torch.softmax(split(qp) @ split(kp).transpose(-1, -2) / (d // heads) ** 0.5, -1)
    out = (attn @ split(vp)).transpose(1, 2).reshape(q.shape)
    return out @ weights[f'{prefix}.attn.out_proj.weight'].T + \
        weights[f'{prefix}.attn.out_proj.bias']


def test_converted_mask2former_decoder_layer_computes_the_official_function():
    """Official operation order (cross_attn, norm, self_attn, norm, ffn, norm) with the
    official weights, in float64, against mmdet 3.x's Mask2Former decoder layer holding
    the converted ones: attentions.0 must be the cross-attention."""
    from mmdet.models.layers.transformer import Mask2FormerTransformerDecoderLayer

    from m3i_mm.zoo.official_heads import convert_mask2former_head
    dims, hidden, heads = 16, 32, 4
    torch.manual_seed(0)
    prefix = 'decode_head.transformer_decoder.layers.0'
    order = ('cross_attn', 'norm', 'self_attn', 'norm', 'ffn', 'norm')

    def attention(kind, p):
        return layouts.ffn(p, dims, hidden) if kind == 'ffn' else layouts.mha(p, dims)

    official = {k: torch.randn(s, dtype=torch.float64) * 0.3
                for k, s in layouts.layer(prefix, order, dims, hidden, attention).items()}
    query, query_pos = torch.randn(2, 5, dims, dtype=torch.float64), torch.randn(
        2, 5, dims, dtype=torch.float64)
    memory, memory_pos = torch.randn(2, 7, dims, dtype=torch.float64), torch.randn(
        2, 7, dims, dtype=torch.float64)

    def layer_norm(x, i):
        return F.layer_norm(x, (dims, ), official[f'{prefix}.norms.{i}.weight'],
                            official[f'{prefix}.norms.{i}.bias'])

    x = query + reference_attention(query + query_pos, memory + memory_pos, memory, official,
                                    f'{prefix}.attentions.0', heads)
    x = layer_norm(x, 0)
    x = x + reference_attention(x + query_pos, x + query_pos, x, official,
                                f'{prefix}.attentions.1', heads)
    x = layer_norm(x, 1)
    hidden_out = F.relu(x @ official[f'{prefix}.ffns.0.layers.0.0.weight'].T +
                        official[f'{prefix}.ffns.0.layers.0.0.bias'])
    x = x + hidden_out @ official[f'{prefix}.ffns.0.layers.1.weight'].T + \
        official[f'{prefix}.ffns.0.layers.1.bias']
    expected = layer_norm(x, 2)

    converted = convert_mask2former_head(official)
    ours = Mask2FormerTransformerDecoderLayer(
        self_attn_cfg=dict(embed_dims=dims, num_heads=heads, batch_first=True),
        cross_attn_cfg=dict(embed_dims=dims, num_heads=heads, batch_first=True),
        ffn_cfg=dict(embed_dims=dims, feedforward_channels=hidden)).double().eval()
    ours.load_state_dict({k[len(prefix) + 1:]: v for k, v in converted.items()}, strict=True)
    out = ours(query=query, key=memory, value=memory, query_pos=query_pos, key_pos=memory_pos)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_meta_written_under_numpy_1_loads(server, write_index, monkeypatch):
    """mmcv 1.x checkpoints written with numpy 1.x name numpy scalars and arrays (e.g. the
    best score in meta.hook_msgs) ``numpy.core.multiarray.*``; they load with weights_only."""
    import numpy as np
    name = 'upernet_internimage_t_512_160k_ade20k'
    official = random_state_dict(layouts.upernet('t'), seed=2)
    checkpoint = {'state_dict': official,
                  'meta': {'hook_msgs': {'best_score': np.float64(0.479),
                                         'best_ckpt': 'iter_160000.pth'},
                           'seed': np.int64(0), 'history': np.arange(3)}}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue().replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    assert data.count(b'numpy.core.multiarray\n') >= 2  # scalar and _reconstruct
    record = dict(metafile_record(name), Weights=server.serve(f'/hub/{name}.pth', data))
    monkeypatch.setattr('m3i_mm.zoo.index.DEFAULT_INDEX', osp.join(REPO, 'no-such-index.yml'))
    write_index([record])
    from m3i_mm.zoo import load_zoo_checkpoint
    loaded = load_zoo_checkpoint(name)
    assert loaded['meta']['hook_msgs']['best_score'] == np.float64(0.479)
    assert torch.equal(loaded['state_dict']['decode_head.conv_seg.weight'],
                       official['decode_head.conv_seg.weight'])
