"""The import graph of the package, read from the source (no module is executed).

Used by the tests that keep the architecture honest (no import cycle, every module a stage
imports is among its DVC deps) and usable by anyone who wants to see what a stage touches.
Imports inside functions count as edges too: a lazy import still makes one module depend on
another, and hiding a cycle inside a function does not remove it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path


def package_modules(package_dir: str | Path) -> dict[str, Path]:
    """Map each dotted module name under ``package_dir`` (a package folder) to its file."""
    package_dir = Path(package_dir)
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _parents(name: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b]``: importing a submodule runs every parent package first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(path: Path, package: str, modules: dict[str, Path], importer: str = "") -> set[str]:
    """Modules of ``package`` that the file at ``path`` (module ``importer``) imports.

    Importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first, so they count as imported too,
    except the packages that contain ``importer`` itself: those are already running when it runs
    (a package ``__init__`` that re-exports its submodules is not a cycle). Relative imports are
    resolved against ``importer``. A module that calls ``importlib.import_module`` with a computed
    name (a lazy re-export) counts as importing every module below its own package.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    here = importer if is_package else importer.rpartition(".")[0]
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
            found.update(p for p in _parents(name)
                         if p in modules and not importer.startswith(p + "."))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package:
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.split(".")[0] != package:
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                add(full if full in modules else module)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and not isinstance(node.args[0], ast.Constant) and here):
            found.update(m for m in modules if m.startswith(here + "."))
    return found


def import_graph(package_dir: str | Path) -> dict[str, set[str]]:
    """Edges ``module -> modules it imports`` within one package."""
    modules = package_modules(package_dir)
    package = Path(package_dir).name
    graph = {}
    for name, path in modules.items():
        graph[name] = imports_of(path, package, modules, importer=name) - {name}
    return graph


def transitive_imports(graph: dict[str, set[str]], roots: Iterable[str]) -> set[str]:
    """Every module reachable from ``roots`` (the roots included)."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(graph.get(name, ()))
    return seen


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def script_imports(script: str | Path, package_dir: str | Path) -> set[str]:
    """The package's modules that a script (a stage in ``stages/``) runs: its imports, transitively."""
    package_dir = Path(package_dir)
    modules = package_modules(package_dir)
    direct = imports_of(Path(script), package_dir.name, modules)
    return transitive_imports(import_graph(package_dir), direct)


def module_files(names: Iterable[str], package_dir: str | Path) -> set[Path]:
    """Source files of dotted module names, relative to the folder that holds the package."""
    package_dir = Path(package_dir)
    modules = package_modules(package_dir)
    return {modules[n].relative_to(package_dir.parent) for n in names}


def uncovered(files: Iterable[Path], deps: Iterable[str]) -> list[str]:
    """Files that no dependency path covers (a dependency covers itself and everything below it)."""
    dep_paths = [Path(d) for d in deps]
    return sorted(str(f) for f in files
                  if not any(f == d or d in f.parents for d in dep_paths))


def unexplained_local_imports(package_dir: str | Path) -> list[str]:
    """``file:line: statement`` for every import inside a function under ``package_dir`` with no
    comment saying why it is there: on its own line(s), or on the line directly above it, or above
    the unbroken run of imports it continues. A function-local import is kept only for a stated
    reason (import cost, an optional dependency, a cycle)."""
    package_dir = Path(package_dir)
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text, filename=str(path))
        seen: set[int] = set()
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for body in _statement_lists(function):
                run_explained, previous_end = False, -1
                for stmt in body:
                    if not isinstance(stmt, (ast.Import, ast.ImportFrom)):
                        run_explained, previous_end = False, -1
                        continue
                    above = lines[stmt.lineno - 2].strip() if stmt.lineno >= 2 else ""
                    if above.startswith("#"):
                        run_explained = True
                    elif previous_end != stmt.lineno - 1:
                        run_explained = False
                    inline = any("#" in lines[i - 1]
                                 for i in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
                    previous_end = stmt.end_lineno or stmt.lineno
                    if stmt.lineno in seen:
                        continue
                    seen.add(stmt.lineno)
                    if not (inline or run_explained):
                        where = path.relative_to(package_dir.parent).as_posix()
                        found.append(f"{where}:{stmt.lineno}: {lines[stmt.lineno - 1].strip()}")
    return found


def _statement_lists(function: ast.AST) -> Iterable[list[ast.stmt]]:
    """Every list of statements inside ``function`` (its body, and those of its ifs, trys, loops)."""
    for node in ast.walk(function):
        for field in ("body", "orelse", "finalbody", "handlers"):
            value = getattr(node, field, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                yield value
