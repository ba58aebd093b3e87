"""The package's import graph: no cycle, and the params schema stands without the data sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kmx_eval.imports import find_cycles, import_graph, transitive_imports, unexplained_local_imports

PACKAGE = Path(__file__).resolve().parents[2] / "kmx_eval"


def test_the_package_has_no_import_cycle():
    assert find_cycles(import_graph(PACKAGE)) == []


def test_find_cycles_sees_a_cycle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(pkg)
    assert find_cycles(graph) == [["pkg.a", "pkg.b"]]
    assert transitive_imports(graph, ["pkg.c"]) == {"pkg.a", "pkg.b", "pkg.c"}


def test_a_package_reexporting_its_submodules_is_not_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.x import X\n")
    (pkg / "sub" / "x.py").write_text("from pkg.sub.y import Y\nX = 1\n")
    (pkg / "sub" / "y.py").write_text("Y = 2\n")
    assert find_cycles(import_graph(pkg)) == []


def test_the_params_schema_imports_no_data_source():
    code = ("import sys, kmx_eval.config; "
            "print(','.join(sorted(m for m in sys.modules if m.startswith('kmx_eval.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stdout.strip().split(",")
    assert "kmx_eval.config" in loaded
    assert not [m for m in loaded if m.startswith("kmx_eval.data")], loaded


# The layer rule of docs/ARCHITECTURE.md: a module imports only from its own layer or below.
LAYERS = {
    0: {"errors", "registry", "io", "seeding", "device", "schema", "imports", "paths", "numerics"},
    1: {"data", "models"},
    2: {"heads"},
    3: {"explain"},
    4: {"metrics"},
    5: {"pipeline", "report"},
    6: {"config", "validation", "stage_params", "cli", "launch", "digests"},
}
LAYER_OF = {part: layer for layer, parts in LAYERS.items() for part in parts}
# The domain packages take arrays, objects and folders: a dataset's name never reaches them, so the
# table from names to files (paths) is not theirs to import.
DOMAIN = {"data", "models", "heads", "explain", "metrics"}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kmx_eval"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every edge of ``graph`` that runs up a layer, or from a domain package to ``paths``."""
    bad = []
    for importer, imported in sorted(graph.items()):
        src = _part(importer)
        if src == "kmx_eval":
            continue  # the package's own __init__ re-exports nothing that runs a layer
        for target in sorted(imported):
            dst = _part(target)
            if dst in ("kmx_eval", src):
                continue
            if src not in LAYER_OF or dst not in LAYER_OF:
                bad.append(f"{importer} -> {target}: a module outside the layer table")
            elif LAYER_OF[dst] > LAYER_OF[src]:
                bad.append(f"{importer} -> {target}: layer {LAYER_OF[src]} imports layer {LAYER_OF[dst]}")
            elif src in DOMAIN and dst == "paths":
                bad.append(f"{importer} -> {target}: a domain package turns names into files")
    return bad


def test_every_module_of_the_package_is_in_the_layer_table():
    parts = {_part(m) for m in import_graph(PACKAGE)} - {"kmx_eval"}
    assert parts <= set(LAYER_OF), sorted(parts - set(LAYER_OF))


def test_no_import_runs_up_a_layer_even_inside_a_function():
    assert layer_violations(import_graph(PACKAGE)) == []


def test_an_arrow_back_up_hidden_in_a_function_is_caught(tmp_path):
    pkg = tmp_path / "kmx_eval"
    (pkg / "heads").mkdir(parents=True)
    (pkg / "metrics").mkdir()
    for f in ("__init__.py", "heads/__init__.py", "metrics/__init__.py", "paths.py"):
        (pkg / f).write_text("")
    (pkg / "metrics" / "accuracy.py").write_text("from kmx_eval.heads import x\n")
    (pkg / "heads" / "fitting.py").write_text("def f():\n    from kmx_eval.metrics import accuracy\n")
    (pkg / "heads" / "named.py").write_text("from kmx_eval import paths\n")
    assert layer_violations(import_graph(pkg)) == [
        "kmx_eval.heads.fitting -> kmx_eval.metrics: layer 2 imports layer 4",
        "kmx_eval.heads.fitting -> kmx_eval.metrics.accuracy: layer 2 imports layer 4",
        "kmx_eval.heads.named -> kmx_eval.paths: a domain package turns names into files",
    ]


def test_every_function_local_import_says_why():
    assert unexplained_local_imports(PACKAGE) == []


def test_an_uncommented_function_local_import_is_caught(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import json\n")
    (pkg / "a.py").write_text(
        "def explained():\n"
        "    import torch  # torch: loaded only when a model is built\n"
        "    # scipy: slow to import, only this function needs it\n"
        "    from scipy import stats\n"
        "    from scipy import special\n"
        "    return stats, special, torch\n"
        "\n"
        "def bare():\n"
        "    x = 1  # a comment on another statement explains nothing\n"
        "    import yaml\n"
        "    if x:\n"
        "        from pathlib import Path\n"
        "    return yaml, Path\n")
    assert unexplained_local_imports(pkg) == [
        "pkg/a.py:10: import yaml",
        "pkg/a.py:12: from pathlib import Path",
    ]
