"""Run mmdet's, mmseg's or mmpretrain's own ``browse_dataset.py`` on an m3i_mm config, with
the two fixes the pinned stack needs (``tools/analysis/browse_dataset.py`` hands over here).

    python -m m3i_mm.cli.downstream_browse SCRIPT CONFIG [their options]

- mmpretrain 1.2.0's browser passes the config's ``visualizer`` dict, minus ``type``, to
  ``UniversalVisualizer``; configs built on ``mmpretrain::`` bases (all of ours) carry the
  ``_scope_`` key mmengine adds there, which the visualizer rejects (``TypeError: unexpected
  keyword argument '_scope_'``). The key is dropped. Its ``make_grid`` also calls
  matplotlib's private ``adjust_bbox(figure, bbox)``, which in the installed matplotlib
  (3.11) also takes the figure's renderer (``TypeError: missing ... 'renderer'``); the
  renderer of the figure's canvas is passed when it is missing.
- mmseg 1.2.2's browser gives its visualizer an image that is a channel-permuted view of the
  input tensor; ``SegLocalVisualizer`` draws labels on ``np.zeros_like`` of it with OpenCV,
  which (OpenCV 5) refuses arrays of that memory layout. The image is made contiguous.

Nothing else changes: the script runs as ``__main__`` with its own arguments.
"""
import functools
import runpy
import sys

import numpy as np


def _drop_scope_key(cls) -> None:
    init = cls.__init__

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        kwargs.pop('_scope_', None)
        init(self, *args, **kwargs)

    cls.__init__ = wrapped


def _contiguous_image(cls) -> None:
    add = cls.add_datasample

    @functools.wraps(add)
    def wrapped(self, name, image, *args, **kwargs):
        return add(self, name, np.ascontiguousarray(image), *args, **kwargs)

    cls.add_datasample = wrapped


def _renderer_default(module) -> None:
    adjust = module.adjust_bbox

    @functools.wraps(adjust)
    def wrapped(fig, bbox_inches, renderer=None, *args, **kwargs):
        if renderer is None:
            renderer = fig.canvas.get_renderer()
        return adjust(fig, bbox_inches, renderer, *args, **kwargs)

    module.adjust_bbox = wrapped


def patch(script: str) -> None:
    """Apply the fix of the package ``script`` belongs to."""
    if '/mmpretrain/' in script.replace('\\', '/'):
        import inspect

        from matplotlib import _tight_bbox
        from mmpretrain.visualization import UniversalVisualizer
        _drop_scope_key(UniversalVisualizer)
        if 'renderer' in inspect.signature(_tight_bbox.adjust_bbox).parameters:
            _renderer_default(_tight_bbox)
    elif '/mmseg/' in script.replace('\\', '/'):
        from mmseg.visualization import SegLocalVisualizer
        _contiguous_image(SegLocalVisualizer)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit('usage: python -m m3i_mm.cli.downstream_browse SCRIPT CONFIG [...]')
    script = argv[0]
    patch(script)
    sys.argv = argv
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main()
