"""The SLURM path without a cluster: submitit's SLURM executor with stand-ins for `srun`, `sbatch`
and `sacct` on PATH (shell scripts that record the sbatch file and answer like SLURM does).

Checked: the job parameters and the sbatch script submitit would submit, the job array and its
parallelism, the `afterok` dependency of the dataset x combination shards, and that launch and
collect read each job's state back from submitit's folder and `sacct`.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import stat
import sys
from pathlib import Path

# `import dvc` binds DVC's log handler to the sys.stdout of that moment: imported first inside a
# capsys test, that stream is closed afterwards and later tests' in-process DVC logging fails.
import dvc  # noqa: F401
import pytest

from kmx_eval.launch import cli, executors, status
from tiny_study import dvc, make_study_repo, run

SBATCH = """#!/bin/sh
# Record the submitted script, answer with the next job id (4242, 4243...).
n=$(cat "$FAKE_SLURM/count" 2>/dev/null || echo 4242)
cp "$1" "$FAKE_SLURM/sbatch-$n.sh"
echo $((n + 1)) > "$FAKE_SLURM/count"
echo "Submitted batch job $n"
"""
SACCT = """#!/bin/sh
# A cluster without accounting answers as SLURM 22.05 does; else the states of sacct.txt.
if [ -e "$FAKE_SLURM/no-accounting" ]; then
  echo "sacct: error: Slurm accounting storage is disabled" >&2; exit 1
fi
echo "JobID|State"
cat "$FAKE_SLURM/sacct.txt" 2>/dev/null
"""
SQUEUE = """#!/bin/sh
cat "$FAKE_SLURM/squeue.txt" 2>/dev/null
"""
SCANCEL = """#!/bin/sh
echo "$@" >> "$FAKE_SLURM/scancel.txt"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    folder = tmp_path / "slurm"
    folder.mkdir()
    for name, text in (("srun", "#!/bin/sh\nexit 0\n"), ("sbatch", SBATCH), ("sacct", SACCT),
                       ("squeue", SQUEUE), ("scancel", SCANCEL)):
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    return folder


def sbatch_options(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, re.MULTILINE))


def test_slurm_job_parameters_and_sbatch_script(fake_slurm, tmp_path):
    res = executors.Resources(time_min=240, gpus_per_job=1, cpus_per_job=8, mem_gb=32, partition="gpu",
                              account="lab", array_parallelism=2, setup=("module load cuda/12",))
    params = executors.parameters("slurm", res)
    assert params == {"name": "kmx-eval", "timeout_min": 240, "nodes": 1, "tasks_per_node": 1,
                      "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "slurm_partition": "gpu",
                      "slurm_account": "lab", "slurm_array_parallelism": 2,
                      "slurm_setup": ["module load cuda/12"]}
    ex = executors.executor("slurm", tmp_path / "jobs", res)
    with ex.batch():
        jobs = [ex.submit(print, i) for i in range(3)]
    assert [j.job_id for j in jobs] == ["4242_0", "4242_1", "4242_2"]
    script = (fake_slurm / "sbatch-4242.sh").read_text()
    opts = sbatch_options(script)
    assert opts["partition"] == "gpu" and opts["account"] == "lab"
    assert opts["gpus-per-node"] == "1" and opts["cpus-per-task"] == "8"
    assert opts["mem"] == "32GB" and opts["time"] == "240"
    assert opts["array"] == "0-2%2"  # three shards, two at a time
    assert opts["job-name"] == "kmx-eval"
    assert opts["output"].startswith(str(tmp_path / "jobs"))
    assert "module load cuda/12" in script
    assert f"{sys.executable} -u -m submitit.core._submit" in script  # this venv's python runs the job


def test_local_jobs_get_their_own_gpus():
    res = executors.Resources(gpus_per_job=2, visible_gpus=(0, 1, 2, 3))
    first = executors.parameters("local", res, job_index=0)["local_visible_gpus"]
    second = executors.parameters("local", res, job_index=1)["local_visible_gpus"]
    assert first[:2] == (0, 1) and second[:2] == (2, 3)
    assert "slurm_partition" not in executors.parameters("local", executors.Resources(partition="gpu"))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = make_study_repo(tmp_path_factory.mktemp("template") / "study")
    dvc("remote", "add", "-d", "shared", "../remote", cwd=root)  # relative: resolved per copy
    run(["git", "commit", "-qam", "remote"], cwd=root)
    return root


@pytest.fixture
def study(template, tmp_path):
    return Path(shutil.copytree(template, tmp_path / "study", symlinks=True))


def test_launch_submits_one_array_and_collect_reads_the_job_states(fake_slurm, study, capsys):
    argv = ["--repo", str(study), "--executor", "slurm", "--partition", "gpu", "--gpus-per-job", "1",
            "--array-parallelism", "2", "--time", "90"]
    assert cli.main(["launch", *argv]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^  (\w+): job (\S+),", out, re.MULTILINE) == [("tiny", "4242_0"), ("folder", "4242_1")]
    assert sbatch_options((fake_slurm / "sbatch-4242.sh").read_text())["array"] == "0-1%2"

    folder = next((study / ".kmx-launch").glob("*/submitit"))
    (fake_slurm / "sacct.txt").write_text("4242_0|FAILED|node1\n4242_1|RUNNING|node2\n")
    jobs = status.latest_jobs(folder)
    assert jobs["tiny"].state == "FAILED" and jobs["tiny"].needs_resubmission
    assert jobs["folder"].outcome == "active" and not jobs["folder"].needs_resubmission
    assert jobs["tiny"].spec.targets[0] == "prepare@tiny"

    # Only the failed shard is resubmitted; the running one is left alone.
    assert cli.main(["launch", *argv, "--only-missing", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^  (\S+): dvc repro", out, re.MULTILINE) == ["tiny"]

    # Nothing reached the remote: collect names both shards with their job's state and log.
    assert cli.main(["collect", "--repo", str(study)]) == 1
    out = capsys.readouterr().out
    assert ("shard tiny (no result on the remote for its stage prepare@tiny): job 4242_0 (slurm, FAILED)"
            in out)
    assert "shard folder (no result on the remote for its stage prepare@folder): job 4242_1 (slurm, RUNNING) is " \
           "still queued" in out
    assert str(folder / "4242_0_0_log.err") in out


def test_combination_shards_wait_for_their_dataset_shard(fake_slurm, study, capsys):
    assert cli.main(["launch", "--repo", str(study), "--executor", "slurm", "--by", "dataset-combination"]) == 0
    out = capsys.readouterr().out
    jobs = dict(re.findall(r"^  (\S+): job (\S+),", out, re.MULTILINE))
    combinations = ["B4", "B34"]  # tests/tiny_study.py
    expected = {"tiny": "4242_0", "folder": "4242_1"}
    for array, dataset in ((4243, "tiny"), (4244, "folder")):
        expected.update({f"{dataset}-{c}": f"{array}_{i}" for i, c in enumerate(combinations)})
    assert jobs == expected
    assert sbatch_options((fake_slurm / "sbatch-4243.sh").read_text())["dependency"] == "afterok:4242_0"
    assert sbatch_options((fake_slurm / "sbatch-4244.sh").read_text())["dependency"] == "afterok:4242_1"


def test_launch_refuses_uncommitted_changes_and_a_missing_remote(study, capsys):
    root = study
    dvc("remote", "default", "--unset", cwd=root)
    run(["git", "commit", "-qam", "no default remote"], cwd=root)
    assert cli.main(["launch", "--repo", str(root), "--executor", "local", "--dry-run"]) == 2
    assert "no default DVC remote" in capsys.readouterr().err
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "\n# edited\n")
    assert cli.main(["launch", "--repo", str(root), "--executor", "local", "--dry-run"]) == 2
    assert "uncommitted changes in params.yaml" in capsys.readouterr().err


def test_unknown_shard_is_named_with_the_valid_ones(study, capsys):
    assert cli.main(["launch", "--repo", str(study), "--executor", "local", "--only", "tiny", "nope",
                     "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no shard named 'nope'" in err and "tiny, folder" in err


def test_checkout_path_is_not_a_stage_of_the_parent_repository(study):
    # The default scratch folder lives inside the repository: DVC must not collect its clones.
    from kmx_eval.launch.shards import study_from_repo

    before = study_from_repo(study)
    run(["git", "clone", "-q", str(study), str(study / ".kmx-launch" / "abc" / "tiny")], cwd=study)
    assert study_from_repo(study) == before
    assert Path(study / ".kmx-launch" / "abc" / "tiny" / "dvc.yaml").exists()


# ------------------------------------------------------------------ issue 25: resubmission that survives a kill


def finish(folder: Path, job_id: str, outcome: str = "success") -> None:
    """Write the result pickle a finished submitit job leaves (success, or a ShardFailed trace)."""
    value = {"shard": "?", "ran": [], "restored": [], "seconds": 1.0} if outcome == "success" else (
        "Traceback ...\nkmx_eval.launch.job.ShardFailed: shard x: dvc repro exited 1: ERROR: boom")
    with open(folder / f"{job_id}_0_result.pkl", "wb") as f:
        pickle.dump((outcome, value), f)


def submitted_dry_run(out: str) -> list[str]:
    return re.findall(r"^  (\S+?)(?: \(after \S+\))?: dvc repro", out, re.MULTILINE)


def test_no_gpus_per_node_when_no_gpu_is_asked(fake_slurm, tmp_path):
    assert "gpus_per_node" not in executors.parameters("slurm", executors.Resources())
    ex = executors.executor("slurm", tmp_path / "jobs", executors.Resources())
    ex.submit(print, 1)
    assert "gpus-per-node" not in (fake_slurm / "sbatch-4242.sh").read_text()


def test_combination_jobs_are_killed_when_their_dataset_job_fails(fake_slurm, study, capsys):
    assert cli.main(["launch", "--repo", str(study), "--by", "dataset-combination"]) == 0
    opts = sbatch_options((fake_slurm / "sbatch-4243.sh").read_text())
    assert opts["dependency"] == "afterok:4242_0" and opts["kill-on-invalid-dep"] == "yes"
    assert "kill-on-invalid-dep" not in sbatch_options((fake_slurm / "sbatch-4242.sh").read_text())


@pytest.mark.parametrize("never_satisfied", [True, False], ids=["pending-forever", "killed-on-invalid-dep"])
def test_a_cancelled_dataset_shard_takes_its_combination_shards_along(fake_slurm, study, capsys, never_satisfied):
    """Issue 25, 2: tiny's job was cancelled; its combination jobs are PENDING with a reason that can
    never be satisfied (or were killed by --kill-on-invalid-dep): they count as failed, and
    --only-missing resubmits them with tiny (folder and its combinations succeeded)."""
    argv = ["--repo", str(study), "--by", "dataset-combination"]
    assert cli.main(["launch", *argv]) == 0
    capsys.readouterr()
    folder = next((study / ".kmx-launch").glob("*/submitit"))
    for job in ("4242_1", "4244_0", "4244_1"):
        finish(folder, job)
    combos = [f"4243_{i}" for i in range(2)]  # tiny-B4, tiny-B34
    done = "".join(f"{j}|COMPLETED\n" for j in ("4242_1", "4244_0", "4244_1"))
    if never_satisfied:
        (fake_slurm / "sacct.txt").write_text("4242_0|CANCELLED by 0\n4243_[0-1]|PENDING\n" + done)
        (fake_slurm / "squeue.txt").write_text("".join(f"{j}|PENDING|DependencyNeverSatisfied\n" for j in combos))
    else:
        (fake_slurm / "sacct.txt").write_text("4242_0|CANCELLED by 0\n4243_[0-1]|CANCELLED\n" + done)
    jobs = status.latest_jobs(folder)
    assert jobs["tiny"].message.startswith("cancelled (scancel: killed by SIGTERM)")
    assert jobs["tiny-B4"].outcome == "failed" and jobs["tiny-B4"].needs_resubmission
    assert jobs["tiny-B4"].message.startswith("dependency failed: shard tiny (job 4242_0, CANCELLED by 0)")
    assert not jobs["folder-B4"].needs_resubmission

    assert cli.main(["launch", *argv, "--only-missing", "--dry-run"]) == 0
    assert submitted_dry_run(capsys.readouterr().out) == ["tiny", "tiny-B4", "tiny-B34"]
    assert cli.main(["launch", *argv, "--only-missing"]) == 0
    out = capsys.readouterr().out
    assert "  tiny: job 4245," in out  # alone in its round: not an array
    assert sbatch_options((fake_slurm / "sbatch-4246.sh").read_text())["dependency"] == "afterok:4245"
    cancelled = (fake_slurm / "scancel.txt").read_text().split() if never_satisfied else []
    assert cancelled == (combos if never_satisfied else [])  # the old jobs would never start

    # A combination shard resubmitted alone (its dataset succeeded) does not wait for anything.
    (fake_slurm / "sacct.txt").write_text("4245|COMPLETED\n4246_0|FAILED\n4246_1|COMPLETED\n4246_2|COMPLETED\n")
    (fake_slurm / "squeue.txt").write_text("")
    for job in ("4245", "4246_1", "4246_2"):
        finish(folder, job)
    finish(folder, "4246_0", "error")
    assert cli.main(["launch", *argv, "--only-missing", "--dry-run"]) == 0
    assert submitted_dry_run(capsys.readouterr().out) == ["tiny-B4"]


def test_without_accounting_running_jobs_are_never_resubmitted(fake_slurm, study, capsys):
    """Issue 25, 4: sacct exits 1; say so in one line and take the states from squeue."""
    argv = ["--repo", str(study)]
    assert cli.main(["launch", *argv]) == 0
    (fake_slurm / "no-accounting").touch()
    (fake_slurm / "squeue.txt").write_text("4242_1|RUNNING|None\n")  # tiny (4242_0) ended, no result
    capsys.readouterr()
    assert cli.main(["launch", *argv, "--only-missing", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert submitted_dry_run(out) == ["tiny"]
    assert "folder: not resubmitted, job 4242_1 (slurm, RUNNING) is still queued or running" in out
    (line,) = [ln for ln in err.splitlines() if "accounting" in ln]
    assert "no job accounting (sacct: sacct: error: Slurm accounting storage is disabled)" in line


@pytest.mark.parametrize(("state", "cause"), [
    ("TIMEOUT", "killed at its time limit"), ("PREEMPTED", "preempted and not requeued"),
    ("CANCELLED by 0", "cancelled (scancel: killed by SIGTERM)"), ("OUT_OF_MEMORY", "killed for using more memory")])
def test_a_job_without_result_names_its_state_and_cause_in_one_line(fake_slurm, study, state, cause):
    assert cli.main(["launch", "--repo", str(study), "--only", "tiny"]) == 0
    folder = next((study / ".kmx-launch").glob("*/submitit"))
    (fake_slurm / "sacct.txt").write_text(f"4242|{state}\n")
    line = status.latest_jobs(folder)["tiny"].describe()
    assert line.startswith(f"job 4242 (slurm, {state}) ended without a result: {cause}")
    assert "\n" not in line


def test_a_signal_is_named_instead_of_the_last_line_of_dvc(tmp_path):
    from kmx_eval.launch.job import ShardSpec, failure_message
    from kmx_eval.launch.runcache import DvcRun

    spec = ShardSpec("tiny", ("prepare@tiny",), "r", "c" * 40, "x", "shared", "/r", "slurm", "dataset")
    killed = DvcRun(-15, ran=["resolve", "train@tiny"], output="Running stage 'train@tiny':\n")
    assert failure_message(spec, killed) == ("shard tiny: dvc repro killed by SIGTERM during stage train@tiny "
                                             "(scancel, a time limit or a node shutdown)")
    failed = DvcRun(1, ran=["resolve"], output="ERROR: failed to reproduce 'prepare@tiny'\n")
    assert failure_message(spec, failed) == "shard tiny: dvc repro exited 1: ERROR: failed to reproduce 'prepare@tiny'"


def test_every_launch_gets_a_new_checkout_and_a_reused_one_is_repaired(fake_slurm, study, tmp_path):
    """Issue 25, 1: a killed job left a 0-byte dvc.lock in the checkout that every resubmission reused."""
    from kmx_eval.launch.job import make_checkout

    argv = ["launch", "--repo", str(study), "--only", "tiny"]
    assert cli.main(argv) == 0 and cli.main(argv) == 0
    specs = sorted(status.submitted(next((study / ".kmx-launch").glob("*/submitit"))).values(),
                   key=lambda spec: spec.launched_at)
    assert len({spec.checkout for spec in specs}) == 2 and {Path(s.checkout).name for s in specs} == {"tiny"}

    # A requeued job (same spec) reuses its checkout, repaired: tracked files, a readable dvc.lock.
    checkout = make_checkout(specs[0])
    (checkout / "dvc.lock").write_text("")  # what a SIGTERM during DVC's rewrite left
    (checkout / "params.yaml").write_text("half written")
    (checkout / ".dvc" / "tmp").mkdir(exist_ok=True)
    (checkout / ".dvc" / "tmp" / "rwlock").write_text('{"write": {"x": {"pid": 1}}}')
    assert make_checkout(specs[0]) == checkout
    assert not (checkout / "dvc.lock").exists() and not (checkout / ".dvc" / "tmp" / "rwlock").exists()
    assert (checkout / "params.yaml").read_text() == (study / "params.yaml").read_text()
    (checkout / "dvc.lock").write_text("schema: '2.0'\nstages:\n  resolve:\n    cmd: x\n")
    make_checkout(specs[0])
    assert (checkout / "dvc.lock").exists()  # a readable lock file is DVC's to judge


def test_launch_only_missing_follows_a_failed_collect_without_a_commit(fake_slurm, study, capsys):
    """Issue 25, 3: collect rewrote the tracked dvc.lock and metrics; launch refused them."""
    dvc("repro", "resolve", cwd=study, extra_env={"PYTHONPATH": str(study)})
    run(["git", "add", "-f", "dvc.lock", "resolved"], cwd=study)
    run(["git", "commit", "-qm", "a study whose dvc.lock and outputs are tracked"], cwd=study)
    assert cli.main(["launch", "--repo", str(study)]) == 0
    (fake_slurm / "sacct.txt").write_text("4242_0|FAILED\n4242_1|COMPLETED\n")
    assert cli.main(["collect", "--repo", str(study)]) == 1
    # What collect (or DVC) writes: the lock file and stage outputs.
    (study / "dvc.lock").write_text((study / "dvc.lock").read_text() + "\n")
    for out in (study / "resolved").rglob("*"):
        if out.is_file():
            out.write_bytes(out.read_bytes() + b"\n")
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=study).stdout.strip()
    capsys.readouterr()
    assert cli.main(["launch", "--repo", str(study), "--only-missing", "--dry-run"]) == 0
    assert submitted_dry_run(capsys.readouterr().out) == ["tiny", "folder"]  # no result pickles: both


def test_collect_writes_the_platform_records_the_jobs_returned(fake_slurm, study):
    """Platform records (metrics/platform/, not DVC outputs) do not travel with the run cache: the
    job returns them and collect writes them, so that the report's platform line is a serial run's."""
    assert cli.main(["launch", "--repo", str(study)]) == 0
    folder = next((study / ".kmx-launch").glob("*/submitit"))
    for job_id, name in (("4242_0", "train@tiny.json"), ("4242_1", "train@folder.json")):
        with open(folder / f"{job_id}_0_result.pkl", "wb") as f:
            pickle.dump(("success", {"platform": {name: '{"cpu": "x"}\n'}}), f)
    assert cli.carry_platform_records(folder, study) == 2
    assert (study / "metrics" / "platform" / "train@folder.json").read_text() == '{"cpu": "x"}\n'
    assert cli.carry_platform_records(folder, study) == 0  # already there


class _LocalJob:
    """A local submitit job as ``submit`` sees it: done after ``polls`` looks, then succeeded or failed."""

    def __init__(self, name: str, polls: int, fails: bool = False):
        self.job_id, self.polls, self.fails = f"job-{name}", polls, fails

    def done(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def exception(self):
        assert self.polls < 0, "submit waited on a job that had not finished"
        return RuntimeError("stage failed") if self.fails else None


def test_local_combination_shards_start_when_their_own_dataset_job_ends(monkeypatch, capsys):
    """Locally, a quick dataset's combination shards are submitted as soon as its job succeeds, not
    behind a slower dataset listed before it (the thorough study's digits combinations queued behind
    shapes' three trainings, a core idle); a failed dataset's combinations are not submitted at all."""
    from kmx_eval.launch.shards import Shard

    def shard(name, after=None):
        return Shard(name=name, dataset=name.split("-")[0], combination=None, stages=(), after=after)

    plan = [shard("slow"), shard("quick"), shard("broken"), shard("slow-B4", "slow"),
            shard("quick-B4", "quick"), shard("quick-B34", "quick"), shard("broken-B4", "broken")]
    p = type("Plan", (), {"shards": plan, "specs": {s.name: None for s in plan}})()
    dataset_jobs = {"slow": _LocalJob("slow", 5), "quick": _LocalJob("quick", 1),
                    "broken": _LocalJob("broken", 2, fails=True)}
    rounds = []

    def fake_round(p, group, *, executor, res, after_job=None):
        rounds.append(([s.name for s in group], after_job))
        return {s.name: dataset_jobs.get(s.name, _LocalJob(s.name, 0)) for s in group}

    monkeypatch.setattr(cli, "_submit_round", fake_round)
    monkeypatch.setattr(cli, "LOCAL_POLL_SECONDS", 0.0)
    jobs = cli.submit(p, executor="local", res=executors.Resources())
    assert rounds == [(["slow", "quick", "broken"], None), (["quick-B4", "quick-B34"], "job-quick"),
                      (["slow-B4"], "job-slow")]
    assert "broken-B4" not in jobs and "quick-B34" in jobs
    assert "broken failed: its combination shards were not submitted (broken-B4)" in capsys.readouterr().out
