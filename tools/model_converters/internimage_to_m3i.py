#!/usr/bin/env python
"""Convert an official InternImage checkpoint to m3i_mm parameter names.

    python tools/model_converters/internimage_to_m3i.py internimage_t_1k_224.pth out.pth

Reads classification checkpoints (weights under ``model``), mmdet/mmseg checkpoints
(``state_dict`` with ``backbone.``) and Hugging Face ports (``model.`` prefix). Writes
``{'state_dict': ..., 'meta': ...}`` whose keys fit an mmpretrain ``ImageClassifier``
with ``m3i_mm.InternImage`` (``backbone.*``, ``neck.*``, ``head.fc.*``); configs load the
backbone part with ``init_cfg=dict(type='Pretrained', checkpoint=OUT, prefix='backbone.')``.
``--backbone-only`` keeps only the backbone (keys without prefix).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from m3i_mm.utils.io import atomic_torch_save  # noqa: E402
from m3i_mm.zoo import ZooError, load_checkpoint_file  # noqa: E402
from m3i_mm.zoo.internimage import convert_internimage  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--backbone-only', action='store_true',
                        help='keep only backbone weights, without the backbone. prefix')
    args = parser.parse_args(argv)
    if not osp.isfile(args.src):
        raise SystemExit(f'error: checkpoint not found: {args.src!r}')
    try:  # weights_only loading with m3i_mm's allow-list; unreadable files named clearly
        converted = convert_internimage(load_checkpoint_file(args.src, map_location='cpu'))
    except ZooError as e:
        raise SystemExit(f'error: {e}') from None
    if args.backbone_only:
        converted['state_dict'] = {k[len('backbone.'):]: v
                                   for k, v in converted['state_dict'].items()
                                   if k.startswith('backbone.')}
    atomic_torch_save(converted, args.dst)
    groups = {}
    for key in converted['state_dict']:
        groups[key.split('.')[0]] = groups.get(key.split('.')[0], 0) + 1
    print(f'{args.src} ({converted["meta"]["converted_from"]}) -> {args.dst}: '
          + ', '.join(f'{n} {g}' for g, n in sorted(groups.items())) + ' tensors')


if __name__ == '__main__':
    main()
