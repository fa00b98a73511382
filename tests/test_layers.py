"""Imports point down the data flow: logs (reading) <- analysis (queries) <- cli, and no module cycle.

Read from the source, not from `sys.modules`: every `import` statement counts,
the ones inside functions too, so a cycle cannot hide behind a late import.
Only imports under `if TYPE_CHECKING:` are left out of the cycle check, since
they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mcptrace"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The mcptrace modules an import statement loads (a `from pkg import mod` names the module)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {n for n in names if n in MODULES and n != module}


def imports(module: str, *, typing_only: bool) -> set[str]:
    """What `module` imports anywhere in its body; with `typing_only`, its TYPE_CHECKING imports too."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not typing_only:
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.update(_imported(module, node))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(MODULES[module].read_text(), str(MODULES[module])))
    return found


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("mcptrace.logs", ("mcptrace.analysis", "mcptrace.cli", "mcptrace.server", "mcptrace.notebook")),
        ("mcptrace.analysis", ("mcptrace.cli", "mcptrace.server", "mcptrace.notebook")),
    ],
)
def test_a_layer_never_imports_the_layers_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    wrong = [
        f"{module} imports {target}"
        for module in MODULES
        if in_package(module, layer)
        for target in sorted(imports(module, typing_only=True))
        if any(in_package(target, up) for up in forbidden)
    ]
    assert wrong == []


def test_the_reading_layer_and_the_queries_are_separate_packages() -> None:
    assert "mcptrace.logs._load" in MODULES and "mcptrace.logs._index" in MODULES
    assert not [m for m in MODULES if in_package(m, "mcptrace.analysis") and m.endswith(("_load", "_index"))]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None (iterative DFS)."""
    state: dict[str, int] = {}
    for root in graph:
        if root in state:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        path = [root]
        state[root] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = pending.pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_module_of_mcptrace_imports_itself_back_even_from_inside_a_function() -> None:
    graph = {module: imports(module, typing_only=False) for module in MODULES}
    assert find_cycle(graph) is None
