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
    """``m3i_mm.ops.dcnv3``, imported normally when mmengine is there, else standalone.

    From a checkout the checkout's m3i_mm is used; from an installed package's tools
    (``m3i_mm/.mim/tools``) the installed m3i_mm.
    """
    if osp.isdir(osp.join(REPO, 'm3i_mm')) and REPO not in sys.path:
        sys.path.insert(0, REPO)
    if 'm3i_mm' not in sys.modules and not openmmlab_available():
        spec = importlib.util.find_spec('m3i_mm')  # locates the package without running it
        if spec is None:
            raise SystemExit('m3i_mm is neither in this checkout nor installed')
        folder = list(spec.submodule_search_locations)[0]
        package = types.ModuleType('m3i_mm')
        package.__path__ = [folder]
        package.__file__ = osp.join(folder, '__init__.py')
        package.__doc__ = 'm3i_mm loaded without its __init__ (no mmengine here)'
        sys.modules['m3i_mm'] = package
    return importlib.import_module('m3i_mm.ops.dcnv3')


if __name__ == '__main__':  # a helper module: say what it is instead of printing nothing
    import argparse
    argparse.ArgumentParser(
        prog='dcnv3_import.py', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='A helper module of benchmark_dcnv3.py, gpu_check.py and '
        'kernel_report.py: they import it; it has no command of its own.').print_help()
