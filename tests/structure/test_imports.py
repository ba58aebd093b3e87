"""The package's import graph: no cycle, and the params schema stands without the data sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kmx_eval.imports import find_cycles, import_graph, transitive_imports

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
