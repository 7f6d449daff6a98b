"""The package's layers, stated once and held by a test over the import graph.

Each top-level module or subpackage of `unified` sits on a layer and imports only from its own layer or below;
no two modules import each other, directly or around a circle. Imports inside functions count like any other:
a function-local import that dodges a cycle is still a cycle. The few places where an import is deferred on purpose
are listed in DEFERRED with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "unified"

# lowest first; a unit may import from its own layer and the layers below it
LAYERS = [
    # the exceptions, declared settings (a dataclass field with its meaning), what a local model directory must
    # hold before it is read, and the sample media the examples use
    {"errors", "settings", "local_dirs", "samples"},
    {"media", "tokenizers"},  # decoding media; the shared vocabulary
    {"model", "heads"},  # the network and its output heads
    {"processing"},  # rows of media and text -> batches
    {"saving", "hub"},  # a servable directory, and the shim transformers' Auto classes load it through
    {"merging"},  # saved models merged weight by weight into a new servable directory
    {"task_zoo"},  # tasks: prompts, grammars, decoding, metrics, evaluation
    {"data"},  # data files, shards, the synthetic world
    {"training"},  # the training loop and what it builds
    # front doors (`arguments`: the command line's value types; `packing`: names at their old address)
    # and `exporting`: a saved model rewritten for shipping, through the front door's Model
    # `harness`: an evaluation harness's requests answered through Model; `lmms_eval`: lmms-eval's model class
    {"api", "demo", "serving", "cli", "arguments", "packing", "exporting", "harness", "lmms_eval", "__init__"},
]

# units that are not importable code of the package
NOT_CODE = {
    "default_model": "a saved model directory; its unified_hub.py is the shim transformers loads from there",
}

# files that may import `unified` modules inside functions, and why
DEFERRED = {
    "unified/__init__.py": "`import unified` stays light: Model (and torch) load on first use",
    "unified/cli.py": "each subcommand loads only its own stack, so `unified --help` answers at once",
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of a `unified` module in the file."""
    tree = ast.parse(path.read_text())
    in_function = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for node in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("unified"):
            submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            names = submodules if len(submodules) == len(node.names) else [node.module, *submodules]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "unified"]
        found += [(name, node.lineno, id(node) in in_function) for name in names]
    return found


def _graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, int, bool]]]]:
    modules = _modules()
    return modules, {name: _imports(path, modules) for name, path in modules.items()}


def _layer(unit: str) -> int:
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"unified.{unit} is on no layer: add it to LAYERS in tests/test_layers.py")


def test_every_unit_is_on_a_layer():
    units = {_unit(name) for name in _modules()} - set(NOT_CODE)
    for unit in units:
        _layer(unit)


def test_imports_point_down():
    modules, graph = _graph()
    upward = []
    for name, imports in graph.items():
        src = _unit(name)
        if src in NOT_CODE:
            continue
        for target, line, _ in imports:
            dst = _unit(target)
            if _layer(dst) > _layer(src):
                upward.append(f"{modules[name].relative_to(PACKAGE.parent)}:{line} ({src}) imports {target} ({dst})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_module_cycle():
    """No circle of imports between modules (function-local imports included)."""
    modules, graph = _graph()
    edges = {name: {t for t, _, _ in imports if t in modules and t != name} for name, imports in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                circle = visit(nxt)
                if circle:
                    return circle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in state:
            circle = visit(start)
            assert circle is None, "import cycle: " + " -> ".join(circle)


def test_function_local_imports_only_where_deferred_on_purpose():
    modules, graph = _graph()
    local = sorted(f"{modules[name].relative_to(PACKAGE.parent)}:{line} imports {target}"
                   for name, imports in graph.items() for target, line, inside in imports
                   if inside and str(modules[name].relative_to(PACKAGE.parent)) not in DEFERRED)
    assert not local, ("imports inside functions (move the shared piece down a layer, or list the file in DEFERRED "
                       "with the reason):\n" + "\n".join(local))


@pytest.mark.parametrize("source", [
    "from unified.data.files import load_data_dir\n",
    "def f():\n    from unified.training.config import load_config\n",
])
def test_an_upward_import_is_caught(source, tmp_path):
    """The checker itself: an import of a higher layer from `model`, at module level or inside a function."""
    modules = {**_modules(), "unified.model.probe": tmp_path / "probe.py"}
    (tmp_path / "probe.py").write_text(source)
    (target, _, _), = _imports(tmp_path / "probe.py", modules)
    assert _layer(_unit(target)) > _layer(_unit("unified.model.probe"))
