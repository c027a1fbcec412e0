"""Report import cycles among app/ modules, function-level imports included.

Usage: python tools/import_cycles.py [ROOT]   (exit 1 if any cycle)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
        else:
            continue
        for target in targets:
            # ``from pkg import mod`` names a module; ``from mod import x`` not.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def graph_of(root: Path) -> dict[str, set[str]]:
    """Each module under ``root`` and the modules it imports, anywhere in it."""
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    known = set(paths)
    # Package __init__ edges are left out: importing app.x runs app/__init__,
    # which imports everything, but that is the factory, not a dependency.
    return {
        name: {
            t
            for t in imports_of(path, name, known)
            if paths[t].name != "__init__.py" or t == name
        }
        for name, path in paths.items()
    }


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "app").resolve()
    graph = graph_of(root)
    found = cycles(graph)
    for component in found:
        print("cycle:", " ".join(component))
        for v in component:
            print("   ", v, "->", ", ".join(sorted(graph[v] & set(component))))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
