"""End to end: `dvc repro` on tiny params in a temporary git repository.

One pipeline run (module fixture) serves the checks of the produced files; further tests rerun
it to check DVC's incremental behaviour, determinism and recovery from a SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml


pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# The tiny study, written as a user writes it: only what differs from the defaults (whole
# sections such as `features` and keys such as `datasets.<name>.seed` are left out).
from tiny_study import (OVERRIDES, TINY, digest, dvc, make_image_folder, metric_files,  # noqa: E402,F401
                        run, write_params)
from tiny_study import env as _env  # noqa: E402


def stale_stages(repo: Path) -> set[str]:
    """Stages `dvc status` would rerun, once the resolve stage has written the settings.

    Forced, as `make repro` runs it before `dvc repro`: a checkpoint file rewritten at the same
    path is then seen (DVC alone runs resolve only when params.yaml or the code changes)."""
    import json

    dvc("repro", "--single-item", "--force", "resolve", cwd=repo)
    return set(json.loads(dvc("status", "--json", cwd=repo).stdout)) - {"resolve"}


def ran_stages(proc: subprocess.CompletedProcess) -> set[str]:
    import re

    return set(re.findall(r"Running stage '([^']+)'", proc.stdout)) - {"resolve"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "kmx_eval", root / "kmx_eval", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".gitignore", root)
    make_image_folder(root / "inputs" / "folder")
    write_params(root, TINY)
    run(["git", "init", "-q"], cwd=root)
    dvc("init", "-q", cwd=root)
    shutil.copy(REPO / ".dvcignore", root)  # after init, which writes its own: __pycache__ is no code dep
    dvc("config", "core.analytics", "false", cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "tiny study"], cwd=root)
    start = time.perf_counter()
    # A generous limit: about 3 minutes on an idle 2-core machine, several times that when shared.
    dvc("repro", cwd=root, timeout=2400)
    print(f"tiny pipeline: {time.perf_counter() - start:.0f} s")
    return root


def test_pipeline_writes_every_declared_output(repo):
    for ds in ("tiny", "folder"):
        assert (repo / "data" / ds / "dataset_dict.json").exists()
        assert (repo / "models" / ds / "seed0" / "backbone.safetensors").exists()
        assert (repo / "features" / ds / "seed0.npz").exists()
        for comb in ("B4", "B34", "cnn"):
            assert (repo / "metrics" / ds / comb / "evaluate" / "metrics.csv").exists()
            assert (repo / "metrics" / ds / comb / "evaluate.json").exists()
        for comb in ("B4", "B34"):
            assert (repo / "heads" / ds / comb / "seed0" / "kmeans.npz").exists()
            assert (repo / "maps" / ds / comb / "seed0.npz").exists()
    html = (repo / "reports" / "index.html").read_text()
    for ds in ("tiny", "folder"):
        assert ds in html
    assert list((repo / "reports" / "figures").glob("*.png"))
    assert list((repo / "reports" / "tables").glob("*.csv"))
    assert (repo / "reports" / "metrics.json").exists()


def test_no_pickle_in_outputs(repo):
    for npz in repo.rglob("*.npz"):
        with np.load(npz, allow_pickle=False) as data:  # raises if any array needs pickle
            for key in data.files:
                data[key]
    assert not list(repo.rglob("*.pkl")) and not list(repo.rglob("*.pt"))


def test_dataset_without_masks_marks_localisation_not_applicable(repo):
    import pandas as pd

    frame = pd.read_csv(repo / "metrics" / "folder" / "B4" / "evaluate" / "metrics.csv")
    loc = frame[frame["category"] == "localisation"]
    assert len(loc) > 0
    assert loc["value"].isna().all()
    assert loc["note"].str.contains("not applicable").all()
    faith = frame[frame["category"] == "faithfulness"]
    assert faith["value"].notna().any()


def test_the_study_was_written_without_optional_keys(repo):
    written = yaml.safe_load((repo / "params.yaml").read_text())
    assert "features" not in written and "seed" not in written["datasets"]["tiny"]
    assert "title" not in written["report"]


def test_second_repro_is_a_no_op(repo):
    proc = dvc("repro", cwd=repo)
    # Not even the resolve stage runs: it depends on params.yaml and its code, neither changed
    # (a no-op starts no Python; issue 21).
    assert "Running stage" not in proc.stdout, proc.stdout
    assert stale_stages(repo) == set()


def test_bytecode_beside_the_sources_is_no_code_change(repo):
    # Python writes __pycache__/ into kmx_eval/ when bytecode writing is on (the Makefile turns it
    # on): a directory dep that hashed it would make dvc.lock depend on the shell's settings.
    cache = repo / "kmx_eval" / "data" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "not_a_change.cpython-311.pyc").write_bytes(b"bytecode")
    try:
        assert stale_stages(repo) == set()
    finally:
        (cache / "not_a_change.cpython-311.pyc").unlink()


def test_changing_one_dataset_reruns_only_its_stages(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"]["folder"]["test_fraction"] = 0.3
    write_params(repo, params)
    try:
        changed = stale_stages(repo)
        assert changed, "nothing changed"
        assert all("@folder" in name or name == "report" for name in changed), changed
        assert "prepare@folder" in changed and not any("@tiny" in n for n in changed)
    finally:
        write_params(repo, TINY)


def test_adding_a_dataset_adds_only_its_stages_and_the_report(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"]["more"] = {"source": "synthetic", "n_classes": 2, "train_per_class": 10,
                                  "test_per_class": 4, "seed": 1}
    write_params(repo, params)
    try:
        changed = stale_stages(repo)
        assert "prepare@more" in changed and "evaluate@more-B34" in changed
        assert all("@more" in name or name == "report" for name in changed), changed
    finally:
        write_params(repo, TINY)
        dvc("repro", "--single-item", "resolve", cwd=repo)  # drop the settings of "more"


def test_bad_params_stop_with_one_line_and_keep_outputs(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["backbone"]["architecture"] = "resnet35"
    write_params(repo, params)
    before = digest(metric_files(repo))
    try:
        proc = run([str(BIN / "python"), "stages/train.py", "tiny"], cwd=repo, check=False)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert "resnet35" in proc.stderr and "resnet34" in proc.stderr
        # dvc repro stops at the resolve stage, before any work, with the same one line.
        proc = dvc("repro", cwd=repo, check=False)
        assert proc.returncode != 0 and ran_stages(proc) == set()
        assert "backbone.architecture" in proc.stderr + proc.stdout
    finally:
        write_params(repo, TINY)
    assert digest(metric_files(repo)) == before


def test_same_params_and_seed_give_identical_metrics(repo):
    # --force reruns the whole chain of the target (prepare, train, embed, fit, explain, evaluate)
    # from scratch; every file it writes must come out byte-identical. (The CNN's explain and
    # evaluate stages are rerun and compared byte for byte by tests/launch/test_launch_local.py.)
    files = metric_files(repo) + sorted((repo / "models").rglob("*.*")) + sorted((repo / "maps").rglob("*.npz"))
    before = digest(files)
    dvc("repro", "--force", "evaluate@tiny-B34", cwd=repo, timeout=1200)
    assert digest(files) == before
    assert stale_stages(repo) == set()


def test_sigkill_mid_stage_leaves_no_partial_output_and_repro_recovers(repo):
    env = _env()
    proc = subprocess.Popen([str(BIN / "dvc"), "repro", "--force", "--single-item", "train@tiny"],
                            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    # Wait until the stage is inside its atomic write (the temporary folder exists: training is
    # running), then kill the whole process group hard.
    deadline = time.time() + 120
    while deadline > time.time() and not list((repo / "models").glob(".tiny.*.tmp")):
        time.sleep(0.05)
    assert list((repo / "models").glob(".tiny.*.tmp")), "the train stage never started writing"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    weights = repo / "models" / "tiny" / "seed0" / "backbone.safetensors"
    # Either the stage had not replaced its output yet or the output is gone: never half a file.
    if weights.exists():
        from safetensors.torch import load_file

        load_file(str(weights))
    dvc("repro", cwd=repo)
    assert stale_stages(repo) == set()
    # DVC restored models/tiny from its cache (same hash as before the kill), so the killed
    # write's temporary folder is not an output: it is ignored and the next train run removes it.
    from safetensors.torch import load_file

    load_file(str(weights))


def test_margin_map_localises_better_than_the_random_control(repo):
    """On the synthetic data (exact object masks), the gradient-free margin map of B34 beats the
    random map on the rank-based localisation metrics, whose chance level it must also beat."""
    import pandas as pd

    def loc(comb, method):
        frame = pd.read_csv(repo / "metrics" / "tiny" / comb / "evaluate" / "metrics.csv")
        frame = frame[(frame["method"] == method) & (frame["category"] == "localisation")]
        return frame.set_index("metric")

    # the random floor and the oracle ceiling are measured on the same model (the B34 head)
    margin, random, oracle = loc("B34", "margin"), loc("B34", "random"), loc("B34", "oracle")
    for metric in ("AUC", "RelevanceRankAccuracy", "TopKIntersection"):
        assert margin.loc[metric, "value"] > random.loc[metric, "value"], metric
        assert margin.loc[metric, "value"] > margin.loc[metric, "chance"], metric
        assert oracle.loc[metric, "value"] > random.loc[metric, "value"], metric
    assert {"random", "oracle", "oracle_pixel", "cam"} <= set(
        pd.read_csv(repo / "metrics" / "tiny" / "cnn" / "evaluate" / "metrics.csv")["method"])


def test_readme_commands_work_verbatim_in_a_new_shell(repo):
    """The README's shell block, typed into a new shell (no venv on PATH) in a clone that has run
    `make repro`: the stages that `dvc exp run` starts must find the venv's python."""
    from readme_blocks import code_blocks

    blocks = [b for b in code_blocks("sh") if "source .venv/bin/activate" in b]
    assert blocks, "the README shows no shell block that activates the venv"
    venv = repo / ".venv"
    if not venv.exists():
        venv.symlink_to(BIN.parent, target_is_directory=True)
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + ".venv\n")
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "outputs", "--allow-empty"], cwd=repo)
    clean = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/local/bin:/usr/bin:/bin",
             "LANG": "C.UTF-8", "DVC_NO_ANALYTICS": "1", "HF_DATASETS_OFFLINE": "1",
             "OMP_NUM_THREADS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for block in blocks:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=repo, env=clean,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{block}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert "No module named" not in proc.stderr


def test_the_repro_line_compares_the_tiny_study_with_its_digests(repo, tmp_path):
    """digests.json of the tiny study, then the line `make repro` ends with: identical; one output
    differs with the headlines inside their intervals; a headline outside its interval."""
    from kmx_eval import digests, io

    committed = tmp_path / "digests.json"
    snap = digests.write(repo, committed)
    assert snap["headlines"] and {"train@tiny", "fit@tiny-B4", "report"} <= set(snap["platforms"])
    assert not [p for p in snap["outputs"] if p.startswith("metrics/platform/")]
    summary_md = (repo / "reports" / "summary.md").read_text()
    assert "Made on: " in summary_md and "portable numerics" in summary_md
    assert "leave training variation out" in summary_md  # one seed
    line = digests.compare(repo, committed).line()
    assert line.startswith(f"identical to the committed baseline: all {len(snap['outputs'])} outputs")
    assert line.endswith("same platform and numerics mode")

    weights = "models/tiny/seed0/backbone.safetensors"
    inside = {**snap, "outputs": {**snap["outputs"], weights: "0" * 64},
              "platforms": {**snap["platforms"], "train@tiny": {**snap["platforms"]["train@tiny"],
                                                                  "numerics": "native"}}}
    io.write_json(committed, inside)
    line = digests.compare(repo, committed).line()
    assert line.startswith(f"1 of {len(snap['outputs'])} outputs differ from the committed baseline ({weights})")
    assert "stays inside its committed interval" in line and "numerics (native -> portable)" in line

    key, (value, low, high) = next(iter(snap["headlines"].items()))
    outside = {**inside, "headlines": {**snap["headlines"], key: [value, value + 1.0, value + 2.0]}}
    io.write_json(committed, outside)
    line = digests.compare(repo, committed).line()
    assert f"1 of {len(snap['headlines'])} headline numbers fall outside their committed interval: {key}" in line


def test_a_report_that_cannot_be_written_leaves_the_old_report_whole(repo):
    # A full disk during the report, under dvc repro: DVC would delete the old outputs before the
    # stage ran (they are persist: true) and the stage swaps its new outputs in only once all are
    # written. The stand-in for a full disk is a 20 KiB file-size limit on the stage's command.
    reports = sorted(p for p in (repo / "reports").rglob("*") if p.is_file())
    assert any(p.suffix == ".png" for p in reports) and (repo / "reports" / "index.html") in reports
    before = digest(reports)
    original = (repo / "dvc.yaml").read_text()
    (repo / "dvc.yaml").write_text(original.replace("cmd: python stages/report.py",
                                                    "cmd: ulimit -f 20 && python stages/report.py"))
    try:
        proc = dvc("repro", "report", cwd=repo, check=False, timeout=1200)
    finally:
        (repo / "dvc.yaml").write_text(original)
    assert proc.returncode != 0 and "report" in ran_stages(proc)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "File too large" in out
    assert sorted(p for p in (repo / "reports").rglob("*") if p.is_file()) == reports  # no staging left
    assert digest(reports) == before
    assert stale_stages(repo) == set()
