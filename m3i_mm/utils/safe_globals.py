"""Let ``torch.load(weights_only=True)`` read mmengine checkpoints.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine (0.10.7) checkpoints
hold a few non-tensor objects (the message hub's ``HistoryBuffer`` and the numpy arrays and
scalars inside it), so ``--resume`` fails. Instead of switching ``weights_only`` off, we
allow-list exactly these classes.
"""
_done = False


def allow_mmengine_checkpoint_globals() -> None:
    """Register the classes mmengine checkpoints contain as safe for ``torch.load``."""
    global _done
    if _done:
        return
    import torch
    if not hasattr(torch.serialization, 'add_safe_globals'):  # torch < 2.4: nothing to do
        _done = True
        return
    torch.serialization.add_safe_globals(_checkpoint_globals())
    _done = True


def _history_buffer_getattr(obj, name: str):
    """Stand-in for ``builtins.getattr`` restricted to what mmengine pickles.

    ``HistoryBuffer`` pickles its statistics methods (``HistoryBuffer.min`` ...) as
    ``getattr(HistoryBuffer, 'min')``. Allow-listing the real ``getattr`` would let a
    checkpoint reach any attribute of any allowed object, so only public methods of
    ``HistoryBuffer`` itself resolve here.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and not name.startswith('_') and callable(
            getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise TypeError(f'weights_only load: getattr({obj!r}, {name!r}) is not allowed; only '
                    'public methods of mmengine HistoryBuffer are')


def _checkpoint_globals() -> list:
    import numpy as np
    from mmengine.logging import HistoryBuffer
    try:
        from numpy._core.multiarray import _reconstruct, scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
        'float16', 'float32', 'float64')]
    # Files written under numpy 1.x (the official mmdet 2.x / mmseg 0.x checkpoints keep
    # numpy scalars such as the best score in their meta) name these numpy.core.multiarray.*
    aliases = [(_reconstruct, 'numpy.core.multiarray._reconstruct'),
               (scalar, 'numpy.core.multiarray.scalar')]
    return [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar, *aliases, *dtype_classes,
            (_history_buffer_getattr, 'builtins.getattr')]
