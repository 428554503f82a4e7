"""InternImage: variants, forward modes, frozen stages, checkpointing, official checkpoints."""
import copy
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import ConfigDict

from m3i_mm.models.backbones import InternImage
from m3i_mm.models.necks import InternImageCLIPNeck, InternImageConvNeck
from m3i_mm.zoo.internimage import convert_internimage
from tests.conftest import REPO
from tests.models.backbones.official_checkpoint import (expected_name, official_shapes,
                                                        random_state_dict)

TINY = dict(channels=16, depths=[1, 1, 3, 1], groups=[4, 8, 16, 32])
# Each family's distinguishing settings (internimage.md section 2.3), at tiny size.
FAMILIES = {
    't': dict(layer_scale=None, post_norm=False),
    'sb': dict(layer_scale=1e-5, post_norm=True),
    'lxl': dict(layer_scale=1e-5, post_norm=True, offset_scale=2.0),
    'h': dict(layer_scale=None, post_norm=False, res_post_norm=True, dw_kernel_size=5,
              level2_post_norm_block_ids=[0, 2], center_feature_scale=True),
    'g': dict(layer_scale=None, post_norm=True, dw_kernel_size=5,
              level2_post_norm_block_ids=[0, 2], center_feature_scale=True),
}
EMBED, CLIP_DIM, CLASSES = 32, 24, 10


def tiny(family: str, **kwargs) -> InternImage:
    return InternImage(arch={**TINY, **FAMILIES[family]}, **kwargs)


def test_variants_match_official_parameter_and_key_counts():
    """Full-size variants with the official 1000-class heads (internimage.md 2.3/2.4)."""
    counted = {'t': 29.9e6, 's': 50.1e6, 'b': 97.5e6, 'l': 223.3e6, 'xl': 334.8e6,
               'h': 1.090e9, 'g': 3.076e9}
    keys = {'t': 625, 's': 743, 'b': 743, 'l': 831, 'xl': 875, 'h': 1335, 'g': 1273}
    for arch, params in counted.items():
        with torch.device('meta'):
            backbone = InternImage(arch)
            c3, c4 = backbone.channels[2:]
            if arch in ('h', 'g'):
                head = [InternImageCLIPNeck((c3, c4)), torch.nn.Linear(768, 1000)]
            else:
                head = [InternImageConvNeck(c4), torch.nn.Linear(int(c4 * 1.5), 1000)]
        total = sum(p.numel() for m in [backbone, *head] for p in m.parameters())
        assert abs(total - params) / params < 0.001, (arch, total)
        assert len(backbone.state_dict()) == keys[arch], arch


@pytest.mark.parametrize('family', FAMILIES)
def test_forward_backward_and_out_indices(family):
    torch.manual_seed(0)
    model = tiny(family, out_indices=(0, 1, 2, 3), drop_path_rate=0.1, dcn_backend='pytorch')
    model.init_weights()
    x = torch.randn(2, 3, 64, 48)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 12), (2, 32, 8, 6), (2, 64, 4, 3),
                                              (2, 128, 2, 2)]
    sum(o.mean() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    model.eval()
    assert [o.shape[1] for o in tiny(family, out_indices=(1, 3))(x)] == [32, 128]


def test_official_forward_modes_per_family():
    """The residual form of each family, written out independently (internimage.md 2.2)."""
    x = torch.randn(1, 4, 4, 16, dtype=torch.float64)
    for family, rule in [
        ('t', lambda b, x: (lambda y: y + b.mlp(b.norm2(y)))(x + b.dcn(b.norm1(x)))),
        ('sb', lambda b, x: (lambda y: y + b.gamma2 * b.norm2(b.mlp(y)))(
            x + b.gamma1 * b.norm1(b.dcn(x)))),
        ('h', lambda b, x: (lambda y: y + b.res_post_norm2(b.mlp(b.norm2(y))))(
            x + b.res_post_norm1(b.dcn(b.norm1(x))))),
        ('g', lambda b, x: (lambda y: y + b.norm2(b.mlp(y)))(x + b.norm1(b.dcn(x)))),
    ]:
        block = tiny(family, dcn_backend='pytorch').double().levels[0].blocks[0].eval()
        for p in block.parameters():
            torch.nn.init.normal_(p, std=0.3)
        torch.testing.assert_close(block(x), rule(block, x), msg=family)


def test_stage_norms_and_post_norms_follow_the_official_rules():
    assert [lvl.has_norm for lvl in tiny('t').levels] == [True] * 4
    assert [lvl.has_norm for lvl in tiny('sb').levels] == [False] * 4
    assert [lvl.has_norm for lvl in tiny('g').levels] == [True] * 4  # post_norm but CFS
    h = tiny('h')
    assert h.levels[2].post_norm_block_ids == [0, 2] and len(h.levels[2].post_norms) == 2
    assert not hasattr(h.levels[1], 'post_norms')


def test_frozen_stages():
    model = tiny('t', frozen_stages=1, dcn_backend='pytorch')
    model.train()
    frozen = [model.patch_embed, model.levels[0], model.levels[1]]
    assert all(not m.training for m in frozen) and model.levels[2].training
    model(torch.randn(1, 3, 32, 32))[-1].sum().backward()
    for module in frozen:
        assert all(not p.requires_grad and p.grad is None for p in module.parameters())
    assert all(p.grad is not None for p in model.levels[3].parameters())


def test_masked_pixels_do_not_reach_the_features():
    """Masked image modelling: the masked patches' pixels are hidden from the encoder. The
    stem's 3x3 stride-2 convolutions see 3 pixels past each stride-4 cell, so masking only
    the stem output would let the pixels of a masked patch into its visible neighbours."""
    torch.manual_seed(0)
    model = tiny('t', mask_token=True, out_indices=(0, 1, 2, 3), dcn_backend='pytorch')
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 2, 3] = mask[1, 0, 2] = True  # patches of 16 x 16 pixels
    pixels = mask.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, None]
    changed = torch.where(pixels, torch.randn_like(x) * 3, x)
    assert not torch.equal(changed, x)
    with torch.no_grad():
        outs = [model(v, mask=mask) for v in (x, changed)]
    for out, ref in zip(outs[1], outs[0]):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # only masked pixels are hidden: without a mask, or with an empty one, the change shows
    with torch.no_grad():
        assert not torch.equal(model(changed)[0], model(x)[0])
        outs_other = model(changed, mask=torch.zeros_like(mask))
    assert not torch.equal(outs_other[0], outs[0][0])
    with pytest.raises(ValueError, match='does not tile'):
        model(x, mask=torch.zeros(2, 3, 3, dtype=torch.bool))


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = tiny('h', dcn_backend='pytorch').double()
    plain.init_weights()
    ckpt = tiny('h', with_cp=True, dcn_backend='pytorch').double()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    grads = []
    for model in (plain, ckpt):
        outs = model(x)
        sum((o**2).mean() for o in outs).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="arch 'm' unknown"):
        InternImage('m')
    with pytest.raises(ValueError, match='out_indices'):
        InternImage('t', out_indices=(4, ))
    with pytest.raises(TypeError, match='unexpected arguments'):
        InternImage('t', chanels=32)
    with pytest.raises(ValueError, match='not divisible by groups'):
        InternImage(dict(TINY, groups=[3, 8, 16, 32]))
    with pytest.raises(ValueError, match='NCHW'):
        tiny('t')(torch.randn(3, 32, 32))


def family_shapes(family: str, num_classes=CLASSES):
    f = FAMILIES[family]
    return official_shapes(
        TINY['channels'], TINY['depths'], TINY['groups'], layer_scale=f['layer_scale'] is not None,
        post_norm=f['post_norm'], res_post_norm=f.get('res_post_norm', False),
        dw_kernel_size=f.get('dw_kernel_size', 3),
        post_norm_ids=f.get('level2_post_norm_block_ids'),
        center_feature_scale=f.get('center_feature_scale', False),
        clip_head=family in ('h', 'g'), embed_dim=EMBED, clip_dim=CLIP_DIM,
        num_classes=num_classes)


def tiny_classifier(family: str):
    from mmpretrain.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    c3, c4 = 64, 128
    if family in ('h', 'g'):
        neck = dict(type='m3i_mm.InternImageCLIPNeck', in_channels=(c3, c4), embed_dim=EMBED,
                    out_dim=CLIP_DIM, num_heads=4)
        head_in = CLIP_DIM
    else:
        neck = dict(type='m3i_mm.InternImageConvNeck', in_channels=c4)
        head_in = int(c4 * 1.5)
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='m3i_mm.InternImage', arch={**TINY, **FAMILIES[family]},
                      out_indices=(2, 3), dcn_backend='pytorch'),
        neck=neck,
        head=dict(type='LinearClsHead', num_classes=CLASSES, in_channels=head_in)))


def test_official_key_generator_matches_the_documented_counts():
    """The test's official-layout generator reproduces internimage.md's backbone key counts."""
    settings = InternImage.arch_settings
    documented = {'t': 625, 's': 743, 'b': 743, 'l': 831, 'xl': 875, 'h': 1335, 'g': 1273}
    for arch, count in documented.items():
        a = settings[arch]
        shapes = official_shapes(a['channels'], a['depths'], a['groups'],
                                 layer_scale=a['layer_scale'] is not None,
                                 post_norm=a['post_norm'],
                                 res_post_norm=a.get('res_post_norm', False),
                                 post_norm_ids=a.get('level2_post_norm_block_ids'),
                                 center_feature_scale=a.get('center_feature_scale', False),
                                 num_classes=0)
        assert len(shapes) == count, arch


@pytest.mark.parametrize('family', FAMILIES)
def test_official_classification_checkpoint_lands_in_the_right_parameters(family):
    official = random_state_dict(family_shapes(family))
    converted = convert_internimage({'model': official})['state_dict']
    model = tiny_classifier(family)
    model.load_state_dict(converted, strict=True)  # no missing, no unexpected keys
    ours = model.state_dict()
    for key, value in official.items():
        assert torch.equal(ours[expected_name(key)], value), key


@pytest.mark.parametrize('layout', ['mmdet', 'huggingface', 'converted'])
def test_other_layouts_load_through_init_cfg(tmp_path, layout):
    """mmdet/mmseg (backbone. prefix, layer_scale=1.0 gammas), HF (model., layer_scaleN),
    and the converter tool's output all load via init_cfg=Pretrained."""
    official = random_state_dict(family_shapes('sb', num_classes=0), seed=3)
    path = str(tmp_path / 'ckpt.pth')
    if layout == 'mmdet':
        torch.save({'state_dict': {'backbone.' + k: v for k, v in official.items()},
                    'meta': {}}, path)
    elif layout == 'huggingface':
        renamed = {'model.' + k.replace('gamma1', 'layer_scale1').replace(
            'gamma2', 'layer_scale2'): v for k, v in official.items()}
        torch.save(renamed, path)
    else:
        torch.save({'model': official}, str(tmp_path / 'official.pth'))
        res = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'model_converters',
                                                       'internimage_to_m3i.py'),
                              str(tmp_path / 'official.pth'), path],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert 'backbone' in res.stdout
    model = tiny('sb', init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    ours = model.state_dict()
    for key, value in official.items():
        assert torch.equal(ours[expected_name(key)[len('backbone.'):]], value), key


def test_init_weights_never_overwrites_loaded_weights(tmp_path):
    source = tiny('t')
    source.init_weights()
    for p in source.parameters():
        torch.nn.init.uniform_(p, 2, 3)  # unlike any default init
    path = str(tmp_path / 'backbone.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in source.state_dict().items()}},
               path)
    model = tiny('t', init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    model.init_weights()  # e.g. the runner and the detector both call it
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_loading_reports_missing_and_unexpected_keys_loudly(tmp_path):
    from mmengine.logging import MMLogger
    official = random_state_dict(family_shapes('t', num_classes=0))
    official.pop('levels.0.blocks.0.mlp.fc1.weight')
    official['levels.9.extra.weight'] = torch.zeros(1)
    path = str(tmp_path / 'partial.pth')
    torch.save({'model': official}, path)
    model = tiny('t', init_cfg=dict(type='Pretrained', checkpoint=path))
    logger = MMLogger.get_instance('intern_image_load_test', log_level='INFO')
    records = []
    handler = __import__('logging').Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    try:
        model.init_weights()
    finally:
        logger.removeHandler(handler)
    text = '\n'.join(records)
    assert '1 model tensors missing' in text and 'levels.0.blocks.0.mlp.fc1.weight' in text
    assert '1 checkpoint tensors not used' in text and 'levels.9.extra.weight' in text


def test_wrong_arch_checkpoint_is_refused(tmp_path):
    official = random_state_dict(family_shapes('t', num_classes=0))
    path = str(tmp_path / 't.pth')
    torch.save({'model': official}, path)
    model = InternImage(dict(TINY, channels=32, groups=[8, 16, 32, 64]),
                        init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match='shapes do not match the model'):
        model.init_weights()


def test_layer_depth_follows_the_official_decay():
    """Official lr_decay_keywords: block b of D gets rate**(D-1-b); stem = first block;
    a stage's downsample/norm = first block of the next stage; last norm and head: 1."""
    model = InternImage('t')
    depths = model.depths
    total = sum(depths)
    rate = 0.9

    def scale(name):
        layer, num = model.get_layer_depth(name, 'backbone.')
        return rate**(num - layer - 1)

    first_of = [sum(depths[:i]) for i in range(4)]
    assert scale('backbone.levels.3.blocks.3.dcn.offset.weight') == pytest.approx(1.0)
    assert scale('backbone.levels.0.blocks.0.norm1.weight') == pytest.approx(rate**(total - 1))
    assert scale('backbone.patch_embed.conv1.weight') == pytest.approx(rate**(total - 1))
    assert scale('backbone.levels.2.blocks.5.mlp.fc1.weight') == pytest.approx(
        rate**(total - 1 - (first_of[2] + 5)))
    for i in range(3):
        expected = rate**(total - 1 - first_of[i + 1])
        assert scale(f'backbone.levels.{i}.downsample.conv.weight') == pytest.approx(expected)
        assert scale(f'backbone.levels.{i}.norm.weight') == pytest.approx(expected)
    assert scale('backbone.levels.3.norm.weight') == pytest.approx(1.0)
    assert scale('head.fc.weight') == pytest.approx(1.0)


@pytest.mark.parametrize('backend', ['pytorch', 'auto'])
def test_an_empty_batch_gives_empty_features_and_gradients(backend):
    """A batch of 0 (e.g. a data-parallel rank left without images) runs forward and
    backward, in training (drop-path) and eval mode, with every DCNv3 backend on the CPU."""
    model = tiny('h', out_indices=(0, 1, 2, 3), drop_path_rate=0.1, dcn_backend=backend)
    model.init_weights()
    for train in (True, False):
        model.train(train)
        x = torch.randn(0, 3, 64, 48, requires_grad=True)
        outs = model(x)
        assert [tuple(o.shape) for o in outs] == [(0, 16, 16, 12), (0, 32, 8, 6),
                                                  (0, 64, 4, 3), (0, 128, 2, 2)]
        sum(o.sum() for o in outs).backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize('family', ['t', 'h'])
def test_eager_inference_matches_the_autograd_path_and_leaves_the_input_alone(family):
    """Inference runs in-place residuals and activations, fused CPU kernels and cached
    channels-last conv weights; the features equal those of the autograd path."""
    torch.manual_seed(0)
    model = tiny(family, out_indices=(0, 1, 2, 3)).double().eval()
    model.init_weights()
    for p in model.parameters():  # non-zero offsets and masks
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 3, 64, 48, dtype=torch.float64)
    expected = model(x)
    copy_of_x = x.clone()
    with torch.inference_mode():
        outs = model(x)
    torch.testing.assert_close(x, copy_of_x, rtol=0, atol=0)
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_pretrained_none_is_accepted_as_mmseg_backbones_accept_it():
    """Stock mmseg configs and segmentors pass ``pretrained``; None changes nothing."""
    model = InternImage(arch=TINY, pretrained=None)
    assert model.init_cfg is None
    model = InternImage(arch=TINY, pretrained=None, init_cfg=dict(type='Pretrained',
                                                                  checkpoint='x.pth'))
    assert model.init_cfg == dict(type='Pretrained', checkpoint='x.pth')


def test_pretrained_path_becomes_init_cfg_with_a_deprecation_warning(tmp_path):
    source = InternImage(arch=TINY)
    source.init_weights()
    path = str(tmp_path / 'backbone.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}},
               path)
    with pytest.warns(FutureWarning, match=r"pretrained='.*backbone.pth' is deprecated"):
        model = InternImage(arch=TINY, pretrained=path)
    assert model.init_cfg == dict(type='Pretrained', checkpoint=path)
    model.init_weights()
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_pretrained_with_init_cfg_or_of_another_type_is_refused():
    with pytest.raises(ValueError, match='pretrained=.* and init_cfg=.* both set'):
        InternImage(arch=TINY, pretrained='a.pth',
                    init_cfg=dict(type='Pretrained', checkpoint='b.pth'))
    with pytest.raises(TypeError, match='pretrained must be a path'):
        InternImage(arch=TINY, pretrained=True)
