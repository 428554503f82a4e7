"""Official-format InternImage state dicts, written from internimage.md section 2.4 alone.

Used to test that official checkpoints land in the right m3i_mm parameters: keys and
shapes follow the documented official layout (not m3i_mm's code), values are random and
distinct. ``EXPECTED`` is the test's own statement of where each official key must go.
"""
import re
from typing import Dict, List, Optional, Sequence

import torch

# official key pattern -> m3i_mm key (our names), checked key by key in the tests
EXPECTED = [
    (r'^patch_embed\.conv([12])\.(weight|bias)$', r'backbone.patch_embed.conv\1.\2'),
    (r'^patch_embed\.norm([12])\.1\.(weight|bias)$', r'backbone.patch_embed.norm\1.\2'),
    (r'^(levels\.\d+\.blocks\.\d+)\.(norm[12]|res_post_norm[12])\.0\.(weight|bias)$',
     r'backbone.\1.\2.\3'),
    (r'^(levels\.\d+\.blocks\.\d+)\.dcn\.dw_conv\.0\.(weight|bias)$',
     r'backbone.\1.dcn.dw_conv.conv.\2'),
    (r'^(levels\.\d+\.blocks\.\d+)\.dcn\.dw_conv\.1\.1\.(weight|bias)$',
     r'backbone.\1.dcn.dw_conv.norm.\2'),
    (r'^(levels\.\d+\.blocks\.\d+)\.dcn\.(offset|mask|input_proj|output_proj)\.(weight|bias)$',
     r'backbone.\1.dcn.\2.\3'),
    (r'^(levels\.\d+\.blocks\.\d+)\.dcn\.(center_feature_scale_proj_(weight|bias))$',
     r'backbone.\1.dcn.\2'),
    (r'^(levels\.\d+\.blocks\.\d+)\.mlp\.(fc[12])\.(weight|bias)$', r'backbone.\1.mlp.\2.\3'),
    (r'^(levels\.\d+\.blocks\.\d+)\.(gamma[12])$', r'backbone.\1.\2'),
    (r'^(levels\.\d+)\.norm\.0\.(weight|bias)$', r'backbone.\1.norm.\2'),
    (r'^(levels\.2)\.post_norms\.(\d+)\.0\.(weight|bias)$', r'backbone.\1.post_norms.\2.\3'),
    (r'^(levels\.\d+)\.downsample\.conv\.weight$', r'backbone.\1.downsample.conv.weight'),
    (r'^(levels\.\d+)\.downsample\.norm\.1\.(weight|bias)$', r'backbone.\1.downsample.norm.\2'),
    (r'^conv_head\.0\.weight$', 'neck.conv.weight'),
    (r'^conv_head\.1\.0\.(\w+)$', r'neck.bn.\1'),
    (r'^head\.(weight|bias)$', r'head.fc.\1'),
    (r'^dcnv3_head_x4\.0\.(weight|bias)$', r'neck.fusion.stage4_proj.\1'),
    (r'^dcnv3_head_x3\.(weight|bias)$', r'neck.fusion.stage3_proj.\1'),
    (r'^clip_projector\.norm1_([qkv])\.0\.(weight|bias)$', r'neck.attn_pool.norm_\1.\2'),
    (r'^clip_projector\.cross_dcn\.([qkv])\.weight$', r'neck.attn_pool.\1.weight'),
    (r'^clip_projector\.cross_dcn\.([qkv])_bias$', r'neck.attn_pool.\1_bias'),
    (r'^clip_projector\.cross_dcn\.proj\.(weight|bias)$', r'neck.attn_pool.proj.\1'),
    (r'^fc_norm\.0\.(weight|bias)$', r'neck.fc_norm.\1'),
    # the iNaturalist classifier's metadata branch (intern_image_meta_former.py)
    (r'^meta_head_1\.([02])\.(weight|bias)$', r'head.meta_encoders.0.\1.\2'),
    (r'^meta_head_2\.([02])\.(weight|bias)$', r'head.meta_encoders.1.\1.\2'),
    (r'^meta_head_1\.3\.w([12])\.(weight|bias)$', r'head.meta_encoders.0.3.fc\1.\2'),
    (r'^meta_head_2\.3\.w([12])\.(weight|bias)$', r'head.meta_encoders.1.3.fc\1.\2'),
    (r'^meta_head_1\.3\.norm_fn([12])\.(weight|bias)$', r'head.meta_encoders.0.3.norm\1.\2'),
    (r'^meta_head_2\.3\.norm_fn([12])\.(weight|bias)$', r'head.meta_encoders.1.3.norm\1.\2'),
    (r'^meta_norm\.(weight|bias)$', r'head.meta_norm.\1'),
    (r'^meta_head\.(weight|bias)$', r'head.meta_fc.\1'),
]


def expected_name(official_key: str) -> str:
    for pattern, repl in EXPECTED:
        if re.match(pattern, official_key):
            return re.sub(pattern, repl, official_key)
    raise KeyError(f'the test table has no rule for {official_key}')


def official_shapes(channels: int, depths: Sequence[int], groups: Sequence[int], *,
                    layer_scale: bool, post_norm: bool, res_post_norm: bool = False,
                    dw_kernel_size: int = 3, post_norm_ids: Optional[List[int]] = None,
                    center_feature_scale: bool = False, clip_head: bool = False,
                    embed_dim: int = 1024, clip_dim: int = 768,
                    num_classes: int = 1000) -> Dict[str, tuple]:
    """Official key -> shape, following internimage.md section 2.4."""
    shapes: Dict[str, tuple] = {}
    c1 = channels
    shapes['patch_embed.conv1.weight'] = (c1 // 2, 3, 3, 3)
    shapes['patch_embed.conv1.bias'] = (c1 // 2, )
    shapes['patch_embed.norm1.1.weight'] = shapes['patch_embed.norm1.1.bias'] = (c1 // 2, )
    shapes['patch_embed.conv2.weight'] = (c1, c1 // 2, 3, 3)
    shapes['patch_embed.conv2.bias'] = (c1, )
    shapes['patch_embed.norm2.1.weight'] = shapes['patch_embed.norm2.1.bias'] = (c1, )
    for i, (depth, g) in enumerate(zip(depths, groups)):
        c = c1 * 2**i
        for j in range(depth):
            b = f'levels.{i}.blocks.{j}.'
            for name in ('norm1.0', 'norm2.0', 'dcn.dw_conv.1.1'):
                shapes[b + name + '.weight'] = shapes[b + name + '.bias'] = (c, )
            shapes[b + 'dcn.dw_conv.0.weight'] = (c, 1, dw_kernel_size, dw_kernel_size)
            shapes[b + 'dcn.dw_conv.0.bias'] = (c, )
            shapes[b + 'dcn.offset.weight'] = (g * 9 * 2, c)
            shapes[b + 'dcn.offset.bias'] = (g * 9 * 2, )
            shapes[b + 'dcn.mask.weight'] = (g * 9, c)
            shapes[b + 'dcn.mask.bias'] = (g * 9, )
            for name in ('input_proj', 'output_proj'):
                shapes[b + f'dcn.{name}.weight'] = (c, c)
                shapes[b + f'dcn.{name}.bias'] = (c, )
            if center_feature_scale:
                shapes[b + 'dcn.center_feature_scale_proj_weight'] = (g, c)
                shapes[b + 'dcn.center_feature_scale_proj_bias'] = (g, )
            shapes[b + 'mlp.fc1.weight'] = (4 * c, c)
            shapes[b + 'mlp.fc1.bias'] = (4 * c, )
            shapes[b + 'mlp.fc2.weight'] = (c, 4 * c)
            shapes[b + 'mlp.fc2.bias'] = (c, )
            if layer_scale:
                shapes[b + 'gamma1'] = shapes[b + 'gamma2'] = (c, )
            elif res_post_norm and not post_norm:
                for name in ('res_post_norm1.0', 'res_post_norm2.0'):
                    shapes[b + name + '.weight'] = shapes[b + name + '.bias'] = (c, )
        if not post_norm or center_feature_scale:
            shapes[f'levels.{i}.norm.0.weight'] = shapes[f'levels.{i}.norm.0.bias'] = (c, )
        if i == 2 and post_norm_ids:
            for k in range(len(post_norm_ids)):
                shapes[f'levels.2.post_norms.{k}.0.weight'] = (c, )
                shapes[f'levels.2.post_norms.{k}.0.bias'] = (c, )
        if i < 3:
            shapes[f'levels.{i}.downsample.conv.weight'] = (2 * c, c, 3, 3)
            shapes[f'levels.{i}.downsample.norm.1.weight'] = (2 * c, )
            shapes[f'levels.{i}.downsample.norm.1.bias'] = (2 * c, )
    c3, c4 = c1 * 4, c1 * 8
    if num_classes:
        if clip_head:
            shapes['dcnv3_head_x4.0.weight'] = (4 * embed_dim, c4, 1, 1)
            shapes['dcnv3_head_x4.0.bias'] = (4 * embed_dim, )
            shapes['dcnv3_head_x3.weight'] = (embed_dim, c3, 1, 1)
            shapes['dcnv3_head_x3.bias'] = (embed_dim, )
            for x in 'qkv':
                shapes[f'clip_projector.norm1_{x}.0.weight'] = (embed_dim, )
                shapes[f'clip_projector.norm1_{x}.0.bias'] = (embed_dim, )
                shapes[f'clip_projector.cross_dcn.{x}.weight'] = (embed_dim, embed_dim)
                shapes[f'clip_projector.cross_dcn.{x}_bias'] = (embed_dim, )
            shapes['clip_projector.cross_dcn.proj.weight'] = (clip_dim, embed_dim)
            shapes['clip_projector.cross_dcn.proj.bias'] = (clip_dim, )
            shapes['fc_norm.0.weight'] = shapes['fc_norm.0.bias'] = (clip_dim, )
            shapes['head.weight'] = (num_classes, clip_dim)
        else:
            hidden = int(c4 * 1.5)
            shapes['conv_head.0.weight'] = (hidden, c4, 1, 1)
            for name in ('weight', 'bias', 'running_mean', 'running_var'):
                shapes[f'conv_head.1.0.{name}'] = (hidden, )
            shapes['conv_head.1.0.num_batches_tracked'] = ()
            shapes['head.weight'] = (num_classes, hidden)
        shapes['head.bias'] = (num_classes, )
    return shapes


def random_state_dict(shapes: Dict[str, tuple], seed: int = 0) -> Dict[str, torch.Tensor]:
    """Distinct random values per tensor (so a tensor in the wrong place is detected)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.tensor(7)
        else:
            state[key] = torch.rand(shape, generator=gen) + 0.5
    return state
