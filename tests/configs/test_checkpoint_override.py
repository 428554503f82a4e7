"""The documented way to start a config from another checkpoint (configs/README.md)."""
import argparse
import os.path as osp

from m3i_mm.cli.launch import add_common_args, load_config
from tests.conftest import REPO

CONFIG = osp.join(REPO, 'configs', 'mask_rcnn', 'mask-rcnn_internimage-t_fpn_1x_coco.py')
M3I_BACKBONE = 'work_dirs/m3i_internimage-t_16xb128-100k_in1k-cc12m/backbone.pth'


def cli_config(*options: str):
    """The config as tools/train.py and tools/test.py see it with ``--cfg-options``."""
    parser = argparse.ArgumentParser()
    add_common_args(parser)
    return load_config(CONFIG, parser.parse_args(['--cfg-options', *options]).cfg_options)


def test_cfg_options_replace_the_backbone_checkpoint():
    cfg = cli_config(f'model.backbone.init_cfg.checkpoint={M3I_BACKBONE}')
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=M3I_BACKBONE,
                                               prefix='backbone.')


def test_overriding_the_pretrained_variable_alone_changes_nothing():
    """mmengine resolves ``pretrained`` when it parses the file, before the options."""
    cfg = cli_config(f'pretrained={M3I_BACKBONE}')
    assert cfg.pretrained == M3I_BACKBONE
    assert cfg.model.backbone.init_cfg.checkpoint == 'm3i://internimage_t_1k_224'
