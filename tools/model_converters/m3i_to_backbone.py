#!/usr/bin/env python
"""Extract the backbone of an M3I pre-training checkpoint for downstream fine-tuning.

    python tools/model_converters/m3i_to_backbone.py work_dirs/m3i_run/iter_100000.pth \
        backbone.pth --weights ema

``--weights ema`` takes the EMA target encoder (the default when the checkpoint has one),
``online`` the trained encoder. The output keys are ``backbone.*``; mmpretrain, mmdet and
mmseg configs load it with::

    backbone=dict(..., init_cfg=dict(type='Pretrained', checkpoint='backbone.pth',
                                     prefix='backbone.'))
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from m3i_mm.utils.io import atomic_torch_save  # noqa: E402
from m3i_mm.zoo import ZooError, extract_m3i_backbone, load_checkpoint_file  # noqa: E402


def convert(src: str, dst: str, weights: str = 'auto') -> dict:
    """Read ``src``, extract its backbone and write it atomically to ``dst``.

    Returns:
        The written checkpoint dict.
    """
    if not osp.isfile(src):
        raise FileNotFoundError(f'checkpoint not found: {src!r}')
    converted = extract_m3i_backbone(load_checkpoint_file(src, map_location='cpu'), weights)
    atomic_torch_save(converted, dst)
    return converted


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='M3I training checkpoint (mmengine .pth)')
    parser.add_argument('dst', help='output backbone checkpoint')
    parser.add_argument('--weights', choices=('auto', 'ema', 'online'), default='auto',
                        help='EMA target encoder or online encoder (auto: EMA if present)')
    args = parser.parse_args(argv)
    try:
        converted = convert(args.src, args.dst, args.weights)
    except (FileNotFoundError, ZooError) as e:  # ZooError: unreadable file, wrong layout
        print(f'error: {e}', file=sys.stderr)
        return 2
    state_dict = converted['state_dict']
    numel = sum(v.numel() for v in state_dict.values())
    print(f'{args.src} -> {args.dst}: {len(state_dict)} backbone tensors, {numel / 1e6:.2f}M '
          f'parameters ({converted["meta"]["m3i_backbone"]["weights"]} weights)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
