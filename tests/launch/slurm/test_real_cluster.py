"""Scale-out on a real SLURM cluster (tests/launch/slurm/start.sh starts a one-node one; `make
test-slurm` runs this module; skipped with the reason when `sbatch`, `sinfo` or `sacct` does not answer).

The tiny two-dataset study (one combination) goes through `kmx-eval launch` and `collect` as a user
would, with the failures of issue 25, in one scenario at one commit:

1. `launch --by dataset-combination`: tiny and folder run at once (the node has 2 CPUs), their
   combination shards wait (`afterok`, `--kill-on-invalid-dep=yes`);
2. tiny is preempted (`scancel --signal=USR2`) during its second stage: submitit requeues it and
   the requeued job continues in its checkout and completes;
3. folder is killed (`scancel`: SIGTERM) during a stage: its combination shard is cancelled
   by SLURM, and `collect` names both with their state and cause, and exits 1 (the study tracks
   `dvc.lock` and the resolved settings, as the real repository does);
4. `launch --only-missing` without a commit resubmits exactly folder and its combination shard;
   `collect` builds the report, restoring every shard stage;
5. `launch --by dataset` at the same commit: both jobs restore everything from the remote's run
   cache; `collect --by dataset` again.

The serial reference (`dvc repro` in a clone of the same commit) runs beside the jobs; every metric,
table and the report (index.html, summary.md) collected must be byte-identical to it.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit

from kmx_eval.config import parse_params
from kmx_eval.launch import status
from tiny_study import OVERRIDES, REPO, digest, dvc, env, make_study_repo, metric_files, run

WAIT_S = 2400  # per wait: the scenario's stages run on a loaded 2-core machine
ALLOWED = {"report", "resolve"}  # what collect may run
JOB = re.compile(r"^  (\S+): job (\S+), log (\S+)$", re.MULTILINE)
COLLECT_RAN = re.compile(r"^collect ran: (.*)$", re.MULTILINE)


def why_no_slurm() -> str | None:
    """Why this machine cannot run the test, or None."""
    for cmd in (["sbatch", "--version"], ["sinfo", "-h", "-o", "%T"], ["sacct", "-n", "-X", "-S", "now"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(cmd)}` does not answer ({exc}); start SLURM with tests/launch/slurm/start.sh"
        if proc.returncode:
            return (f"`{' '.join(cmd)}` exited {proc.returncode} ({proc.stderr.strip()[:200]}); "
                    "start SLURM with tests/launch/slurm/start.sh")
    return None


REASON = why_no_slurm()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _study() -> dict:
    """The tiny study of tests/tiny_study.py with one combination, one epoch, three explainers and
    three Quantus metrics: 2 x 5 dataset stages and 2 x 3 combination stages."""
    o = copy.deepcopy(OVERRIDES)
    o["combinations"] = ["B4"]
    o["backbone"]["epochs"] = 1
    o["explain"]["explainers"] = ["margin", "cam", "random"]
    o["evaluate"]["quantus"] = ["PointingGame", "RelevanceMassAccuracy", "Sparseness"]
    o["evaluate"]["compare"] = []
    return parse_params(o).to_full_dict()


def kmx(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    # The launcher and its jobs (sbatch exports the environment) import this checkout's kmx_eval.
    proc = run([sys.executable, "-m", "kmx_eval.launch", *args], cwd=cwd, check=check, timeout=1800,
               extra_env={"PYTHONPATH": str(REPO)})
    print(f"$ kmx-eval {' '.join(args)}  -> exit {proc.returncode}\n{proc.stdout}{proc.stderr}", flush=True)
    return proc


def jobs_of(launched: str) -> dict[str, tuple[str, Path]]:
    return {name: (job, Path(log)) for name, job, log in JOB.findall(launched)}


def wait_for(what: str, check, timeout: float = WAIT_S, every: float = 3.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")


def log_says(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")


def queued(job_ids) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split()
    return {j for j in out if j.split("_")[0] in {i.split("_")[0] for i in job_ids}}


def wait_until_done(jobs: dict[str, tuple[str, Path]]) -> None:
    ids = [job for job, _ in jobs.values()]
    wait_for(f"jobs {', '.join(ids)}", lambda: not queued(ids), every=5)


def outputs(repo: Path) -> list[Path]:
    """What is compared with the serial run: DVC metrics and plots, the report and its tables."""
    reports = repo / "reports"
    tables = sorted(p for p in (reports / "tables").rglob("*") if p.is_file())
    return metric_files(repo) + tables + [reports / "metrics.json", reports / "summary.md", reports / "index.html"]


def relative(repo: Path, hashes: dict[str, str]) -> dict[str, str]:
    return {str(Path(k).relative_to(repo)): v for k, v in hashes.items()}


def job_result(folder: Path, job_id: str) -> dict:
    return submitit.SlurmJob(folder, job_id).result()


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    t_start = time.time()
    base = tmp_path_factory.mktemp("slurm")
    root = make_study_repo(base / "study", _study())
    dvc("remote", "add", "-d", "shared", str(base / "remote"), cwd=root)
    # As in the real repository, dvc.lock and the stages' small outputs are tracked by git.
    dvc("repro", "resolve", cwd=root, extra_env={"PYTHONPATH": str(root)})
    run(["git", "add", "-f", ".dvc/config", "dvc.lock", "resolved"], cwd=root)
    run(["git", "commit", "-qm", "shared DVC remote, resolved settings"], cwd=root)
    serial = base / "serial"
    run(["git", "clone", "-q", str(root), str(serial)], cwd=base)
    t_serial = time.time()
    reference = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=serial,
                                 env={**env(), "PYTHONPATH": str(serial)}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
    s: dict = {"root": root, "serial": serial}
    combos = ["--by", "dataset-combination"]
    common = ["--cpus-per-job", "1", "--time", "120"]
    try:
        s["launch"] = kmx("launch", *combos, *common, cwd=root).stdout
        jobs = s["jobs"] = jobs_of(s["launch"])
        folder = s["folder"] = jobs["tiny"][1].parent
        # Preempt tiny during its second stage; kill folder (SIGTERM) during one of its stages.
        wait_for("tiny's second stage", lambda: log_says(jobs["tiny"][1], "Running stage 'train@tiny'"))
        subprocess.run(["scancel", "--signal=USR2", jobs["tiny"][0]], check=True)
        wait_for("folder's second stage", lambda: log_says(jobs["folder"][1], "Running stage 'train@folder'"))
        time.sleep(5)  # inside the stage, while it writes
        subprocess.run(["scancel", jobs["folder"][0]], check=True)
        wait_until_done(jobs)

        s["collect_failed"] = kmx("collect", cwd=root, check=False)
        s["dirty"] = run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root).stdout
        s["again"] = kmx("launch", "--only-missing", *combos, *common, cwd=root).stdout
        s["again_jobs"] = jobs_of(s["again"])
        wait_until_done(s["again_jobs"])
        s["collect"] = kmx("collect", cwd=root, check=False)
        s["combination_outputs"] = relative(root, digest(outputs(root)))

        s["by_dataset"] = kmx("launch", "--by", "dataset", *common, cwd=root).stdout
        s["by_dataset_jobs"] = jobs_of(s["by_dataset"])
        wait_until_done(s["by_dataset_jobs"])
        s["collect_by_dataset"] = kmx("collect", "--by", "dataset", cwd=root, check=False)
        t_jobs = time.time() - t_start
    except BaseException:
        os.killpg(reference.pid, signal.SIGKILL)  # dvc and its stage command
        launched = "".join(str(v) for v in s.values() if isinstance(v, str))
        subprocess.run(["scancel", *{job for _, job, _ in JOB.findall(launched)}], capture_output=True)
        raise
    ref_out, _ = reference.communicate(timeout=WAIT_S)
    assert reference.returncode == 0, ref_out[-4000:]
    s["reference"] = relative(serial, digest(outputs(serial)))
    print(f"real-cluster scenario: {time.time() - t_start:.0f} s in all (launches, kills and collects "
          f"{t_jobs:.0f} s; the serial reference beside them {time.time() - t_serial:.0f} s)", flush=True)
    return s


def test_preempted_job_is_requeued_and_continues_in_its_checkout(scenario):
    job, log = scenario["jobs"]["tiny"]
    attempts = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job], capture_output=True,
                              text=True).stdout.split()
    assert "REQUEUED" in attempts or log_says(log.with_name(log.name.replace(".out", ".err")), "Requeued job")
    result = job_result(scenario["folder"], job)
    assert "prepare@tiny" not in result["ran"]  # done before the preemption: not run again
    assert status.latest_jobs(scenario["folder"], by="dataset-combination")["tiny"].outcome == "success"


def test_collect_names_the_killed_shard_and_its_cancelled_combination(scenario):
    failed = scenario["collect_failed"]
    assert failed.returncode == 1, failed.stdout + failed.stderr
    lines = dict(re.findall(r"^  shard (\S+) \((.*)$", failed.stdout, re.MULTILINE))
    assert set(lines) == {"folder", "folder-B4"}, failed.stdout
    assert "CANCELLED" in lines["folder"] and "SIGTERM" in lines["folder"], lines["folder"]
    assert lines["folder-B4"].startswith("runs after shard folder, which is missing)"), lines["folder-B4"]
    assert "dependency failed: shard folder" in lines["folder-B4"]
    # Whatever collect changed in the tracked files is DVC's (dvc.lock, outputs), which launch accepts.
    changed = [line.split()[-1] for line in scenario["dirty"].splitlines()]
    assert all(f == "dvc.lock" or f.startswith(("resolved/", "metrics/", "reports/")) for f in changed), changed


def test_only_missing_resubmits_the_shard_and_its_combination_without_a_commit(scenario):
    assert sorted(scenario["again_jobs"]) == ["folder", "folder-B4"], scenario["again"]
    assert "tiny: not resubmitted" in scenario["again"]
    old = {Path(status.submitted(scenario["folder"])[job].checkout) for job, _ in scenario["jobs"].values()}
    new = {Path(status.submitted(scenario["folder"])[job].checkout) for job, _ in scenario["again_jobs"].values()}
    assert not old & new  # a fresh checkout, not the killed job's


@pytest.mark.parametrize("step", ["collect", "collect_by_dataset"])
def test_collect_restores_every_shard_and_runs_only_the_report(scenario, step):
    collected = scenario[step]
    assert collected.returncode == 0, collected.stdout + collected.stderr
    (ran,) = COLLECT_RAN.findall(collected.stdout)
    stages = [] if ran == "nothing" else [r.strip() for r in ran.split(",")]  # nothing: all up to date
    assert set(stages) <= ALLOWED and len(stages) == len(set(stages)), ran  # each stage named once


def test_by_dataset_jobs_restore_everything_from_the_run_cache(scenario):
    assert sorted(scenario["by_dataset_jobs"]) == ["folder", "tiny"]
    for job, _ in scenario["by_dataset_jobs"].values():
        assert set(job_result(scenario["folder"], job)["ran"]) <= {"resolve"}


@pytest.mark.parametrize("by", ["dataset-combination", "dataset"])
def test_collected_report_is_byte_identical_to_a_serial_dvc_repro(scenario, by):
    mine = scenario["combination_outputs"] if by == "dataset-combination" else relative(
        scenario["root"], digest(outputs(scenario["root"])))
    assert len(mine) > 20 and "reports/index.html" in mine
    assert mine == scenario["reference"]
