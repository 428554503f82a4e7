"""Registries of the ``m3i_mm`` scope.

Each registry is a child of mmengine's root registry of the same kind (not of
mmpretrain's, mmdet's or mmseg's), so every OpenMMLab codebase finds our modules with a
scoped type such as ``type='m3i_mm.InternImage'``. The ``locations`` are imported lazily
on the first look-up, so configs need no ``custom_imports`` for that to work.
"""
from typing import List

from mmengine import registry as root
from mmengine.registry import Registry

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
