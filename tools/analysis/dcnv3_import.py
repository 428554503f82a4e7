"""Import the DCNv3 op package with or without the OpenMMLab stack.

``import m3i_mm`` pulls in mmengine (registries, the model zoo). The op itself needs only
torch (and Triton for its kernels), so on a machine without mmengine (a rented GPU box with
its own python) the tools here load ``m3i_mm.ops.dcnv3`` without running
``m3i_mm/__init__.py``: ``m3i_mm`` is registered as a bare package pointing at the source
folder, and everything below it imports as usual.
"""
import importlib
import importlib.util
import os.path as osp
import sys
import types

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def openmmlab_available() -> bool:
    """Whether mmengine can be imported (then ``import m3i_mm`` works as usual)."""
    try:
        return importlib.util.find_spec('mmengine') is not None
    except (ImportError, ValueError):  # an import hook that refuses it
        return False


def import_dcnv3() -> types.ModuleType:
    """``m3i_mm.ops.dcnv3``, imported normally when mmengine is there, else standalone."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    if 'm3i_mm' not in sys.modules and not openmmlab_available():
        package = types.ModuleType('m3i_mm')
        package.__path__ = [osp.join(REPO, 'm3i_mm')]
        package.__file__ = osp.join(REPO, 'm3i_mm', '__init__.py')
        package.__doc__ = 'm3i_mm loaded without its __init__ (no mmengine here)'
        sys.modules['m3i_mm'] = package
    return importlib.import_module('m3i_mm.ops.dcnv3')
