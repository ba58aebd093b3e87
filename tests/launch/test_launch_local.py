"""Scale-out end to end on this machine: the tiny two-dataset study as two local submitit jobs at
once, sharing results through a local-directory DVC remote, then `kmx-eval collect`.

One module fixture builds the study's repository with its remote, runs the serial reference
(`dvc repro` in a clone of the same commit), launches and collects; the tests check what collect
ran and that its outputs are byte-identical to the serial run's. The last test breaks one dataset.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from kmx_eval.config import parse_params
from kmx_eval.launch import status
from tiny_study import OVERRIDES, REPO, digest, dvc, make_study_repo, metric_files, run, write_params

pytestmark = pytest.mark.e2e


def _smaller(overrides: dict) -> dict:
    """The tiny study of tests/e2e with less per-stage work (it runs twice here: serial and as
    jobs): one combination, three explainers, four Quantus metrics, one epoch."""
    o = copy.deepcopy(overrides)
    o["combinations"] = ["B4"]
    o["backbone"]["epochs"] = 1
    o["explain"]["explainers"] = ["margin", "cam", "random"]
    o["evaluate"]["quantus"] = ["PointingGame", "RelevanceMassAccuracy", "Sparseness", "FaithfulnessCorrelation"]
    o["evaluate"]["compare"] = []
    return o


STUDY = parse_params(_smaller(OVERRIDES)).to_full_dict()

#: The stages collect may run: the report, and the always-changed upstream settings stage.
ALLOWED = {"report", "resolve"}
COLLECT_RAN = re.compile(r"^collect ran: (.*)$", re.MULTILINE)


def kmx(*args: str, cwd: Path, check: bool = True, timeout: int = 1800):
    # The launcher (and the jobs it starts) import this checkout's kmx_eval.
    return run([sys.executable, "-m", "kmx_eval.launch", *args], cwd=cwd, check=check, timeout=timeout,
               extra_env={"PYTHONPATH": str(REPO)})


def outputs(repo: Path) -> list[Path]:
    """The files compared with the serial run: DVC metrics and plots, the report's tables."""
    tables = sorted(p for p in (repo / "reports" / "tables").rglob("*") if p.is_file())
    return metric_files(repo) + tables + [repo / "reports" / "metrics.json"]


def relative(repo: Path, hashes: dict[str, str]) -> dict[str, str]:
    return {str(Path(k).relative_to(repo)): v for k, v in hashes.items()}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("scaleout")
    root = make_study_repo(base / "study", STUDY)
    dvc("remote", "add", "-d", "shared", str(base / "remote"), cwd=root)
    run(["git", "commit", "-qam", "shared DVC remote"], cwd=root)

    serial = base / "serial"  # the reference: one dvc repro of the same commit, its own cache
    run(["git", "clone", "-q", str(root), str(serial)], cwd=base)
    t0 = time.perf_counter()
    dvc("repro", cwd=serial, extra_env={"PYTHONPATH": str(serial)}, timeout=1800)
    t_serial = time.perf_counter() - t0

    t0 = time.perf_counter()
    launched = kmx("launch", "--executor", "local", cwd=root)
    t_launch = time.perf_counter() - t0
    collected = kmx("collect", cwd=root)
    print(f"serial dvc repro {t_serial:.0f} s, two local jobs {t_launch:.0f} s")
    return {"root": root, "serial": serial, "remote": base / "remote", "launch": launched.stdout,
            "collect": collected.stdout}


def test_each_shard_ran_in_its_own_job(study):
    jobs = status.latest_jobs(next((study["root"] / ".kmx-launch").glob("*/submitit")))
    assert set(jobs) == {"tiny", "folder"}
    assert {j.outcome for j in jobs.values()} == {"success"}
    assert len({j.job_id for j in jobs.values()}) == 2
    ran = {}
    for name, j in jobs.items():
        import submitit

        result = submitit.LocalJob(j.stdout.parent, j.job_id).result()
        ran[name] = set(result["ran"]) - ALLOWED
        assert ran[name] and all(s.endswith(f"@{name}") or f"@{name}-" in s for s in ran[name]), ran
        assert Path(result["checkout"]).name == name
    assert not ran["tiny"] & ran["folder"]


def test_collect_restores_every_shard_stage_and_runs_only_the_report(study):
    (ran,) = COLLECT_RAN.findall(study["collect"])
    ran = {s.strip() for s in ran.split(",")}
    assert "report" in ran
    assert ran <= ALLOWED, ran
    assert "is cached - skipping run" in study["collect"]
    stale = json.loads(dvc("status", "--json", cwd=study["root"]).stdout)
    assert set(stale) <= {"resolve"} and stale.get("resolve", ["always changed"]) == ["always changed"], stale


def test_collected_metrics_and_tables_are_byte_identical_to_a_serial_run(study):
    root, serial = study["root"], study["serial"]
    mine = relative(root, digest(outputs(root)))
    reference = relative(serial, digest(outputs(serial)))
    assert len(mine) > 20
    assert mine == reference


def test_a_failing_shard_is_named_and_the_other_shard_is_kept(study):
    root, serial = study["root"], study["serial"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["datasets"]["folder"]["path"] = "inputs/nowhere"
    write_params(root, params)
    run(["git", "commit", "-qam", "folder: a path that does not exist"], cwd=root)
    try:
        launched = kmx("launch", "--executor", "local", cwd=root, check=False)
        assert launched.returncode == 1, launched.stdout + launched.stderr
        assert "inputs/nowhere" in launched.stdout  # the stage's one-line error, through the job

        collected = kmx("collect", cwd=root, check=False)
        assert collected.returncode == 1, collected.stdout + collected.stderr
        out = collected.stdout
        missing = re.findall(r"^  shard (\S+) \(no result on the remote for its stage (\S+)\): (.*)$", out,
                             re.MULTILINE)
        assert [(m[0], m[1]) for m in missing] == [("folder", "prepare@folder")], out
        log = Path(re.search(r"log: (\S+\.err)", missing[0][2]).group(1))
        assert log.exists() and "inputs/nowhere" in log.read_text()
        assert "kmx-eval launch --only-missing" in out
        # The other shard is restored and kept: identical to the serial run's files.
        tiny = {k: v for k, v in relative(root, digest(metric_files(root))).items() if "/tiny/" in k}
        assert tiny and tiny == {k: v for k, v in relative(serial, digest(metric_files(serial))).items()
                                 if "/tiny/" in k}
        # Resubmitting only the missing shard is one command.
        again = kmx("launch", "--executor", "local", "--only-missing", "--dry-run", cwd=root)
        assert re.findall(r"^  (\S+): dvc repro", again.stdout, re.MULTILINE) == ["folder"], again.stdout
    finally:
        write_params(root, STUDY)
