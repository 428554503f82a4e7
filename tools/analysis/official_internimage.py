"""Import the official InternImage code from a user's checkout, for side-by-side benchmarks.

Nothing of the official code is copied into this repository: the benchmarks import it from
a checkout the user gives (``git clone https://github.com/OpenGVLab/InternImage``) with
``--official /path/to/InternImage``. Its compiled ``DCNv3`` extension is optional: without
it the official PyTorch core (``dcnv3_core_pytorch``) is what runs, which is the CPU path
users of the official code have. ``timm`` (for ``DropPath``) is needed only for the model.
"""
import importlib
import os.path as osp
import sys
import types
from typing import Callable


def _add_classification_path(root: str) -> str:
    folder = osp.join(root, 'classification')
    if not osp.isdir(osp.join(folder, 'ops_dcnv3')):
        raise SystemExit(f'--official {root!r}: no classification/ops_dcnv3 in it; give the '
                         'root of an OpenGVLab/InternImage checkout')
    if folder not in sys.path:
        sys.path.insert(0, folder)
    # The official op module imports its compiled extension and asks pkg_resources for the
    # extension's version at import time; stand-ins let the pure-PyTorch parts load where
    # the extension is not built.
    try:
        importlib.import_module('DCNv3')
    except ImportError:
        sys.modules['DCNv3'] = types.ModuleType('DCNv3')
        try:
            import pkg_resources
        except ImportError:
            pkg_resources = sys.modules['pkg_resources'] = types.ModuleType('pkg_resources')
        real = getattr(pkg_resources, 'get_distribution', None)

        def get_distribution(name):
            if name == 'DCNv3' or real is None:
                return types.SimpleNamespace(version='0')
            return real(name)

        pkg_resources.get_distribution = get_distribution
    return folder


def official_dcnv3_core_pytorch(root: str) -> Callable:
    """The official pure-PyTorch DCNv3 core, ``dcnv3_core_pytorch``."""
    _add_classification_path(root)
    return importlib.import_module('ops_dcnv3.functions.dcnv3_func').dcnv3_core_pytorch


def official_dcnv3_cuda(root: str):
    """The official CUDA ``DCNv3Function`` (None when its extension is not built)."""
    _add_classification_path(root)
    if not hasattr(sys.modules['DCNv3'], 'dcnv3_forward'):
        return None
    return importlib.import_module('ops_dcnv3.functions.dcnv3_func').DCNv3Function


def official_internimage_class(root: str):
    """The official ``InternImage`` classification model class."""
    _add_classification_path(root)
    return importlib.import_module('models.intern_image').InternImage


if __name__ == '__main__':  # a helper module: say what it is instead of printing nothing
    import argparse
    argparse.ArgumentParser(
        prog='official_internimage.py', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='A helper module of benchmark_dcnv3.py, benchmark_model.py and '
        'gpu_check.py (--official PATH):'
        ' they import it; it has no command of its own.').print_help()
