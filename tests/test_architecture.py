"""The import-layer contract (docs/architecture.md): a module imports its own layer or the ones below, never above,
and no modules import each other in a cycle.

Layers, top to bottom: faces (the HTTP API, the CLI) → engine (``rag.RAG``) → work (ingestion, retrieval,
synthesis, budgeting) → base (store, models, types, settings). Imports are read from the source with ``ast``, so
nothing is executed; an import inside a function counts (it runs sooner or later), one under
``if TYPE_CHECKING:`` does not (it never runs). A module in no layer fails the test until it is given one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "ingest", "rag")

# Top to bottom. "x.*" is the package x and everything in it, "x*" any module whose name starts so, else exact.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("faces", ("api.*", "rag.cli")),
    ("engine", ("rag.engine", "rag", "rag.jobs")),
    ("work", ("ingest.*", "rag.retrieval", "rag.synthesis*", "rag.budget")),
    ("base", ("rag.store.*", "rag.models.*", "rag.types", "rag.settings")),
]

# Upward imports that stand for now, each with why; remove an entry when its import is gone (the test says so).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def module_files() -> dict[str, Path]:
    """Every module of the three packages, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def layer_of(module: str) -> int | None:
    """The index of the module's layer in :data:`LAYERS` (0 is the top), or None when it is in none."""
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern.endswith(".*"):
                package = pattern[:-2]
                if module == package or module.startswith(package + "."):
                    return index
            elif pattern.endswith("*"):
                if module.startswith(pattern[:-1]):
                    return index
            elif module == pattern:
                return index
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that can run: everywhere except the body of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The repository modules ``module`` imports: ``from a import b`` names ``a.b`` when that is a module, else ``a``."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: resolved against this module's package
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            targets.add(candidate if candidate in known else base)
    return {t for t in targets if t.split(".")[0] in PACKAGES}


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Each module of the three packages → the modules of the three packages it imports."""
    files = module_files()
    return {m: frozenset(imports_of(m, path, set(files)) - {m}) for m, path in files.items()}


def upward_imports() -> list[tuple[str, str]]:
    """(importer, imported) pairs where the imported module sits in a higher layer."""
    upward: list[tuple[str, str]] = []
    for module, targets in import_graph().items():
        own = layer_of(module)
        for target in sorted(targets):
            target_layer = layer_of(target)
            if own is not None and target_layer is not None and target_layer < own:
                upward.append((module, target))
    return upward


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in import_graph() if layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS and docs/architecture.md): {unplaced}"


def test_imports_flow_down_the_layers() -> None:
    upward = upward_imports()
    names = [name for name, _ in LAYERS]
    unexpected = [
        f"{a} ({names[layer_of(a)]}) imports {b} ({names[layer_of(b)]})"  # type: ignore[index]
        for a, b in upward
        if (a, b) not in ALLOWED_UPWARD
    ]
    assert not unexpected, "upward imports:\n" + "\n".join(unexpected)
    stale = sorted(set(ALLOWED_UPWARD) - set(upward))
    assert not stale, f"allowed upward imports that no longer happen; remove them from ALLOWED_UPWARD: {stale}"


def test_no_import_cycles() -> None:
    """Within a layer too: modules that import each other cannot be understood (or tested) one at a time."""
    graph = {m: targets - {b for a, b in ALLOWED_UPWARD if a == m} for m, targets in import_graph().items()}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_the_checker_sees_what_it_must(tmp_path: Path) -> None:
    """The checker itself: function-level imports count, TYPE_CHECKING ones do not, relative ones resolve."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from rag.engine import RAG\n"
        "def serve():\n    from api.app import create_app\n"
        "from . import budget\n"
    )
    assert imports_of("rag.probe", probe, set(module_files())) == {"api.app", "rag.budget"}
    assert layer_of("rag.synthesis.compact") == layer_of("ingest.pipeline") == 2
    assert (layer_of("rag.cli"), layer_of("rag"), layer_of("rag.models.local_llm")) == (0, 1, 3)
    assert layer_of("rag.probe") is None
