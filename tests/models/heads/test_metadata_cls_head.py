"""MetadataLinearClsHead against the official iNaturalist classifier head
(``classification/models/intern_image_meta_former.py``: ``meta_head_1/2`` = Linear ->
ReLU -> LayerNorm -> MetaEncoder, ``meta_norm`` (eps 1e-6), ``meta_head``; the metadata
logits are added to ``head``'s image logits)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope
from mmpretrain.structures import DataSample

from m3i_mm.models.heads import MetadataLinearClsHead
from m3i_mm.zoo.internimage import convert_internimage

CLASSES, WIDTH, META = 7, 12, 8


def official_head_shapes() -> dict:
    """The official key -> shape of the classifier and metadata branch (``head`` Linear(768,
    classes) at full size; ``meta_dim`` = META here)."""
    shapes = {'head.weight': (CLASSES, WIDTH), 'head.bias': (CLASSES, )}
    for index, dim in ((1, 4), (2, 3)):
        p = f'meta_head_{index}.'
        shapes.update({p + '0.weight': (META, dim), p + '0.bias': (META, ),
                       p + '2.weight': (META, ), p + '2.bias': (META, )})
        for name in ('w1', 'w2'):
            shapes[p + f'3.{name}.weight'] = (META, META)
            shapes[p + f'3.{name}.bias'] = (META, )
        for name in ('norm_fn1', 'norm_fn2'):
            shapes[p + f'3.{name}.weight'] = shapes[p + f'3.{name}.bias'] = (META, )
    shapes.update({'meta_norm.weight': (2 * META, ), 'meta_norm.bias': (2 * META, ),
                   'meta_head.weight': (CLASSES, 2 * META), 'meta_head.bias': (CLASSES, )})
    return shapes


def official_logits(w: dict, feats: torch.Tensor, temporal: torch.Tensor,
                    spatial: torch.Tensor) -> torch.Tensor:
    """The official forward in float64, written from its source's description."""
    def layer_norm(x, prefix, eps=1e-5):
        return F.layer_norm(x, x.shape[-1:], w[prefix + '.weight'], w[prefix + '.bias'], eps)

    def linear(x, prefix):
        return x @ w[prefix + '.weight'].T + w[prefix + '.bias']

    def meta_head(x, p):
        x = layer_norm(torch.relu(linear(x, p + '.0')), p + '.2')
        y = layer_norm(torch.relu(linear(x, p + '.3.w1')), p + '.3.norm_fn1')
        y = layer_norm(torch.relu(linear(y, p + '.3.w2')), p + '.3.norm_fn2')
        return x + y

    meta = torch.cat([meta_head(temporal, 'meta_head_1'), meta_head(spatial, 'meta_head_2')],
                     dim=-1)
    return linear(feats, 'head') + linear(layer_norm(meta, 'meta_norm', 1e-6), 'meta_head')


def samples(temporal: torch.Tensor, spatial: torch.Tensor, labels) -> list:
    out = []
    for t, s, label in zip(temporal, spatial, labels):
        sample = DataSample().set_gt_label(label)
        sample.set_field(t.tolist(), 'temporal_info')
        sample.set_field(s.tolist(), 'spatial_info')
        out.append(sample)
    return out


def make_head(**kwargs) -> MetadataLinearClsHead:
    return MetadataLinearClsHead(num_classes=CLASSES, in_channels=WIDTH, metadata_channels=META,
                                 **kwargs)


def official_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    official = {k: torch.randn(shape, generator=gen, dtype=torch.float64) * 0.5
                for k, shape in official_head_shapes().items()}
    feats = torch.randn(3, WIDTH, generator=gen, dtype=torch.float64)
    temporal = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    spatial = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    return official, feats, temporal, spatial


def test_converted_official_head_computes_the_official_logits():
    official, feats, temporal, spatial = official_inputs()
    # a real classification checkpoint also holds the backbone; the converter needs it
    checkpoint = {'model': {'patch_embed.conv1.weight': torch.zeros(1), **official}}
    converted = convert_internimage(checkpoint)['state_dict']
    head_state = {k[len('head.'):]: v for k, v in converted.items() if k.startswith('head.')}
    assert len(head_state) == len(official)
    head = make_head().double()
    head.load_state_dict(head_state, strict=True)  # every key lands, none is left over
    batch = samples(temporal, spatial, [0, 3, 6])
    ours = head.scores((feats, ), batch)
    torch.testing.assert_close(ours, official_logits(official, feats, temporal, spatial),
                               rtol=1e-10, atol=1e-10)
    # predict and loss use the same logits
    predicted = head.predict((feats, ), copy.deepcopy(batch))
    expected = F.softmax(ours, dim=1)
    for sample, score in zip(predicted, expected):
        torch.testing.assert_close(sample.pred_score, score)
    loss = head.loss((feats, ), batch)['loss']
    torch.testing.assert_close(loss, F.cross_entropy(ours, torch.tensor([0, 3, 6])))


def test_metadata_changes_the_prediction_and_tensor_mode_is_image_only():
    official, feats, temporal, spatial = official_inputs(1)
    head = make_head().double()
    head.init_weights()
    image_only = head((feats, ))
    torch.testing.assert_close(image_only, feats @ head.fc.weight.T + head.fc.bias)
    with_meta = head.scores((feats, ), samples(temporal, spatial, [0, 1, 2]))
    assert not torch.allclose(with_meta, image_only)
    other = head.scores((feats, ), samples(temporal.flip(0), spatial, [0, 1, 2]))
    assert not torch.allclose(with_meta, other)  # the month of each sample is its own


def test_missing_or_malformed_metadata_is_named():
    head = make_head()
    feats = torch.randn(2, WIDTH)
    with pytest.raises(ValueError, match='needs data samples carrying'):
        head.predict((feats, ))
    no_spatial = [DataSample().set_gt_label(0) for _ in range(2)]
    for sample in no_spatial:
        sample.set_field([0.0] * 4, 'temporal_info')
    with pytest.raises(KeyError, match="data sample 0 has no 'spatial_info'"):
        head.loss((feats, ), no_spatial)
    wrong = samples(torch.zeros(2, 3), torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError, match="'temporal_info' must hold 4 values per sample"):
        head.loss((feats, ), wrong)


def test_the_recipes_initialisation_scales_the_classifier_only():
    """The iNaturalist config's init_cfg: truncated normal (std 0.02) on every Linear, the
    classifier's scaled by 1e-3 (the official RAND_INIT_FT_HEAD)."""
    from tests.configs.test_all_configs import load
    cfg = load('internimage/internimage-h_in22k-pre_32xb16-100e_inat2018-384px.py')
    head_cfg = copy.deepcopy(cfg.model.head)
    head_cfg.pop('type')
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):  # as the runner builds it
        head = MetadataLinearClsHead(**head_cfg)
    head.init_weights()
    assert head.fc.weight.shape == (8142, 768)
    assert head.fc.weight.std().item() == pytest.approx(2e-5, rel=0.02)
    assert head.meta_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert head.meta_encoders[0][0].weight.std().item() == pytest.approx(0.02, rel=0.3)
    assert torch.count_nonzero(head.fc.bias) == 0
    assert torch.equal(head.meta_norm.weight, torch.ones(128))


def test_official_inaturalist_checkpoint_loads_strictly_into_the_recipes_model():
    """The whole official iNaturalist layout (InternImage-H backbone, CLIP-projector head,
    8142-way classifier, metadata branch; tiny widths) converts into the model of the
    recipe's config, every key in its place."""
    from mmpretrain.registry import MODELS

    from tests.configs.test_all_configs import load, make_testable
    from tests.models.backbones.official_checkpoint import (expected_name, official_shapes,
                                                            random_state_dict)
    cfg = load('internimage/internimage-h_in22k-pre_32xb16-100e_inat2018-384px.py')
    model_cfg = make_testable(cfg)  # tiny H: 16 channels, depths 1-1-2-1, no pretrained load
    arch = model_cfg['backbone']['arch']
    shapes = official_shapes(
        arch['channels'], arch['depths'], arch['groups'], layer_scale=False, post_norm=False,
        res_post_norm=True, dw_kernel_size=arch['dw_kernel_size'],
        post_norm_ids=arch['level2_post_norm_block_ids'], center_feature_scale=True,
        clip_head=True, embed_dim=1024, clip_dim=768, num_classes=8142)
    meta = {k: v for k, v in official_head_shapes().items() if k.startswith('meta')}
    for key, shape in meta.items():  # the recipe's widths: meta_dim 64, 8142 classes
        shapes[key] = tuple(8142 if d == CLASSES else 64 if d == META else 128 if d == 2 * META
                            else d for d in shape)
    official = random_state_dict(shapes, seed=5)
    converted = convert_internimage({'model': official})['state_dict']
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(model_cfg)
    model.load_state_dict(converted, strict=True)
    ours = model.state_dict()
    for key, value in official.items():
        assert torch.equal(ours[expected_name(key)], value), key
