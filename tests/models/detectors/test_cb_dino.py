"""m3i_mm.CBDINO: the training loss is 0.5 x DINO loss on the assisting backbone's features
+ 1.0 x the lead backbone's (shared neck and head, official CBDINO/CBDINOHead), inference uses
the lead backbone alone."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import m3i_mm.models.detectors  # noqa: F401  (registers CBDINO)

TINY = dict(channels=16, depths=[1, 1, 2, 1], groups=[2, 4, 8, 16])


@pytest.fixture(scope='module')
def detector():
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromstring("""
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
model = dict(type='m3i_mm.CBDINO', num_queries=12,
             backbone=dict(_delete_=True, type='m3i_mm.CBInternImage', arch=%r,
                           out_indices=(1, 2, 3), dcn_backend='pytorch'),
             neck=dict(in_channels=[32, 64, 128]),
             encoder=dict(num_layers=1), decoder=dict(num_layers=2),
             bbox_head=dict(num_classes=3),
             dn_cfg=dict(group_cfg=dict(num_dn_queries=6)),
             test_cfg=dict(max_per_img=10))
""" % TINY, '.py')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():  # open the assisting connections
        for i in range(4):
            getattr(model.backbone.cb_modules[1], f'gamma{i}').normal_(0, 0.5)
    return model


def batch():
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(2, 3, 64, 96, generator=gen)
    samples = []
    for i in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96),
                                             batch_input_shape=(64, 96),
                                             scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[4., 6., 40., 50.], [30. + i, 10., 90., 60.]]),
            labels=torch.tensor([i, 2]))
        samples.append(sample)
    return inputs, samples


def test_loss_weights_both_backbones(detector):
    inputs, samples = batch()
    detector.train()
    torch.manual_seed(5)
    losses = detector.loss(inputs, samples)
    assert any(k.startswith('assisting.') for k in losses)
    # the same computation spelled out: neck + DINO head on each backbone's features
    torch.manual_seed(5)
    assisting, lead = detector.backbone(inputs)
    expected = {}
    for prefix, feats, weight in (('assisting.', assisting, 0.5), ('', lead, 1.0)):
        head_inputs = detector.forward_transformer(detector.neck(feats), samples)
        for key, value in detector.bbox_head.loss(**head_inputs,
                                                  batch_data_samples=samples).items():
            expected[prefix + key] = value * weight if 'loss' in key else value
    assert set(losses) == set(expected)
    for key in expected:
        torch.testing.assert_close(losses[key], expected[key], msg=key)
    assert losses['assisting.loss_cls'] != 0


def test_gradients_reach_both_backbones_and_the_connections(detector):
    inputs, samples = batch()
    detector.train()
    detector.zero_grad()
    losses = detector.loss(inputs, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    backbone = detector.backbone
    for module in (backbone.cb_modules[0].levels[3], backbone.cb_modules[1].levels[3],
                   backbone.cb_linears[0][3]):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert backbone.cb_modules[1].gamma0.grad.abs().sum() > 0


def test_prediction_uses_the_lead_backbone(detector):
    inputs, samples = batch()
    detector.eval()
    with torch.no_grad():
        results = detector.predict(inputs, [s.clone() for s in samples])
        _, lead = detector.backbone(inputs)
        head_inputs = detector.forward_transformer(detector.neck(lead), samples)
        expected = detector.bbox_head.predict(**head_inputs, rescale=True,
                                              batch_data_samples=samples)
    for result, exp in zip(results, expected):
        torch.testing.assert_close(result.pred_instances.bboxes, exp.bboxes)
        torch.testing.assert_close(result.pred_instances.scores, exp.scores)


def test_a_plain_backbone_is_refused():
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromstring("""
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
model = dict(type='m3i_mm.CBDINO', num_queries=4,
             backbone=dict(_delete_=True, type='m3i_mm.InternImage', arch=%r,
                           out_indices=(1, 2, 3), dcn_backend='pytorch'),
             neck=dict(in_channels=[32, 64, 128]), encoder=dict(num_layers=1),
             decoder=dict(num_layers=1))
""" % TINY, '.py')
    model = MODELS.build(cfg.model)
    with pytest.raises(TypeError, match='needs a composite backbone'):
        model.extract_feat(torch.zeros(1, 3, 64, 64))
