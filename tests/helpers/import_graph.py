"""The package's import graph, read from the source with `ast` (deferred imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import zegclip

PACKAGE_ROOT = Path(zegclip.__file__).parent


def module_names() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    names = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` is or lies inside (`a.b.func` -> `a.b`)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from a import b` imports `a`, and `a.b` where b is a module
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            if target.split(".")[0] == "zegclip":
                resolved = _resolve(target, known)
                if resolved and resolved != module:
                    found.add(resolved)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source (function bodies too).

    Importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first, so those count as edges."""
    known = module_names()
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        edges = _imported(module, path, known)
        for target in list(edges):
            parts = target.split(".")
            edges.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in known)
        edges.discard(module)
        # a package's own __init__ is imported before any of its modules; that is not a cycle
        edges = {e for e in edges if not module.startswith(e + ".")}
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def levels(graph: dict[str, set[str]]) -> list[list[str]]:
    """Topological layering: level 0 imports nothing of the package, level n only levels < n.

    Modules in a cycle are collapsed into one node and listed together in brackets."""
    component_of: dict[str, str] = {}
    for component in cycles(graph):
        label = "[" + " ".join(component) + "]"
        for module in component:
            component_of[module] = label
    nodes: dict[str, set[str]] = {}
    for module, edges in graph.items():
        node = component_of.get(module, module)
        nodes.setdefault(node, set()).update(component_of.get(e, e) for e in edges)
    for node, edges in nodes.items():
        edges.discard(node)
    level: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in level:
            level[node] = 1 + max((depth(e) for e in nodes[node]), default=-1)
        return level[node]

    for node in nodes:
        depth(node)
    layered: list[list[str]] = [[] for _ in range(max(level.values()) + 1)]
    for node, n in level.items():
        layered[n].append(node)
    return [sorted(layer) for layer in layered]


if __name__ == "__main__":
    graph = import_graph()
    for n, layer in enumerate(levels(graph)):
        print(f"{n}: {' '.join(layer)}")
    for component in cycles(graph):
        print("cycle:", " ".join(component))
