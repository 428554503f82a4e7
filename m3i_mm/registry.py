"""Registries of the ``m3i_mm`` scope.

Each registry is a child of mmengine's root registry of the same kind (not of
mmpretrain's, mmdet's or mmseg's), so every OpenMMLab codebase finds our modules with a
scoped type such as ``type='m3i_mm.InternImage'``. The ``locations`` are imported lazily
on the first look-up, so configs need no ``custom_imports`` for that to work.

Plain names: the models (registry ``MODELS``: backbones, necks, heads, detectors, the M3I
pre-trainer) are also registered under their plain names in mmengine's root ``MODELS``
when m3i_mm is imported (:func:`register_plain_model_names`; ``custom_imports=dict(
imports=['m3i_mm'])`` in a config does it), so ``type='InternImage'`` works in the mmdet,
mmseg and mmpretrain scopes as in the official InternImage configs. mmengine looks a plain
name up in the scope's own registry first and then in the root, so a codebase's own model
of the same name would win in its scope (none of mmdet 3.3, mmseg 1.2 and mmpretrain 1.2
has one of these names; ``tests/test_registry.py`` checks). Everything else (datasets,
transforms, hooks, metrics, samplers, optimizer constructors, ...) keeps the scoped
spelling ``m3i_mm.X``: several of those names exist in other codebases with other meanings
(``CheckpointHook``, ``LVISMetric``, ``MultiSourceSampler``, ``ColorJitter``,
``RandomGrayscale``). :func:`scoped_name_hint` turns a registry ``KeyError`` into the
``m3i_mm.X`` that exists.
"""
import importlib
import re
from typing import Callable, List, Optional

from mmengine import registry as root
from mmengine.registry import Registry

from m3i_mm.utils.suggest import close_matches

__all__ = [
    'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'LOG_PROCESSORS', 'OPTIMIZERS',
    'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS',
    'TASK_UTILS', 'METRICS', 'EVALUATOR', 'VISUALIZERS', 'VISBACKENDS', 'FUNCTIONS',
    'STRATEGIES'
]

SCOPE = 'm3i_mm'


def _child(parent: Registry, locations: List[str]) -> Registry:
    return Registry(parent.name, parent=parent, scope=SCOPE, locations=locations)


_ENGINE = ['m3i_mm.engine']
RUNNERS = _child(root.RUNNERS, _ENGINE)
RUNNER_CONSTRUCTORS = _child(root.RUNNER_CONSTRUCTORS, _ENGINE)
LOOPS = _child(root.LOOPS, _ENGINE)
HOOKS = _child(root.HOOKS, _ENGINE)
LOG_PROCESSORS = _child(root.LOG_PROCESSORS, _ENGINE)
OPTIMIZERS = _child(root.OPTIMIZERS, _ENGINE)
OPTIM_WRAPPERS = _child(root.OPTIM_WRAPPERS, _ENGINE)
OPTIM_WRAPPER_CONSTRUCTORS = _child(root.OPTIM_WRAPPER_CONSTRUCTORS, _ENGINE)
PARAM_SCHEDULERS = _child(root.PARAM_SCHEDULERS, _ENGINE)
MODEL_WRAPPERS = _child(root.MODEL_WRAPPERS, _ENGINE)
VISUALIZERS = _child(root.VISUALIZERS, _ENGINE)
VISBACKENDS = _child(root.VISBACKENDS, _ENGINE)
FUNCTIONS = _child(root.FUNCTIONS, _ENGINE)
STRATEGIES = _child(root.STRATEGIES, _ENGINE)

# the keyed wrappers of exact resume (m3i_mm.engine.keyed_stream) are datasets and samplers too
_DATA = ['m3i_mm.datasets', 'm3i_mm.engine.keyed_stream']
DATASETS = _child(root.DATASETS, _DATA)
DATA_SAMPLERS = _child(root.DATA_SAMPLERS, _DATA)
TRANSFORMS = _child(root.TRANSFORMS, ['m3i_mm.datasets'])

MODELS = _child(root.MODELS, ['m3i_mm.models'])
WEIGHT_INITIALIZERS = _child(root.WEIGHT_INITIALIZERS, ['m3i_mm.models'])
TASK_UTILS = _child(root.TASK_UTILS, ['m3i_mm.models'])

METRICS = _child(root.METRICS, ['m3i_mm.evaluation'])
EVALUATOR = _child(root.EVALUATOR, ['m3i_mm.evaluation'])


#: Plain names of the models in mmengine's root MODELS, and the module that registers each.
PLAIN_MODEL_NAMES = {
    **dict.fromkeys(['InternImage', 'CBInternImage', 'InternImageCLIPNeck',
                     'InternImageConvNeck', 'AttentionPooling', 'Stride16Fusion',
                     'GaussianMIHead', 'BoltzmannMIHead', 'HFTextEncoder',
                     'M3IDataPreprocessor', 'M3I', 'MetadataLinearClsHead'], 'm3i_mm.models'),
    'CBDINO': 'm3i_mm.models.detectors',
}


def _plain_name_builder(name: str, module: str) -> Callable:
    """A builder registered as ``name`` in the root MODELS: it imports ``module`` on first
    use (so that ``import m3i_mm`` stays light), then puts the class itself in its place."""

    def build(*args, **kwargs):
        importlib.import_module(module)
        cls = MODELS.get(name)
        root.MODELS.register_module(name=name, module=cls, force=True)
        return cls(*args, **kwargs)

    build.__name__ = build.__qualname__ = name
    build.__module__ = __name__
    build.__doc__ = f'``{SCOPE}.{name}`` under its plain name ({module} is imported on first use).'
    return build


def register_plain_model_names() -> None:
    """Register :data:`PLAIN_MODEL_NAMES` in mmengine's root MODELS (idempotent). A name
    the root already holds for another module is left alone."""
    for name, module in PLAIN_MODEL_NAMES.items():
        held = root.MODELS.module_dict.get(name)
        if held is None:
            root.MODELS.register_module(name=name, module=_plain_name_builder(name, module))


_NOT_IN_REGISTRY = re.compile(r'([\w.]+) is not in the (?:([\w.]+)::)?(\w+) registry')


def scoped_name_hint(message: str) -> Optional[str]:
    """For mmengine's "X is not in the SCOPE::NAME registry" error: the ``m3i_mm.X`` that
    exists in that kind of registry, or close m3i_mm names; None when there is nothing to say.
    """
    match = _NOT_IN_REGISTRY.search(message)
    if not match:
        return None
    key, registry_name = match.group(1).rsplit('.', 1)[-1], match.group(3)
    registry = next((globals()[n] for n in __all__ if globals()[n].name == registry_name), None)
    if registry is None:
        return None
    registry.import_from_location()
    names = list(registry.module_dict)
    if key in names:
        return f"m3i_mm registers {key} in its scope: write type='{SCOPE}.{key}'"
    close = close_matches(key, names)
    if close:
        return 'did you mean ' + ' or '.join(f"'{SCOPE}.{c}'" for c in close) + '?'
    return None
