"""Import the official InternImage code from a user's checkout, for side-by-side benchmarks
and FLOP counts.

Nothing of the official code is copied into this repository: the benchmarks import it from
a checkout the user gives (``git clone https://github.com/OpenGVLab/InternImage``) with
``--official /path/to/InternImage``. Its compiled ``DCNv3`` extension is optional: without
it the official PyTorch core (``dcnv3_core_pytorch``) is what runs, which is the CPU path
users of the official code have. ``timm`` (for ``DropPath``) is needed only for the model.
"""
import functools
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


def official_classifier(root: str, settings: dict, num_classes: int = 1000,
                        clip_projector: bool = False, core_op: str = 'DCNv3_pytorch'):
    """The official classifier with the settings of one of our InternImage archs.

    Args:
        settings: ``InternImage.arch`` of our backbone (``channels``, ``depths``, ...).
        clip_projector: The H/G head (attention pooling) instead of the T-XL conv head.
    """
    import contextlib
    import io
    keys = ('channels', 'depths', 'groups', 'layer_scale', 'offset_scale', 'post_norm',
            'mlp_ratio', 'res_post_norm', 'dw_kernel_size', 'level2_post_norm_block_ids',
            'center_feature_scale', 'remove_center')
    kwargs = {key: settings[key] for key in keys}
    kwargs['level2_post_norm'] = bool(settings['level2_post_norm_block_ids'])
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its settings
        return official_internimage_class(root)(core_op=core_op, num_classes=num_classes,
                                                use_clip_projector=clip_projector,
                                                drop_path_rate=0.0, **kwargs)


def official_get_flops(root: str) -> Callable:
    """The official counting function ``get_flops(model, input_shape)`` of
    ``detection/get_flops.py``, run as it is from the checkout.

    Only its two functions (``dcnv3_flops`` and ``get_flops``) are taken from the file (the
    module imports mmdet 2.x at the top); they run with mmcv's ``get_model_complexity_info``,
    the counter they call (the same code in mmcv 1.x and 2.x). Two things around the counting
    differ: the counter's per-layer printout is off, and the string formatting the function
    ends with (``flops_to_string``, ``params_to_string``) is the identity, so that the
    returned ``(flops, params)`` are the unrounded numbers. ``model`` must have a
    ``backbone`` attribute (the official InternImage, for its ``depths`` and ``channels``).
    """
    import ast
    from mmcv.cnn import get_model_complexity_info
    path = osp.join(root, 'detection', 'get_flops.py')
    if not osp.isfile(path):
        raise SystemExit(f'--official {root!r}: no detection/get_flops.py in it; give the '
                         'root of an OpenGVLab/InternImage checkout')
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    wanted = ('dcnv3_flops', 'get_flops')
    functions = [node for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name in wanted]
    if sorted(node.name for node in functions) != sorted(wanted):
        raise SystemExit(f'{path}: expected the functions {wanted} (another version of the '
                         'official code?)')
    namespace = dict(get_model_complexity_info=functools.partial(get_model_complexity_info,
                                                                 print_per_layer_stat=False),
                     flops_to_string=lambda flops: flops,
                     params_to_string=lambda params: params)
    exec(compile(ast.Module(body=functions, type_ignores=[]), path, 'exec'), namespace)
    return namespace['get_flops']


if __name__ == '__main__':  # a helper module: say what it is instead of printing nothing
    import argparse
    argparse.ArgumentParser(
        prog='official_internimage.py', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='A helper module of benchmark_dcnv3.py, benchmark_model.py, get_flops.py and '
        'gpu_check.py (--official PATH):'
        ' they import it; it has no command of its own.').print_help()
