"""Smoke test of the benchmark scripts: ``--quick`` runs exit 0 and print PASS/MISS ratio lines.

No timing is asserted (the machine is shared): only that each script runs end to end through the
library, prints its table, and writes the same checks to ``--json``. Both scripts run at once, in
two subprocesses (each single-threaded), to keep the test short.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = ("bench_features.py", "bench_kmeans_memory.py")
#: A table row: what was measured, a ratio such as ``0.981x``, a target such as ``>= 0.9``, a status.
RATIO_LINE = re.compile(r"^(?P<what>\S.*?)\s+(?P<ratio>\d+\.\d+)x\s+(?P<op>>=|<=|<)\s+(?P<bound>[\d.]+)\s+"
                        r"(?P<status>PASS|MISS)\s*$", re.MULTILINE)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_DATASETS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}
    procs = {}
    for script in SCRIPTS:
        path = out / f"{script}.json"
        procs[script] = (subprocess.Popen([sys.executable, str(REPO / "benchmarks" / script), "--quick",
                                           "--json", str(path)], cwd=REPO, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE), path)
    results = {}
    for script, (proc, path) in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        results[script] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), path)
    return results


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run_exits_0_and_prints_ratio_lines(runs, script):
    proc, path = runs[script]
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    rows = [m.groupdict() for m in RATIO_LINE.finditer(proc.stdout)]
    assert rows, f"{script} printed no ratio line:\n{proc.stdout}"
    for row in rows:
        ratio, bound = float(row["ratio"]), float(row["bound"])
        assert ratio > 0
        passed = {">=": ratio >= bound, "<=": ratio <= bound, "<": ratio < bound}[row["op"]]
        # The printed status follows from the printed ratio (up to its 3 printed decimals).
        if abs(ratio - bound) > 1e-3:
            assert (row["status"] == "PASS") == passed, row


@pytest.mark.parametrize("script", SCRIPTS)
def test_json_holds_the_printed_checks(runs, script):
    proc, path = runs[script]
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(path.read_text())
    assert data["benchmark"] == script.removesuffix(".py") and data["quick"] is True
    printed = {m["what"].strip(): m["status"] for m in RATIO_LINE.finditer(proc.stdout)}
    with_target = [c for c in data["checks"] if c["op"] is not None]
    assert {c["what"] for c in with_target} == set(printed)
    for check in with_target:
        assert math.isfinite(check["ratio"]) and check["ratio"] > 0
        assert check["status"] == printed[check["what"]]
    assert data["environment"]["cpu_count"] >= 1


def test_features_compares_taps_combination_and_cache(runs):
    proc, _ = runs["bench_features.py"]
    what = [m["what"] for m in RATIO_LINE.finditer(proc.stdout)]
    assert any("B1..B4 taps" in w for w in what)
    assert any("B234 combine+pool" in w for w in what)
    assert any("embedding cache" in w for w in what)


def test_kmeans_memory_fits_identical_prototypes(runs):
    # The time ratio is only meaningful if the head and plain scikit-learn did the same k-means work.
    _, path = runs["bench_kmeans_memory.py"]
    data = json.loads(path.read_text())
    assert data["identical_prototypes"] is True
    traced = data["traced_concepts"]
    sizes = sorted(int(n) for n in traced)
    assert sizes[1] == 4 * sizes[0]
    # Four times the images really streamed four times the sampled vectors through the model.
    seen = {int(n): traced[n][0]["vectors_seen"] for n in traced}
    assert seen[sizes[1]] == 4 * seen[sizes[0]]
