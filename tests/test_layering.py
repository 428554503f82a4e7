"""The package's layers import downward only.

``m3i_mm/utils`` holds leaf helpers, the library (``ops``, ``models``, ``datasets``,
``engine``, ``zoo``, ``evaluation``) sits above it, and ``m3i_mm/cli`` (the command-line
layer of ``tools/``) and ``m3i_mm/demo`` (demo data) sit on top. Imports are read from the
source (also those inside functions), so a lazy import that closes a cycle is found too.
"""
import ast
import os.path as osp
from collections import defaultdict
from pathlib import Path
from typing import Dict, Set

import m3i_mm

PACKAGE_DIR = Path(osp.dirname(m3i_mm.__file__))
TOP_LAYERS = {'cli', 'demo'}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imported_modules(path: Path) -> Set[str]:
    """Every ``m3i_mm`` module ``path`` imports, resolving relative imports."""
    module = _module_name(path)
    package = module if path.name == '__init__.py' else module.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            found.add(target)
            found.update(f'{target}.{a.name}' for a in node.names)  # `from . import zoo`
    return {name for name in found if name.split('.')[0] == 'm3i_mm'}


def _layer(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def subpackage_graph() -> Dict[str, Set[str]]:
    """Edges between ``m3i_mm``'s subpackages (``''`` is the package's own ``__init__``),
    keeping only targets that are subpackages or modules of the package."""
    layers = {p.name for p in PACKAGE_DIR.iterdir() if p.is_dir() and (p / '__init__.py').exists()}
    layers |= {p.stem for p in PACKAGE_DIR.glob('*.py') if p.stem != '__init__'}
    graph: Dict[str, Set[str]] = defaultdict(set)
    for path in PACKAGE_DIR.rglob('*.py'):
        source = _layer(_module_name(path))
        for target in map(_layer, _imported_modules(path)):
            if target != source and target in layers:
                graph[source].add(target)
    return graph


def test_the_library_does_not_import_the_layers_above_it():
    graph = subpackage_graph()
    upward = {(a, b) for a, bs in graph.items() for b in bs
              if b in TOP_LAYERS and a not in TOP_LAYERS}
    assert not upward, f'library modules import the command-line/demo layer: {sorted(upward)}'


def test_utils_is_a_leaf():
    targets = subpackage_graph().get('utils', set())
    assert not targets, f'm3i_mm.utils imports {sorted(targets)}'


def test_subpackages_have_no_import_cycle():
    graph = subpackage_graph()
    graph.pop('', None)  # the package __init__ imports what registers itself
    state: Dict[str, int] = {}
    stack = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError('import cycle between subpackages: ' + ' -> '.join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_relative_and_lazy_imports(tmp_path, monkeypatch):
    """The reader resolves ``from ..x import y`` and imports inside functions."""
    pkg = tmp_path / 'm3i_mm'
    (pkg / 'engine' / 'hooks').mkdir(parents=True)
    (pkg / '__init__.py').write_text('from . import zoo\n')
    hook = pkg / 'engine' / 'hooks' / 'h.py'
    hook.write_text('from ...cli.launch import x\n\ndef f():\n    from m3i_mm.demo import y\n')
    monkeypatch.setattr(__import__(__name__, fromlist=['_']), 'PACKAGE_DIR', pkg)
    assert _imported_modules(hook) >= {'m3i_mm.cli.launch', 'm3i_mm.demo'}
    assert 'm3i_mm.zoo' in _imported_modules(pkg / '__init__.py')
