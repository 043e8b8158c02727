"""The shape of ``core/``: its import graph, read from the sources with ``ast`` (every import,
function-level ones included).

- No circles: no module reaches itself through its imports.
- No climbing back up: the packages are layered, and a module imports only from its own package
  or from a layer below (the method never imports the pipeline that composes it, the engine never
  imports the command line).
- ``core/`` never imports the app (``ui``, ``views``) or Streamlit.
- ``core/method/`` holds the method and nothing else: the paper's importance and dampening, and
  the rules that choose α.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core"

# Lower layers first; a module may import its own package and any layer before its own.
LAYERS = (
    ("core.errors", "core.registry", "core.cache", "core.assets"),  # core.assets: the shipped cache entries
    ("core.fast",),  # thread set-up, per-sample gradients, packed convolutions, model stages, torchrun
    ("core.data",),
    ("core.models", "core.method"),  # architectures and recipes; the paper's importance and dampening
    ("core.evaluation",),  # accuracy, the attacks, the fast re-evaluation after dampening, reports
    ("core.experiment",),  # the one pipeline that composes the above
    ("core.compare",),  # unlearning methods side by side, the protocols, the paper's numbers
    ("core.plots",),
    ("core.cli",),  # the command line and the bench
    ("core", "core.__main__"),  # the package's re-exports and ``python -m core``
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in CORE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names), at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (write core.… in full)"
            for alias in node.names:  # `from core.x import y` may import the module core.x.y
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
    return found


GRAPH = {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _layer(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "core" and module.startswith(prefix + ".")):
                best = index
    assert best is not None, f"{module} is in no layer: add its package to LAYERS"
    return best


def _package(module: str) -> str:
    """core.method.importance -> core.method; a package or a module directly in core/ is its own."""
    if MODULES[module].name == "__init__.py" or module.count(".") < 2:
        return module
    return module.rsplit(".", 1)[0]


def test_the_graph_sees_the_packages():
    assert {"core.method.importance", "core.method.dampening", "core.experiment", "core.cli.main"} <= set(MODULES)
    assert "core.method.dampening" in GRAPH["core.experiment"]  # the walk sees real imports


def test_no_import_circles():
    index, low, on_stack, stack, circles, counter = {}, {}, set(), [], [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert circles == []


def test_no_import_climbs_back_up():
    climbs = [(module, imported) for module, imports in GRAPH.items() for imported in imports
              if _package(imported) != _package(module) and _layer(imported) > _layer(module)]
    assert climbs == []


def test_core_never_imports_the_app_or_streamlit():
    for module, path in MODULES.items():
        outside = {m.split(".")[0] for m in _imports(path)} & {"ui", "views", "streamlit", "app"}
        assert not outside, (module, outside)


def test_the_method_folder_holds_the_papers_algorithm_only():
    files = sorted(p.name for p in (CORE / "method").glob("*.py"))
    assert files == ["__init__.py", "alpha.py", "dampening.py", "importance.py"]
    for name in ("importance", "dampening", "alpha"):  # and reads nothing of the speed machinery at module level
        tree = ast.parse((CORE / "method" / f"{name}.py").read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not [n for n in top if isinstance(n, ast.ImportFrom) and n.module.startswith("core.fast")], name


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
    __import__(module)
