"""CB-InternImage: the composite forward against a float64 reference written here from the
official semantics, official-checkpoint loading (strict), single-checkpoint initialisation,
layer depths, and the error paths."""
import re

import pytest
import torch
import torch.nn.functional as F

from m3i_mm.models.backbones import CBInternImage, InternImage
from m3i_mm.zoo.cb_internimage import convert_cb_internimage, is_cb_internimage
from m3i_mm.zoo.errors import ConverterError
from tests.models.backbones.official_checkpoint import (expected_name, official_shapes,
                                                        random_state_dict)

# tiny InternImage-H: post-norm blocks after stage-2 block 1, CFS, res-post-norm, dw 5x5
TINY_H = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16], layer_scale=None,
              post_norm=False, res_post_norm=True, dw_kernel_size=5,
              level2_post_norm_block_ids=[1], center_feature_scale=True)


def tiny_cb(**kwargs) -> CBInternImage:
    torch.manual_seed(0)
    model = CBInternImage(arch=TINY_H, dcn_backend='pytorch', **kwargs)
    model.init_weights()
    with torch.no_grad():  # non-trivial gates and assisting convolutions
        for i in range(4):
            getattr(model.cb_modules[1], f'gamma{i}').normal_(0, 0.5)
    return model


def reference_forward(model: CBInternImage, x: torch.Tensor):
    """Official semantics, computed through the plain InternImage stages: the assisting
    backbone on the image; before lead stage i add gamma_i * sum_{j>=i}
    nearest_resize(conv_ij(a_j)); both share the assisting stem."""
    assisting, lead = model.cb_modules
    stem = assisting.patch_embed(x)
    feats, h = [], stem
    for level in assisting.levels:
        out, h = level(h)
        feats.append(out.permute(0, 3, 1, 2))  # NCHW
    h = stem
    lead_feats = []
    for i, level in enumerate(lead.levels):
        target = feats[i].shape[-2:]
        extra = feats[i].clone()
        for j in range(1, 4 - i):
            conv = model.cb_linears[i][j]
            y = F.conv2d(feats[i + j], conv.weight, conv.bias)
            extra = extra + F.interpolate(y, size=target, mode='nearest')
        gamma = getattr(lead, f'gamma{i}')
        h = h + gamma * extra.permute(0, 2, 3, 1)
        out, h = level(h)
        lead_feats.append(out.permute(0, 3, 1, 2))
    return feats, lead_feats


@pytest.mark.parametrize('size', [(64, 64), (40, 72)])
def test_forward_matches_the_official_semantics(size):
    # both in float64: the test is about how the two backbones are composed
    model = tiny_cb(out_indices=(1, 2, 3)).double().eval()
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        assisting, lead = model(x)
        ref_a, ref_l = reference_forward(model, x)
    assert len(assisting) == len(lead) == 3
    for i, stage in enumerate((1, 2, 3)):
        assert assisting[i].shape == lead[i].shape == ref_l[stage].shape
        torch.testing.assert_close(assisting[i], ref_a[stage], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(lead[i], ref_l[stage], rtol=1e-10, atol=1e-12)


def test_zero_gates_make_the_lead_a_plain_internimage_on_the_shared_stem():
    torch.manual_seed(0)
    model = CBInternImage(arch=TINY_H, dcn_backend='pytorch', out_indices=(0, 1, 2, 3))
    model.init_weights()
    plain = InternImage(arch=TINY_H, dcn_backend='pytorch', out_indices=(0, 1, 2, 3))
    state = dict(model.cb_modules[1].state_dict())
    state.update({k: v for k, v in model.cb_modules[0].state_dict().items()
                  if k.startswith('patch_embed.')})
    missing, unexpected = plain.load_state_dict(state, strict=False)
    assert not missing and sorted(unexpected) == [f'gamma{i}' for i in range(4)]
    model.eval()
    plain.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _, lead = model(x)
        expected = plain(x)
    for a, b in zip(lead, expected):
        torch.testing.assert_close(a, b)


def test_gradients_reach_gates_connections_and_both_backbones():
    model = tiny_cb(out_indices=(1, 2, 3)).train()
    x = torch.randn(2, 3, 64, 64)
    assisting, lead = model(x)
    (sum(f.square().mean() for f in lead) + 0.5 * sum(f.mean() for f in assisting)).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert model.cb_linears[0][3].weight.grad.abs().sum() > 0
    assert model.cb_modules[1].gamma0.grad.abs().sum() > 0


def official_cb_state_dict(seed: int = 0):
    """A CB-InternImage-H checkpoint with the official key layout (mmdet 2.x detector):
    backbone.cb_modules.0 = a detection InternImage, cb_modules.1 = the same without
    patch_embed plus gamma0..3, cb_linears.i.j (1x1 convs, j >= 1), and a neck key."""
    a = TINY_H
    shapes = official_shapes(a['channels'], a['depths'], a['groups'], layer_scale=False,
                             post_norm=False, res_post_norm=True, dw_kernel_size=5,
                             post_norm_ids=a['level2_post_norm_block_ids'],
                             center_feature_scale=True, num_classes=0)
    state, expected = {}, {}
    for k in range(2):
        for key, shape in shapes.items():
            if k == 1 and key.startswith('patch_embed.'):
                continue
            official = f'backbone.cb_modules.{k}.{key}'
            ours = expected_name(key).replace('backbone.', f'backbone.cb_modules.{k}.', 1)
            state[official] = shape
            expected[official] = ours
    channels = [a['channels'] * 2**i for i in range(4)]
    for i in range(4):
        key = f'backbone.cb_modules.1.gamma{i}'
        state[key] = (channels[i], )
        expected[key] = key
        for j in range(1, 4 - i):
            for suffix, shape in (('weight', (channels[i], channels[i + j], 1, 1)),
                                  ('bias', (channels[i], ))):
                key = f'backbone.cb_linears.{i}.{j}.{suffix}'
                state[key] = shape
                expected[key] = key
    state['neck.convs.0.conv.weight'] = (8, 32, 1, 1)
    expected['neck.convs.0.conv.weight'] = 'neck.convs.0.conv.weight'
    return random_state_dict(state, seed), expected


def test_official_checkpoint_converts_and_loads_strictly(tmp_path):
    official, expected = official_cb_state_dict()
    converted = convert_cb_internimage({'state_dict': official, 'meta': {}})['state_dict']
    assert set(converted) == set(expected.values())
    for key, new in expected.items():
        assert converted[new] is official[key]
    path = str(tmp_path / 'cb.pth')
    torch.save({'state_dict': official}, path)
    model = CBInternImage(arch=TINY_H, dcn_backend='pytorch',
                          init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    own = model.state_dict()
    loaded = {k for k in own}
    assert loaded == {new[len('backbone.'):] for new in expected.values()
                      if new.startswith('backbone.')}
    for key, new in expected.items():
        if new.startswith('backbone.'):
            assert torch.equal(own[new[len('backbone.'):]], official[key]), new


def test_incomplete_cb_checkpoint_is_refused_with_the_missing_keys(tmp_path):
    official, _ = official_cb_state_dict()
    del official['backbone.cb_linears.0.2.weight']
    path = str(tmp_path / 'cb.pth')
    torch.save({'state_dict': official}, path)
    model = CBInternImage(arch=TINY_H, dcn_backend='pytorch',
                          init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    with pytest.raises(ValueError, match=r'1 missing .*cb_linears\.0\.2\.weight'):
        model.init_weights()


def test_single_internimage_checkpoint_initialises_both_backbones(tmp_path):
    torch.manual_seed(3)
    source = InternImage(arch=TINY_H, dcn_backend='pytorch')
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    path = str(tmp_path / 'backbone.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}},
               path)
    model = CBInternImage(arch=TINY_H, dcn_backend='pytorch',
                          init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    assisting, lead = model.cb_modules
    for key, value in source.state_dict().items():
        assert torch.equal(assisting.state_dict()[key], value), key
        if not key.startswith('patch_embed.'):
            assert torch.equal(lead.state_dict()[key], value), key
    for i in range(4):
        assert torch.count_nonzero(getattr(lead, f'gamma{i}')) == 0
    assert not is_cb_internimage(source.state_dict())


def test_converter_refuses_a_plain_internimage():
    with pytest.raises(ConverterError, match='not a CB-InternImage checkpoint'):
        convert_cb_internimage({'state_dict': {'backbone.patch_embed.conv1.weight':
                                               torch.zeros(1)}})


def test_layer_depth_maps_both_backbones_to_the_internimage_numbering():
    model = CBInternImage(arch=TINY_H, dcn_backend='pytorch')
    inner = model.cb_modules[0]
    for name, _ in model.named_parameters():
        layer, num = model.get_layer_depth('backbone.' + name, 'backbone.')
        assert num == inner.get_layer_depth('backbone.levels.0.blocks.0.x', 'backbone.')[1]
        match = re.match(r'cb_modules\.\d\.(.*)', name)
        if match and not match.group(1).startswith('gamma'):
            assert layer == inner.get_layer_depth(match.group(1))[0], name
        else:
            stage = int(re.search(r'(?:gamma|cb_linears\.)(\d)', name).group(1))
            first = sum(inner.depths[:stage])
            assert layer == first + 1, name


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='out_indices'):
        CBInternImage(arch=TINY_H, out_indices=(4, ))
    with pytest.raises(ValueError, match='does not support frozen_stages'):
        CBInternImage(arch=TINY_H, frozen_stages=0)
    model = CBInternImage(arch=TINY_H, dcn_backend='pytorch')
    with pytest.raises(ValueError, match='NCHW'):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(RuntimeError, match='no stem of its own'):
        model.cb_modules[1](torch.zeros(1, 3, 32, 32))


def test_full_size_cb_h_parameter_count():
    """Two InternImage-H without the lead's stem, plus the 1x1 convolutions C_{i+j} -> C_i
    (j >= 1) and one gate per channel; on the meta device."""
    with torch.device('meta'):
        cb = CBInternImage('h')
        single = InternImage('h')

    def count(module):
        return sum(p.numel() for p in module.parameters())

    widths = [320 * 2**i for i in range(4)]
    connections = sum(widths[i + j] * widths[i] + widths[i]
                      for i in range(4) for j in range(1, 4 - i))
    assert count(cb) == 2 * count(single) - count(single.patch_embed) + connections + sum(widths)
    assert 2.15e9 < count(cb) < 2.16e9  # 2.18B with the DINO head (official README)


def test_pretrained_is_accepted_like_internimage():
    assert CBInternImage(arch=TINY_H, pretrained=None).init_cfg is None
    with pytest.warns(FutureWarning, match='CBInternImage: pretrained='):
        model = CBInternImage(arch=TINY_H, pretrained='cb.pth')
    assert model.init_cfg == dict(type='Pretrained', checkpoint='cb.pth')
