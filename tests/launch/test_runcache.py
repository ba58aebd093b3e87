"""DVC's run cache across clones, on a two-stage toy pipeline (no torch): what a job pushes is
enough for another clone to restore every output, `cache: false` metrics included, and a stage
without a record is reported missing, never run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kmx_eval.launch import runcache
from tiny_study import dvc, run

STEP = """import os, sys
stage, ds = sys.argv[1], sys.argv[2]
with open(os.environ["STEP_LOG"], "a") as log:
    log.write(f"{os.getcwd()} {stage} {ds}\\n")
if stage == "prep":
    os.makedirs(f"data/{ds}", exist_ok=True)
    os.makedirs(f"metrics/{ds}", exist_ok=True)
    open(f"data/{ds}/x", "w").write(open("params.yaml").read() + ds)
    open(f"metrics/{ds}/prep.json", "w").write('{"n": %d}' % len(ds))
else:
    os.makedirs(f"heads/{ds}", exist_ok=True)
    open(f"heads/{ds}/y", "w").write(open(f"data/{ds}/x").read() * 2)
"""

DVC_YAML = """stages:
  prep:
    matrix:
      dataset: [a, bb]
    cmd: python step.py prep ${item.dataset}
    deps: [step.py]
    params: [n]
    outs: ["data/${item.dataset}"]
    metrics:
      - metrics/${item.dataset}/prep.json:
          cache: false
  fit:
    matrix:
      dataset: [a, bb]
    cmd: python step.py fit ${item.dataset}
    deps: [step.py, "data/${item.dataset}"]
    outs: ["heads/${item.dataset}"]
"""


@pytest.fixture
def origin(tmp_path, monkeypatch):
    monkeypatch.setenv("STEP_LOG", str(tmp_path / "ran.log"))
    root = tmp_path / "origin"
    root.mkdir()
    (root / "step.py").write_text(STEP)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text("n: 1\n")
    run(["git", "init", "-q"], cwd=root)
    dvc("init", "-q", cwd=root)
    dvc("remote", "add", "-d", "shared", str(tmp_path / "remote"), cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "toy"], cwd=root)
    return root


def ran(tmp_path: Path) -> list[str]:
    log = tmp_path / "ran.log"
    return [" ".join(line.split()[1:]) for line in log.read_text().splitlines()] if log.exists() else []


def test_pushed_run_cache_restores_every_output_in_another_clone(origin, tmp_path):
    job = tmp_path / "job"
    run(["git", "clone", "-q", str(origin), str(job)], cwd=tmp_path)
    dvc("repro", "fit@a", cwd=job)
    assert ran(tmp_path) == ["prep a", "fit a"]
    records, objects = runcache.push_run_cache(job)
    assert records == 2 and objects >= 3  # data/a (a folder and its file), heads/a, prep.json

    coordinator = tmp_path / "coordinator"
    run(["git", "clone", "-q", str(origin), str(coordinator)], cwd=tmp_path)
    assert runcache.fetch_run_cache(coordinator) == 2
    restored, missing = runcache.restore(coordinator, ["prep@a", "fit@a"])
    assert (restored, missing) == (["prep@a", "fit@a"], None)
    assert ran(tmp_path) == ["prep a", "fit a"]  # nothing ran in the coordinator
    for path in ("metrics/a/prep.json", "data/a/x", "heads/a/y"):  # the cache: false file too
        assert (coordinator / path).read_bytes() == (job / path).read_bytes(), path

    # The other dataset was never run: reported missing at its first stage, and not run.
    assert runcache.restore(coordinator, ["prep@bb", "fit@bb"]) == ([], "prep@bb")
    assert ran(tmp_path) == ["prep a", "fit a"]

    # dvc repro then restores the recorded stages from the local run cache and runs only bb's.
    result = runcache.dvc(["repro"], coordinator, echo=False)
    assert result.returncode == 0, result.output
    assert sorted(result.ran) == ["fit@bb", "prep@bb"] and sorted(result.restored) == ["fit@a", "prep@a"]


def test_a_committed_output_file_of_another_study_is_replaced_by_the_restored_one(origin, tmp_path):
    """The coordinator's workspace holds other bytes at a stage's cache: false metrics path (a file
    committed by another study, e.g. the default's metrics in a clone running a profile): collect
    restores the stage's own result over it instead of counting the stage missing (DVC's checkout
    refuses to remove a file it does not know without force)."""
    job = tmp_path / "job"
    run(["git", "clone", "-q", str(origin), str(job)], cwd=tmp_path)
    dvc("repro", "prep@a", cwd=job)
    runcache.push_run_cache(job)
    coordinator = tmp_path / "coordinator"
    run(["git", "clone", "-q", str(origin), str(coordinator)], cwd=tmp_path)
    (coordinator / "metrics" / "a").mkdir(parents=True)
    (coordinator / "metrics" / "a" / "prep.json").write_text('{"n": 99}')  # another study's number
    (coordinator / "data" / "a").mkdir(parents=True)
    (coordinator / "data" / "a" / "x").write_text("another study's data")  # a second output in the way
    runcache.fetch_run_cache(coordinator)
    assert runcache.restore(coordinator, ["prep@a"]) == (["prep@a"], None)
    for path in ("metrics/a/prep.json", "data/a/x"):
        assert (coordinator / path).read_bytes() == (job / path).read_bytes(), path
    assert ran(tmp_path) == ["prep a"]  # restored, not run


def test_changed_params_are_not_restored_from_an_older_record(origin, tmp_path):
    job = tmp_path / "job"
    run(["git", "clone", "-q", str(origin), str(job)], cwd=tmp_path)
    dvc("repro", "prep@a", cwd=job)
    runcache.push_run_cache(job)
    (origin / "params.yaml").write_text("n: 2\n")
    runcache.fetch_run_cache(origin)
    assert runcache.restore(origin, ["prep@a"]) == ([], "prep@a")


def test_environment_puts_this_python_and_the_checkout_first(tmp_path):
    env = runcache.environment(tmp_path, base={"PATH": "/usr/bin", "PYTHONPATH": "/elsewhere"})
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert env["PYTHONPATH"].split(":") == [str(tmp_path), "/elsewhere"]
    assert env["DVC_NO_ANALYTICS"] == "1" and env["PYTHONHASHSEED"] == "0"


def test_a_stage_command_does_not_outlive_a_killed_dvc(tmp_path, monkeypatch):
    """Issue 25: on SLURM a preempted job's dvc died and its stage command lived on, writing into the
    checkout that the requeued job used again. Here a stand-in `dvc` starts a long child, then is
    killed by SIGUSR2 (as scancel --signal=USR2 kills it)."""
    import os
    import signal
    import time

    from kmx_eval.launch import runcache

    fake = tmp_path / "bin"
    fake.mkdir()
    # The child marks its natural end in a file: had its open pipe held the job, dvc() would only
    # return once the file existed (a check on what happened, not on wall-clock time).
    done = tmp_path / "child-finished"
    (fake / "dvc").write_text(f"#!/bin/sh\n(sleep 300; touch {done}) &\necho \"child $!\"\n"
                              "echo \"Running stage 'train@tiny':\"\nkill -USR2 $$\n")
    (fake / "dvc").chmod(0o755)
    monkeypatch.setattr(runcache, "bin_dir", lambda: fake)
    result = runcache.dvc([], tmp_path, env=dict(os.environ), echo=False)
    assert not done.exists()  # the child's open pipe did not hold the job
    assert result.returncode == -signal.SIGUSR2 and result.ran == ["train@tiny"]
    child = int(result.output.split()[1])
    time.sleep(0.5)
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"
