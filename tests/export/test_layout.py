"""The shape of ``export/``: packages by task, no import cycle, small modules, one copy of each shared helper,
and no code shared with ``app/`` (the sidecar JSON is the only contract)."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "export"
MAX_LINES = 400


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (packages by their ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _imports(path: Path, name: str) -> Iterator[str]:
    """Every module ``path`` imports (module level or inside functions), relative imports resolved."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)  # ``from pkg import module``


def import_graph() -> dict[str, set[str]]:
    """Edges between ``export`` modules (an import of ``a.b.c`` also counts as one of its packages ``a.b``, ``a``)."""
    modules = _modules(PACKAGE)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for target in _imports(path, name):
            parts = target.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that ends where it starts), or None.  A package's ``__init__`` importing
    nothing (the case here) makes ``pkg -> pkg.module`` edges impossible, so no edge is special-cased."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_export() -> None:
    graph = import_graph()
    assert len(graph) > 30 and "export.localize.finetune.run" in graph
    assert graph["export.localize.from_finetune"] >= {"export.localize.finetune.checkpoint"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_package_inits_import_nothing_of_the_package() -> None:
    """Importing ``export.localize.finetune.cli`` must not drag in its siblings through ``__init__`` files."""
    graph = import_graph()
    inits = [name for name, path in _modules(PACKAGE).items() if path.name == "__init__.py"]
    assert {"export", "export.cam", "export.common", "export.localize", "export.localize.finetune"} <= set(inits)
    assert {name: graph[name] for name in inits} == {name: set() for name in inits}


def test_tasks_import_only_common_and_themselves() -> None:
    tasks = ("export.cam", "export.localize", "export.pose")
    for name, deps in import_graph().items():
        own = next((t for t in tasks if name == t or name.startswith(t + ".")), None)
        for dep in deps:
            if dep == "export" or dep.startswith("export.common") or (own and dep.startswith(own)):
                continue
            if name == "export.__main__":  # names the commands as strings, imports none of them
                continue
            pytest.fail(f"{name} imports {dep}: tasks share code only through export.common")


def test_export_and_app_share_no_code() -> None:
    for name, path in _modules(PACKAGE).items():
        bad = {m for m in _imports(path, name) if m == "app" or m.startswith("app.")}
        assert not bad, f"{name} imports {bad}"
    for name, path in _modules(REPO / "app").items():
        bad = {m for m in _imports(path, name) if m == "export" or m.startswith("export.")}
        assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(_modules(PACKAGE)))
def test_module_is_small(name: str) -> None:
    lines = len(_modules(PACKAGE)[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


def _definers(function: str) -> set[str]:
    out: set[str] = set()
    for name, path in _modules(PACKAGE).items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == function:
                out.add(name)
    return out


@pytest.mark.parametrize(
    ("function", "module"),
    [
        ("onnx_predict", "export.common.onnx_run"),
        ("ort_session", "export.common.onnx_run"),
        ("check_onnx", "export.common.onnx_export"),
        ("box_iou", "export.common.boxes"),
        ("overlap", "export.common.boxes"),
        ("sha256_file", "export.common.hashing"),
        ("chosen_alpha", "export.localize.metrics"),
        ("fold_summary", "export.localize.metrics"),
    ],
)
def test_one_definition(function: str, module: str) -> None:
    assert _definers(function) == {module}


def test_no_hand_written_hashing_or_proc_reads() -> None:
    for name, path in _modules(PACKAGE).items():
        text = path.read_text()
        assert "/proc" not in text, name
        if name != "export.common.hashing":
            assert "hashlib.sha256" not in text and "file_digest" not in text, name
        if name != "export.common.onnx_run":
            assert "InferenceSession(" not in text and "SessionOptions(" not in text, name
