#!/usr/bin/env python
"""Turn a training checkpoint into a release file ``<name>_<YYYYMMDD>-<sha8>.pth``.

Keeps the model weights and a few basic meta fields; drops the optimizer, the parameter
schedulers, the message hub and everything else. ``sha8`` is the first 8 hex digits of the
sha256 of the written file, so the name identifies the content.

EMA weights: with mmengine's ``EMAHook``, a saved checkpoint holds the **EMA** weights in
``state_dict`` (the hook swaps them in before saving, so the checkpoint deploys as is) and
the **online** weights under ``ema_state_dict`` (keys prefixed ``module.``, plus the EMA
``steps`` counter).

Examples::

    python tools/model_converters/publish_model.py work_dirs/run/iter_1000.pth releases \
        --name m3i_internimage-t_in1k --weights ema
"""
import argparse
import datetime
import hashlib
import logging
import os
import os.path as osp
import re
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

from m3i_mm.utils.io import commit_path, temporary_path  # noqa: E402
from m3i_mm.zoo import ZooError, load_checkpoint_file  # noqa: E402

META_KEPT = ('epoch', 'iter', 'seed', 'experiment_name', 'time', 'mmengine_version',
             'dataset_meta', 'cfg')
EMA_KEY = 'ema_state_dict'
EMA_PREFIX = 'module.'
NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Make a release file from a checkpoint.')
    parser.add_argument('in_file', help='mmengine training checkpoint')
    parser.add_argument('out_dir', help='directory for <name>_<YYYYMMDD>-<sha8>.pth')
    parser.add_argument('--name', required=True, help='release name, e.g. m3i_internimage-h')
    parser.add_argument('--weights', choices=('auto', 'ema', 'online'), default='auto',
                        help='which weights to publish: ema (needs an EMAHook checkpoint), '
                        'online, or auto = ema when the checkpoint has EMA weights, else online')
    return parser.parse_args(argv)


def select_weights(checkpoint: Dict[str, Any], weights: str) -> Dict[str, torch.Tensor]:
    """The state dict to publish.

    Args:
        checkpoint: A loaded mmengine checkpoint.
        weights: ``'ema'``, ``'online'`` or ``'auto'`` (see the module docstring).

    Returns:
        The chosen weights, keys as the model names them.

    Raises:
        ValueError: If the checkpoint has no ``state_dict``, or EMA weights are asked for
            and it has none.
    """
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('state_dict'), dict):
        found = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, dict) else \
            type(checkpoint).__name__
        raise ValueError(f'not an mmengine checkpoint: no "state_dict" dict in it (found '
                         f'{found})')
    state_dict = checkpoint['state_dict']
    if not state_dict:
        raise ValueError('its "state_dict" is empty: there are no weights to publish')
    not_tensors = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ValueError(f'its "state_dict" holds non-tensor entries {not_tensors[:5]}: not '
                         'a model state dict')
    online_swapped = checkpoint.get(EMA_KEY)
    if weights == 'auto':
        weights = 'ema' if online_swapped is not None else 'online'
    if weights == 'ema':
        if online_swapped is None:
            raise ValueError(f'--weights ema: the checkpoint has no "{EMA_KEY}" (it was not '
                             'saved with an EMAHook), so it holds no EMA weights')
        return dict(state_dict)  # EMAHook swapped the EMA weights into state_dict
    if online_swapped is None:
        return dict(state_dict)
    online = dict(state_dict)
    for key, value in online_swapped.items():
        if key.startswith(EMA_PREFIX):  # everything else ('steps') is EMA bookkeeping
            online[key[len(EMA_PREFIX):]] = value
    return online


def publishable(checkpoint: Dict[str, Any], weights: str, name: str) -> Dict[str, Any]:
    """The release checkpoint: chosen weights + basic meta, as plain Python and CPU tensors."""
    state_dict = {k: v.detach().cpu() for k, v in select_weights(checkpoint, weights).items()}
    meta = {k: _plain(v) for k, v in (checkpoint.get('meta') or {}).items() if k in META_KEPT}
    chosen = weights if weights != 'auto' else ('ema' if EMA_KEY in checkpoint else 'online')
    meta['publish'] = dict(name=name, weights=chosen, date=datetime.date.today().isoformat())
    return dict(meta=meta, state_dict=state_dict)


def _plain(value: Any) -> Any:
    """numpy scalars/arrays to Python, so the release loads without any allow-listed class."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if type(value).__module__ == 'numpy':
        return value.tolist()
    return value


def write_release(checkpoint: Dict[str, Any], out_dir: str, name: str) -> str:
    """Save ``checkpoint`` as ``<out_dir>/<name>_<YYYYMMDD>-<sha8>.pth``; return the path.

    The file is written under a temporary name in ``out_dir``, hashed, ``fsync``-ed and
    renamed (:func:`m3i_mm.utils.io.commit_path`), so the final name never holds a partial
    file. It gets the usual permissions (``0o666`` minus the umask): a release is meant
    to be read by others.
    """
    os.makedirs(out_dir, exist_ok=True)
    tmp = temporary_path(osp.join(out_dir, f'{name}.pth'))
    try:
        with open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
        date = datetime.date.today().strftime('%Y%m%d')
        digest = hashlib.sha256()
        with open(tmp, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                digest.update(chunk)
        path = osp.join(out_dir, f'{name}_{date}-{digest.hexdigest()[:8]}.pth')
        commit_path(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    print_log(f'published {path}\n  sha256: {digest.hexdigest()}\n  metafile lines:\n'
              f'    Weights: <URL>/{osp.basename(path)}\n    Sha256: {digest.hexdigest()}',
              logger='current')
    return path


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if not NAME_RE.match(args.name):
        print(f'error: --name must be letters, digits, ".", "_" or "-", got {args.name!r}',
              file=sys.stderr)
        return 1
    if not osp.isfile(args.in_file):
        print(f'error: input checkpoint not found: {args.in_file}', file=sys.stderr)
        return 1
    try:
        checkpoint = load_checkpoint_file(args.in_file, map_location='cpu')
        release = publishable(checkpoint, args.weights, args.name)
    except ZooError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except ValueError as e:
        print(f'error: {args.in_file}: {e}', file=sys.stderr)
        return 1
    dropped = sorted(set(checkpoint) - {'state_dict', 'meta'})
    print_log(f'{args.in_file}: publishing {release["meta"]["publish"]["weights"]} weights '
              f'({len(release["state_dict"])} tensors); dropped {dropped}',
              logger='current', level=logging.INFO)
    write_release(release, args.out_dir, args.name)
    return 0


if __name__ == '__main__':
    sys.exit(main())
