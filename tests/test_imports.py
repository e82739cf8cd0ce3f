"""The import graph among ovmfgen modules has no cycle (function-local imports included).

Every ovmfgen module is parsed with ``ast``; each ``import``/``from ... import`` anywhere in it (top
level, function bodies, ``if TYPE_CHECKING:`` blocks) that names an ovmfgen module adds an edge. A
cycle hidden behind a function-local import is still a cycle: the two modules cannot be understood,
tested or split apart one without the other.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import ovmfgen

PACKAGE_DIR = Path(ovmfgen.__file__).resolve().parent
# Edges another change removes; each names its owner. Empty when the graph is clean.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    """``ovmfgen/builder/plan.py`` -> ``ovmfgen.builder.plan`` (a package's ``__init__`` -> the package)."""
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    """Every module of the ovmfgen package, by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The ovmfgen module ``name`` refers to (``ovmfgen.builder.plan.Plan`` -> ``ovmfgen.builder.plan``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ovmfgen modules ``module`` imports, wherever in the file the import statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` names a module; `from mod import name` resolves to the module itself.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            resolved = _resolve(target, modules) if target.startswith("ovmfgen") else None
            if resolved and resolved != module:
                found.add(resolved)
    return found


@lru_cache(maxsize=1)
def import_graph() -> dict[str, set[str]]:
    """module -> the ovmfgen modules it imports (parsed once per session; callers do not modify it)."""
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (depth-first search, sorted for a stable answer)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if (node, nxt) in KNOWN_EXCEPTIONS:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_check_finds_a_cycle() -> None:
    """The search itself works: a made-up graph with a cycle is caught, one without is not."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_function_local_imports_count() -> None:
    """An import inside a function body is an edge like any other."""
    graph = import_graph()
    assert "ovmfgen.builder.plan" in graph["ovmfgen.builder.command"]
    assert all(name.startswith("ovmfgen") for deps in graph.values() for name in deps)


def code_map() -> set[str]:
    """The paths ``ovmfgen/__init__.py``'s code map lists (``build/plan.py``, ``boot/xen/``...)."""
    text = (ovmfgen.__doc__ or "").split("Code map::", 1)[1]
    listed: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.strip().startswith('"""'):
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(d for _, d in stack) + name
        if name.endswith("/"):
            stack.append((indent, name))
        listed.add(path)
    return listed


def test_code_map_lists_every_module() -> None:
    """The map in ovmfgen/__init__.py names each module that exists, and only those (it cannot drift)."""
    listed = {p.removeprefix("ovmfgen/") for p in code_map()}
    root = PACKAGE_DIR
    missing = [p for p in listed if p and not (root / p).exists()]
    assert not missing, f"the code map lists what does not exist: {missing}"
    unlisted = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*.py"))
                if not (p.name == "__init__.py" and p.parent != root)
                and p.relative_to(root).as_posix() not in listed
                and not p.relative_to(root).as_posix().startswith("boot/xen/")]  # listed as one line
    assert not unlisted, f"add these to the code map in ovmfgen/__init__.py: {unlisted}"
