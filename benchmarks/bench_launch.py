"""Scale-out: a two-dataset study as two submitit jobs (``kmx-eval launch --executor local``, or
``--executor slurm`` on a SLURM cluster, then ``kmx-eval collect``) against one serial ``dvc repro``
of the same commit.

Each round builds a fresh git + DVC repository with a fresh local-directory remote (so nothing is
restored from an earlier round), then times, in alternating order:

- serial: ``dvc repro`` of the whole study in a clone (its own DVC cache);
- launch: ``kmx-eval launch --executor local`` (one job per dataset, both at once, each in its own
  clean checkout, ``dvc repro --pull`` then the run-cache push), then ``kmx-eval collect``
  (run-cache restore of every shard stage, the report).

    speed-up = median_r ( t_serial(r) / t_launch+collect(r) )

Target: >= 1.3 with two jobs, on a machine with at least two free cores (a 2x ideal, minus the
per-job checkout, DVC start-up and push, and the serial report). Every stage and job runs with
``--threads`` torch/BLAS threads (default 1), the same in both variants: the ratio is what a second
job gains at the same per-job resources, as on a cluster where each job has its own node or GPU.
On a shared, loaded machine the two jobs compete with everything else; read the load average.

    .venv/bin/python benchmarks/bench_launch.py --quick     # the study of tests/launch
    .venv/bin/python benchmarks/bench_launch.py             # the tiny study of tests/e2e, two synthetic sets
    .venv/bin/python benchmarks/bench_launch.py --quick --executor slurm   # two SLURM jobs (one CPU each)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as common
from bench_pipeline import BIN, environment_for_dvc, expanded_params, make_repository

TARGET = 1.3
COLLECT_RAN = re.compile(r"^collect ran: (.*)$", re.MULTILINE)


def two_datasets(quick: bool) -> dict:
    """Two synthetic datasets (one shard each) at the tests' tiny sizes, resnet18 at 64 px.

    ``quick`` is the study of tests/launch (one combination, three explainers, four Quantus
    metrics, one epoch); otherwise two combinations, every explainer and metric, two epochs.
    """
    dataset = {"source": "synthetic", "n_classes": 3, "train_per_class": 24, "test_per_class": 8, "clutter": 2}
    study = {
        "seeds": [0],
        "datasets": {"first": {**dataset, "seed": 0}, "second": {**dataset, "seed": 1}},
        "backbone": {"architecture": "resnet18", "image_size": 64, "epochs": 2, "batch_size": 16,
                     "lr": 0.003},
        "combinations": ["B4", "B34"],
        "head": {"n_prototypes": 2, "n_init": 1, "max_iter": 50, "probe_max_iter": 200},
        "explain": {"n_images": 6, "ig_steps": 4, "batch_size": 8,
                    "concepts": {"n_concepts": 3, "n_images": 12, "locations_per_image": 8, "batch_size": 64}},
        "evaluate": {"faithfulness": {"nr_runs": 3, "n_steps": 4, "nr_samples": 1, "regions_evaluation": 3},
                     "bootstrap": {"n_resamples": 50}, "compare": [["B4", "B34"]]},
        "report": {"gallery_images": 2},
    }
    if quick:
        study["combinations"] = ["B4"]
        study["backbone"]["epochs"] = 1
        study["explain"]["explainers"] = ["margin", "cam", "random"]
        study["evaluate"]["quantus"] = ["PointingGame", "RelevanceMassAccuracy", "Sparseness",
                                        "FaithfulnessCorrelation"]
        study["evaluate"]["compare"] = []
    return study


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def one_round(base: Path, params_text: str, env: dict, *, serial_first: bool,
              executor: str) -> dict[str, float | str]:
    """Fresh repository and remote; time the serial run and the launch + collect, in the given order."""
    root = base / "study"
    root.mkdir(parents=True)
    make_repository(root, params_text, [], env)
    run([str(BIN / "dvc"), "remote", "add", "-d", "shared", str(base / "remote")], root, env)
    run(["git", "commit", "-qam", "shared remote"], root, env)
    run(["git", "clone", "-q", str(root), str(base / "serial")], base, env)
    out: dict[str, float | str] = {}

    def serial() -> None:
        t0 = common.now()
        run([str(BIN / "dvc"), "repro"], base / "serial", {**env, "PYTHONPATH": str(base / "serial")})
        out["serial_s"] = common.now() - t0

    def launch() -> None:
        launcher = [sys.executable, "-m", "kmx_eval.launch"]
        job_env = {**env, "PYTHONPATH": str(common.REPO)}  # the jobs import this kmx_eval.launch
        t0 = common.now()
        # slurm: wait for the jobs (local waits by default); each job asks for one CPU.
        extra = ["--wait", "--cpus-per-job", "1"] if executor == "slurm" else []
        run([*launcher, "launch", "--executor", executor, *extra], root, job_env)
        out["launch_s"] = common.now() - t0
        collected = run([*launcher, "collect"], root, job_env)
        out["launch_collect_s"] = common.now() - t0
        out["collect_ran"] = COLLECT_RAN.findall(collected.stdout)[-1]

    for step in ((serial, launch) if serial_first else (launch, serial)):
        step()
    return out


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, threads=1)
    p.add_argument("--workdir", default=None, help="where to create the temporary repositories")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local processes (default), or SLURM jobs (sbatch must answer; the repository and "
                        "--workdir must be on a filesystem the nodes share)")
    args = p.parse_args(argv)
    repeats = args.repeats or 1
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    params_text = expanded_params(two_datasets(args.quick), "bench_launch two-dataset study")
    env = {**environment_for_dvc(), "TQDM_DISABLE": "1"}
    env_before = common.environment()
    rounds = []
    for r in range(repeats):
        base = Path(tempfile.mkdtemp(prefix="kmx-bench-launch-", dir=args.workdir))
        try:
            rounds.append(one_round(base, params_text, env, serial_first=(r % 2 == 0), executor=args.executor))
            print(f"round {r + 1}: serial {rounds[-1]['serial_s']:.0f} s, launch {rounds[-1]['launch_s']:.0f} s, "
                  f"launch + collect {rounds[-1]['launch_collect_s']:.0f} s "
                  f"(collect ran: {rounds[-1]['collect_ran']})", flush=True)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    serial = [r["serial_s"] for r in rounds]
    both = [r["launch_collect_s"] for r in rounds]
    jobs = [r["launch_s"] for r in rounds]
    checks = [
        common.Check("serial dvc repro / (2-job launch + collect)", common.paired_ratio(serial, both), ">=",
                     TARGET, detail=f"serial {common.spread(serial)}, launch + collect {common.spread(both)}"),
        common.Check("serial dvc repro / 2-job launch alone (no report)", common.paired_ratio(serial, jobs),
                     detail=f"launch {common.spread(jobs)}"),
    ]
    common.print_table(f"two {args.executor} jobs vs serial ({'quick' if args.quick else 'tiny'} two-dataset study, "
                       f"{args.threads or 'default'} thread(s) per stage, {repeats} round(s))", checks,
                       notes=["collect ran: " + "; ".join(str(r["collect_ran"]) for r in rounds)])
    return common.finish(args, "bench_launch", checks,
                         {"repeats": repeats, "threads": args.threads, "executor": args.executor},
                         {"rounds": rounds}, env_before)


if __name__ == "__main__":
    raise SystemExit(main())
