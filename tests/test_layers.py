"""The package's architecture, checked: each folder is a layer that imports only from the layers
before it, nothing imports the command-line layer, there is no import cycle, and no module is
over 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO_DIR

PACKAGE = REPO_DIR / "dlwp_models"
#: lowest first; a module may import from its own layer and the ones before it
LAYERS = ("errors", "weights", "loading", "inputs", "models", "hub", "cli")
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def layer_of(module: str) -> str | None:
    """The layer a module belongs to; None for the package's own ``__init__``/``__main__``/``_bundled``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def imports_of(module: str, *, top_level_only: bool = False) -> set[str]:
    """The dlwp_models modules that ``module`` imports (resolved to existing module names)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            names = [f"{root}.{alias.name}" for alias in node.names] + [root]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith("dlwp_models"):
                found.add(name)
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_from_its_own_layer_or_below(module):
    layer = layer_of(module)
    if layer is None:
        return
    for imported in imports_of(module):
        other = layer_of(imported)
        if other is None:
            assert imported in ("dlwp_models", "dlwp_models.__init__") and layer == "cli", (
                f"{module} imports {imported}")
            continue
        assert LAYERS.index(other) <= LAYERS.index(layer), f"{module} ({layer}) imports {imported} ({other})"


def test_nothing_imports_the_command_line_layer():
    for module in MODULES:
        if layer_of(module) != "cli" and module != "dlwp_models.__main__":
            offending = {m for m in imports_of(module) if layer_of(m) == "cli"}
            assert not offending, f"{module} imports the command-line layer: {sorted(offending)}"


def test_no_import_cycles_at_module_level():
    graph = {m: imports_of(m, top_level_only=True) for m in MODULES}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if nxt == node or (node.startswith(nxt + ".") and MODULES[nxt].name == "__init__.py"):
                continue          # a submodule importing its own package's __init__ is fine once the package is loaded
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(trail + [node, nxt])}")
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_450_lines(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines"


def test_the_checker_sees_a_layer_violation(tmp_path, monkeypatch):
    """The import reader resolves relative imports: a made-up upward import is caught."""
    fake = PACKAGE / "weights" / "manifest.py"
    monkeypatch.setitem(MODULES, "dlwp_models.weights.fake", tmp_path / "fake.py")
    (tmp_path / "fake.py").write_text("from ..models.classifiers import CLASSIFIERS\nfrom . import manifest\n")
    assert fake.exists()
    found = imports_of("dlwp_models.weights.fake")
    assert "dlwp_models.models.classifiers" in found and "dlwp_models.weights.manifest" in found
