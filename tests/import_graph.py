"""Import graph between surgflow's subpackages, read with `ast` (nothing is imported).

A node is a subpackage (`data`, `models`, ...) or a top-level module (`config`, `registry`, ...).
Every `import` counts, deferred ones inside functions too: a deferred import is still a dependency.
File level (`file_imports`): every surgflow module that a surgflow file imports, and the names it
takes from it, so that tests can refuse import circles between files and `_private` names taken
across modules.
Usage: python tests/import_graph.py   (prints the edges, then the cycles; exit 1 if any)
       python tests/import_graph.py --files   (file-level circles and cross-module private names)
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


def _from_target(n: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a `from X import ...` reads, relative imports resolved."""
    if not n.level:
        return n.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (n.level - 1)]
    return ".".join(base + ([n.module] if n.module else []))


def _targets(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            target = _from_target(n, module, is_package)
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


def _modules(pkg: Path = PKG) -> dict[str, Path]:
    """Module name -> file, every .py file of the package ('surgflow.data' -> data/__init__.py)."""
    return {_module_name(p): p for p in sorted(pkg.rglob("*.py")) if "__pycache__" not in p.parts}


def file_imports(pkg: Path = PKG) -> list[tuple[str, str, str | None, int]]:
    """Every import of a surgflow module by a surgflow file, function-level ones included:
    (importing module, imported module, name taken from it or None, line). `from surgflow.a import b`
    with a module surgflow/a/b.py imports the module `surgflow.a.b` (no name)."""
    mods = _modules(pkg)
    out = []
    for module, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                out += [(module, a.name, None, n.lineno) for a in n.names if a.name in mods]
            elif isinstance(n, ast.ImportFrom):
                target = _from_target(n, module, path.name == "__init__.py")
                for a in n.names:
                    if f"{target}.{a.name}" in mods:
                        out.append((module, f"{target}.{a.name}", None, n.lineno))
                    elif target in mods:
                        out.append((module, target, a.name, n.lineno))
    return [t for t in out if t[0] != t[1]]


def file_edges(pkg: Path = PKG) -> dict[tuple[str, str], list[int]]:
    """(importing module, imported module) -> the lines of the importing file that import it."""
    out: dict[tuple[str, str], list[int]] = {}
    for src, dst, _name, line in file_imports(pkg):
        out.setdefault((src, dst), []).append(line)
    return out


def private_imports(pkg: Path = PKG) -> list[str]:
    """'importer:line takes _name from module' for each `_private` name imported across modules
    (a name used by another file is part of the module's interface: give it a public name)."""
    return [f"{src}:{line} takes {name} from {dst}" for src, dst, name, line in file_imports(pkg)
            if name and name.startswith("_") and not name.startswith("__")]


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


def main_files() -> int:
    e = file_edges()
    found = cycles(e)
    for comp in found:
        back = [f"{a}->{b}" for (a, b) in sorted(e) if a in comp and b in comp]
        print(f"FILE CIRCLE among {', '.join(comp)}: {'; '.join(back)}")
    private = private_imports()
    for p in private:
        print(f"PRIVATE NAME: {p}")
    print(f"{len(found)} file circle(s), {len(private)} private name(s) imported across modules")
    return 1 if found or private else 0


def main() -> int:
    if sys.argv[1:] == ["--files"]:
        return main_files()
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
