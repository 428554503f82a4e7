"""File writing shared by the converters and the training strategies."""
import os
import os.path as osp
from typing import Any


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary name next to ``path``, then rename it into place.

    The final path never holds a partial file: an interrupted or failed save leaves the
    previous file (if any) untouched and removes the temporary one.
    """
    import torch
    dirname = osp.dirname(osp.abspath(path))
    os.makedirs(dirname, exist_ok=True)
    tmp = osp.join(dirname, f'.{osp.basename(path)}.tmp-{os.getpid()}')
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
