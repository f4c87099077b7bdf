"""The package's architecture, checked: each folder is a layer that imports only from the layers
before it (imports made inside functions count), the applications do not import each other,
nothing imports the command-line layer, the ONNX runtime knows no model family, there is no import
circle at any depth (in the package, and among the benchmarks), and no module is over 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_DIR

PACKAGE = REPO_DIR / "dlwp_models"
#: lowest first; a module may import from its own layer and the ones before it. The applications
#: (batch jobs, the server, export, publishing, fine-tuning) share a rank: none imports another;
#: measuring on labelled photos (evaluation) sits below them, as fine-tuning evaluates its result.
LAYERS = (
    ("errors",),
    ("safe_write",),
    ("weights",),
    ("loading",),
    ("inputs",),
    ("models",),
    ("hub",),
    ("tasks",),
    ("evaluation",),
    ("batch", "serve", "export", "publish", "train", "quantize"),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
FAMILIES = ("dlwp_models.models.classifiers", "dlwp_models.models.cyclegan", "dlwp_models.models.captioning")
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_DIR).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def layer_of(module: str) -> str | None:
    """The layer a module belongs to; None for the package's own ``__init__``/``__main__``/``_bundled``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def imports_of(module: str, *, top_level_only: bool = False) -> set[str]:
    """The dlwp_models modules that ``module`` imports (resolved to existing module names)."""
    return _imports_in(MODULES[module], module, MODULES, top_level_only=top_level_only)


def _imports_in(path: Path, module: str, known: dict, *, top_level_only: bool = False) -> set[str]:
    """The modules of ``known`` that the file ``path`` (module ``module``) imports."""
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
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
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
            assert imported in ("dlwp_models", "dlwp_models.__init__") and RANK[layer] >= RANK["tasks"], (
                f"{module} imports {imported}"
            )
            continue
        assert other == layer or RANK[other] < RANK[layer], f"{module} ({layer}) imports {imported} ({other})"


def test_nothing_imports_the_command_line_layer():
    for module in MODULES:
        if layer_of(module) != "cli" and module != "dlwp_models.__main__":
            offending = {m for m in imports_of(module) if layer_of(m) == "cli"}
            assert not offending, f"{module} imports the command-line layer: {sorted(offending)}"


def test_the_onnx_runtime_knows_no_model_family():
    for module in (
        "dlwp_models.models.onnx_backend",
        "dlwp_models.models.onnx_graphs",
        "dlwp_models.models.int8_backend",
    ):
        families = {m for m in imports_of(module) if m.startswith(FAMILIES)}
        assert not families, f"{module} imports {sorted(families)}"


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _without_own_package(module: str, imported: set[str]) -> set[str]:
    """A submodule importing its own package's ``__init__`` (loaded before it) is no circle."""
    return {m for m in imported if not (module.startswith(m + ".") and MODULES[m].name == "__init__.py")}


def test_no_import_circle_at_any_depth():
    graph = {m: _without_own_package(m, imports_of(m)) for m in MODULES}
    assert _circles(graph) == []


def test_no_import_circle_among_the_benchmarks():
    """``run.py`` imports the benches, the benches a shared helper, and nothing imports ``run.py``."""
    folder = REPO_DIR / "benchmarks"
    known = {path.stem: path for path in folder.glob("*.py")}
    graph = {name: _imports_in(path, name, known) for name, path in known.items()}
    assert _circles(graph) == []
    assert not [name for name, imported in graph.items() if "run" in imported]


def test_the_circle_finder_sees_a_circle_made_inside_functions():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


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
