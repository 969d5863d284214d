"""Import graph between surgflow's subpackages, read with `ast` (nothing is imported).

A node is a subpackage (`data`, `models`, ...) or a top-level module (`config`, `registry`, ...).
Every `import` counts, deferred ones inside functions too: a deferred import is still a dependency.
Usage: python tests/import_graph.py   (prints the edges, then the cycles; exit 1 if any)
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "surgflow"


def node_of(module: str) -> str | None:
    """'surgflow.models.heads' -> 'models'; 'surgflow.config' -> 'config'; 'surgflow' -> '__init__'."""
    parts = module.split(".")
    if parts[0] != "surgflow":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:  # relative import
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (n.level - 1)]
                target = ".".join(base + ([n.module] if n.module else []))
            else:
                target = n.module or ""
            # `from surgflow import labels` imports the module surgflow.labels
            if target == "surgflow":
                out += [f"surgflow.{a.name}" for a in n.names]
            else:
                out.append(target)
    return out


def edges(pkg: Path = PKG) -> dict[tuple[str, str], list[str]]:
    """(from_node, to_node) -> the files that make the edge."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(pkg.rglob("*.py")):
        module = _module_name(path)
        src = node_of(module)
        tree = ast.parse(path.read_text(), str(path))
        for target in _targets(tree, module, path.name == "__init__.py"):
            dst = node_of(target)
            if dst is None or dst == src:
                continue
            # `from surgflow import __version__` is the package init, not a module
            if dst.startswith("__") and dst != "__init__":
                dst = "__init__"
            files = out.setdefault((src, dst), [])
            rel = str(path.relative_to(pkg.parent))
            if rel not in files:
                files.append(rel)
    return out


def cycles(edge_set) -> list[list[str]]:
    """Strongly connected components with more than one node (each one a cycle or several)."""
    graph: dict[str, set[str]] = {}
    for a, b in edge_set:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(sccs)


def main() -> int:
    e = edges()
    for (a, b), files in sorted(e.items()):
        print(f"{a} -> {b}    ({', '.join(files)})")
    found = cycles(e)
    for comp in found:
        back = [f"{a}->{b}" for (a, b) in sorted(e) if a in comp and b in comp]
        print(f"CYCLE among {', '.join(comp)}: {'; '.join(back)}")
    if not found:
        print("no cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
