"""Layering: no import cycles between surgflow's subpackages, nor between its files, and no `_private`
name taken from another module (tests/import_graph.py reads the imports).
Documentation: every module of surgflow/ has its line in docs/ARCHITECTURE.md's module tree."""
import ast
import re
from pathlib import Path

from import_graph import cycles, edges, file_edges, private_imports

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "surgflow"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
# An entry line of the tree: its indentation, then `folder/`, or `name.py`, or several `name.py`
# separated by commas (a trailing comma: the list goes on at the next line); then the description.
ENTRY = re.compile(r"^( *)((?:[A-Za-z_]\w*/)|(?:\w+\.py(?:, \w+\.py)*,?))(?=\s|$)")


def test_no_import_cycles_between_subpackages():
    e = edges()
    assert ("training", "models") in e, "import graph reader found no edges"
    found = cycles(e)
    assert not found, "; ".join(
        f"import cycle among {comp}: " + ", ".join(f"{a}->{b}" for (a, b) in sorted(e)
                                                   if a in comp and b in comp) for comp in found)


def test_no_import_circles_between_files():
    """Two files that import each other (even inside a function) are one module split in two: the
    definitions both need belong in the one that is imported."""
    e = file_edges()
    assert ("surgflow.training.trainer", "surgflow.config") in e, "file import reader found no edges"
    found = cycles(e)
    assert not found, "; ".join(
        f"import circle among {comp}: " + ", ".join(f"{a}->{b} (line {e[(a, b)][0]})"
                                                   for (a, b) in sorted(e) if a in comp and b in comp)
        for comp in found)


def test_no_private_name_is_imported_from_another_module():
    found = private_imports()
    assert not found, ("a `_private` name used by another module is part of its interface; give it "
                       "a public name: " + "; ".join(found))


def tree_block(text: str) -> list[str]:
    """The lines of the first fenced block of docs/ARCHITECTURE.md that starts with `surgflow/`."""
    lines, block = text.splitlines(), None
    for i, line in enumerate(lines):
        if line.startswith("```") and i + 1 < len(lines) and lines[i + 1] == "surgflow/":
            block = lines[i + 1:]
            break
    assert block is not None, f"{DOC}: no fenced block starting with the line 'surgflow/'"
    end = next(i for i, line in enumerate(block) if line.startswith("```"))
    return block[:end]


def documented(lines: list[str]) -> tuple[set[str], set[str]]:
    """(module files, folders) the tree names, as paths relative to the repository root.

    The rule (stated in docs/ARCHITECTURE.md above the tree): a file `surgflow/<folders>/<name>.py`
    is named by `name.py` at the start of a line indented two spaces more than its folder's line
    (`<folder>/`); several names may share such a line, comma separated. A line indented otherwise
    continues the description above it. A subpackage's `__init__.py` is named by its folder's line.
    """
    files, folders = set(), {"surgflow"}
    stack = [(0, "surgflow")]  # (indentation, folder) of the open folders; `surgflow/` is line 0
    for line in lines[1:]:
        m = ENTRY.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not stack or indent != stack[-1][0] + 2:
            continue  # a description's continuation, not an entry
        parent = stack[-1][1]
        if m.group(2).endswith("/"):
            folder = f"{parent}/{m.group(2)[:-1]}"
            folders.add(folder)
            stack.append((indent, folder))
        else:
            files.update(f"{parent}/{name}" for name in m.group(2).rstrip(",").split(", "))
    return files, folders


def modules() -> set[str]:
    """Every .py file of the package except subpackages' `__init__.py` (named by their folder)."""
    out = set()
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(ROOT).as_posix()
        if "__pycache__" in rel or (p.name == "__init__.py" and p.parent != PKG):
            continue
        out.add(rel)
    return out


def packages() -> set[str]:
    return {p.parent.relative_to(ROOT).as_posix() for p in PKG.rglob("__init__.py")
            if "__pycache__" not in p.parts}


def test_every_module_is_named_in_architecture_doc():
    files, folders = documented(tree_block(DOC.read_text()))
    assert len(files) > 50, f"the tree parser found only {len(files)} module names in {DOC}"
    missing = sorted(modules() - files)
    assert not missing, (f"{DOC}: the module tree has no line for {', '.join(missing)}; add one "
                         f"(`name.py  what it is`) under its folder's line")
    no_folder = sorted(packages() - folders)
    assert not no_folder, f"{DOC}: the module tree has no folder line for {', '.join(no_folder)}"
    stale = sorted(files - modules())
    assert not stale, f"{DOC}: the module tree names modules that do not exist: {', '.join(stale)}"
    stale = sorted(folders - packages())
    assert not stale, f"{DOC}: the module tree names folders that are not packages: {', '.join(stale)}"


# --------------------------------------------------------------------------- deferred imports
# An import inside a function is a choice, not a habit: it stays there only to keep a light path
# light (heavy: torch/timm/av/matplotlib/...; light: `surgflow --help` imports every command
# module) or to break a cycle, and says so in a trailing comment.
REASONS = ("# heavy:", "# light:", "# cycle:")


def function_imports_without_reason(source: str) -> list[tuple[int, str]]:
    """(line, text) of every import inside a function whose last line has no trailing comment
    starting with one of REASONS."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for n in ast.walk(fn):
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                tail = lines[n.end_lineno - 1][n.end_col_offset:].strip()
                if not tail.startswith(REASONS):
                    found.append((n.lineno, lines[n.lineno - 1].strip()))
    return sorted(set(found))


def test_the_reason_check_sees_nested_and_bare_imports():
    src = ("import os\n"
           "def f():\n"
           "    import torch  # heavy: torch\n"
           "    import json\n"
           "    if os:\n"
           "        from a import (b,\n"
           "                       c)  # cycle: a imports this module\n"
           "        from x import y  # a comment that gives no reason\n"
           "    def g():\n"
           "        import av\n")
    assert function_imports_without_reason(src) == [
        (4, "import json"), (8, "from x import y  # a comment that gives no reason"), (10, "import av")]


def test_every_function_level_import_says_why():
    missing = [f"{path.relative_to(ROOT)}:{line}: {text}"
               for path in sorted(PKG.rglob("*.py"))
               for line, text in function_imports_without_reason(path.read_text())]
    assert not missing, ("imports inside functions without a trailing `# heavy: ...`, `# light: ...` "
                         "or `# cycle: ...` comment (move them to the top of the file unless they "
                         "keep a light path light or break a cycle):\n" + "\n".join(missing))


# --------------------------------------------------------------------------- tasks by name
TASK_NAMES = ("phase", "tools", "anticipation")


def task_name_dispatch(source: str) -> list[int]:
    """Lines that pick a built-in task by name from a collection of tasks: `"phase" in
    cfg.task.tasks`, `tasks["anticipation"]` (the Task registry's hooks answer those questions)."""
    found = []
    for n in ast.walk(ast.parse(source)):
        if (isinstance(n, ast.Compare) and isinstance(n.left, ast.Constant)
                and n.left.value in TASK_NAMES and isinstance(n.ops[0], (ast.In, ast.NotIn))
                and ast.unparse(n.comparators[0]).endswith("tasks")):
            found.append(n.lineno)
        elif (isinstance(n, ast.Subscript) and ast.unparse(n.value).endswith("tasks")
              and isinstance(n.slice, ast.Constant) and n.slice.value in TASK_NAMES):
            found.append(n.lineno)
    return found


def test_task_name_dispatch_check_sees_the_old_forms():
    src = ('counts = ds.phase_counts() if "phase" in cfg.task.tasks else None\n'
           'h = model.tasks["anticipation"].horizon\n'
           'ok = "phase" in outputs\n')
    assert task_name_dispatch(src) == [1, 2]


def test_no_caller_picks_a_task_by_its_name():
    hits = [f"{path.relative_to(ROOT)}:{line}" for path in sorted(PKG.rglob("*.py"))
            if path.name != "tasks.py" for line in task_name_dispatch(path.read_text())]
    assert not hits, "ask the Task (a hook in models/tasks.py) instead of naming it: " + ", ".join(hits)
