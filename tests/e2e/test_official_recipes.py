"""The new official-recipe families, end to end on the tiny photo data (CPU, tiny backbones):
ImageNet-22k -> 1k fine-tuning (the 22k head cut to the 1k rows), DINO with CB-InternImage
(COCO), Mask2Former (ADE20k), and the multi-scale + flip segmentation test. Each trains for a
step or two from its demo config (which inherits the real recipe) and is evaluated with the
codebase's metric. They run in this process through mmengine's Runner (the CLI around it is
covered by the other end-to-end tests) to keep them short."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO
from tests.e2e.conftest import assert_scores, tiny_backbone_state

pytestmark = pytest.mark.slow
DEMO = osp.join(REPO, 'configs', 'demo')


def demo_cfg(name: str, workspace: str, **options) -> Config:
    cfg = Config.fromfile(osp.join(DEMO, name))
    cfg.work_dir = osp.join(workspace, 'work_' + osp.splitext(name)[0])
    cfg.merge_from_dict(options)
    return cfg


def run(cfg: Config, train: bool = True) -> dict:
    """Train (if asked) and then evaluate with the config's test loop, in one runner."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.experiment_name = f'{osp.basename(cfg.work_dir)}_{"train" if train else "test"}'
    runner = Runner.from_cfg(cfg)
    if train:
        runner.train()
    metrics = {k: float(v) if hasattr(v, '__float__') else v for k, v in runner.test().items()}
    return dict(runner=runner, metrics=metrics)


@pytest.fixture
def in_workspace(demo_workspace, monkeypatch):
    monkeypatch.chdir(demo_workspace)  # the demo configs read data/demo/... from here
    return demo_workspace


@pytest.fixture
def tiny_backbone(in_workspace):
    path = osp.join(in_workspace, 'tiny_backbone.pth')
    torch.save(dict(state_dict=tiny_backbone_state(), meta=dict()), path)
    return path


def test_22k_to_1k_fine_tuning_starts_from_the_mapped_head(in_workspace):
    from mmengine.registry import MODELS, DefaultScope

    from m3i_mm.zoo.imagenet22k_to_1k import imagenet22k_to_1k
    name = 'internimage-tiny_in22k-pre_1xb4-2e_demo-cls.py'
    # a tiny "ImageNet-22k classifier": the demo model with a 21841-way head
    cfg = demo_cfg(name, in_workspace)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model_cfg = copy.deepcopy(cfg.model)
        model_cfg.data_preprocessor = cfg.data_preprocessor
        for part in ('backbone', 'neck', 'head'):
            model_cfg[part].init_cfg = None
        model_cfg.head.num_classes = 21841
        torch.manual_seed(7)
        source = MODELS.build(model_cfg)
        source.init_weights()
        state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                 for k, v in source.state_dict().items()}
        path = osp.join(in_workspace, 'classifier_22k.pth')
        torch.save(dict(state_dict=state, meta=dict()), path)

        options = {f'model.{part}.init_cfg.checkpoint': path
                   for part in ('backbone', 'neck', 'head')}
        cfg = demo_cfg(name, in_workspace, **options)
        model = MODELS.build(cfg.model)
        model.init_weights()
    rows = list(imagenet22k_to_1k()[0])
    loaded = model.state_dict()
    assert torch.equal(loaded['head.fc.weight'], state['head.fc.weight'][rows])
    assert torch.equal(loaded['head.fc.bias'], state['head.fc.bias'][rows])
    for key in ('neck.conv.weight', 'neck.bn.running_mean', 'backbone.patch_embed.conv1.weight'):
        assert torch.equal(loaded[key], state[key]), key

    assert_scores(run(cfg)['metrics'], ['accuracy/top1'], 0.0, 100.0)


def test_cb_dino_trains_both_backbones_and_reports_box_ap(in_workspace, tiny_backbone):
    name = 'dino-4scale_cb-internimage-tiny_1xb2-2it_demo-coco.py'
    cfg = demo_cfg(name, in_workspace, **{'model.backbone.init_cfg.checkpoint': tiny_backbone})
    result = run(cfg)
    assert_scores(result['metrics'], ['coco/bbox_mAP', 'coco/bbox_mAP_50'], 0.0, 1.0)
    logged = result['runner'].message_hub.log_scalars
    assert 'train/assisting.loss_cls' in logged and 'train/loss_cls' in logged
    weights = torch.load(osp.join(cfg.work_dir, 'iter_2.pth'), map_location='cpu',
                         weights_only=False)['state_dict']
    initial = tiny_backbone_state()
    for k in range(2):  # both backbones started from the tiny checkpoint and moved
        key = f'backbone.cb_modules.{k}.levels.3.blocks.0.mlp.fc1.weight'
        assert not torch.equal(weights[key], initial['backbone.levels.3.blocks.0.mlp.fc1.weight'])


def test_mask2former_reports_miou(in_workspace, tiny_backbone):
    name = 'mask2former_internimage-tiny_1xb2-2it_demo-ade-64x64.py'
    cfg = demo_cfg(name, in_workspace, **{'model.backbone.init_cfg.checkpoint': tiny_backbone})
    assert_scores(run(cfg)['metrics'], ['aAcc', 'mIoU', 'mAcc'], 0.0, 100.0)


def test_multi_scale_flip_test_of_upernet(in_workspace, tiny_backbone):
    name = 'upernet_internimage-tiny_1xb2-20it_demo-ade-64x64.py'
    two_images = {'test_dataloader.dataset.indices': 2}
    cfg = demo_cfg(name, in_workspace, **{'model.backbone.init_cfg.checkpoint': tiny_backbone,
                                          'train_cfg.max_iters': 2, 'train_cfg.val_begin': 1000,
                                          'default_hooks.checkpoint.interval': 2}, **two_images)
    single = run(cfg)['metrics']
    checkpoint = osp.join(cfg.work_dir, 'iter_2.pth')
    tta_name = name.replace('.py', '_ms-flip-test.py')
    result = run(demo_cfg(tta_name, in_workspace, load_from=checkpoint, **two_images),
                 train=False)
    assert_scores(single, ['mIoU'], 0.0, 100.0)
    assert_scores(result['metrics'], ['mIoU', 'aAcc'], 0.0, 100.0)
    # each test image went through 6 scales x 2 flips
    views = result['runner'].test_dataloader.dataset[0]
    assert len(views['inputs']) == 12
    assert sorted({v.flip for v in views['data_samples']}) == [False, True]
