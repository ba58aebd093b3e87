"""The SLURM path without a cluster: submitit's SLURM executor with stand-ins for `srun`, `sbatch`
and `sacct` on PATH (shell scripts that record the sbatch file and answer like SLURM does).

Checked: the job parameters and the sbatch script submitit would submit, the job array and its
parallelism, the `afterok` dependency of the dataset x combination shards, and that launch and
collect read each job's state back from submitit's folder and `sacct`.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from pathlib import Path

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
echo "JobID|State|NodeList"
cat "$FAKE_SLURM/sacct.txt" 2>/dev/null
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    folder = tmp_path / "slurm"
    folder.mkdir()
    for name, text in (("srun", "#!/bin/sh\nexit 0\n"), ("sbatch", SBATCH), ("sacct", SACCT)):
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
    assert "tiny (from stage prepare@tiny): job 4242_0 (slurm, state FAILED)" in out
    assert "folder (from stage prepare@folder): job 4242_1 (slurm, state RUNNING) is still queued" in out
    assert str(folder / "4242_0_0_log.err") in out


def test_combination_shards_wait_for_their_dataset_shard(fake_slurm, study, capsys):
    assert cli.main(["launch", "--repo", str(study), "--executor", "slurm", "--by", "dataset-combination"]) == 0
    out = capsys.readouterr().out
    jobs = dict(re.findall(r"^  (\S+): job (\S+),", out, re.MULTILINE))
    combinations = ["B4", "B34", "B34_balanced"]  # tests/tiny_study.py
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
