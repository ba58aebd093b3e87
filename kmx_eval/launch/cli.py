"""``kmx-eval launch`` and ``kmx-eval collect``: a study's shards as cluster (or local) jobs.

    kmx-eval launch  [--by dataset|dataset-combination] [--executor slurm|local] [resources]
                     [--only SHARD ...] [--only-missing] [--dry-run] [--wait|--no-wait]
    kmx-eval collect [--by ...]

``launch`` submits one job per shard of the current commit (see :mod:`kmx_eval.launch.shards`);
``collect`` restores every shard's stages from the DVC remote, runs the rest (the report), names
the shards that are missing with their job's state and log, and exits 1 when any is missing.
Files: ``<scratch>/<commit>/submitit/`` (submitit's pickles and job logs) and
``<scratch>/<commit>/<shard>/`` (the job's checkout); ``--scratch`` defaults to ``.kmx-launch``
in the repository and must be on a filesystem that the cluster's nodes share.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from kmx_eval.errors import KmxError
from kmx_eval.launch import executors, runcache, shards, status
from kmx_eval.launch.job import ShardJob, ShardSpec, git

EXIT_USER_ERROR = 2


class LaunchError(KmxError):
    """The repository is not ready to launch (uncommitted changes, no remote...)."""


# --------------------------------------------------------------------------------------------- paths


def repository(path: str | Path) -> Path:
    try:
        return Path(git("rev-parse", "--show-toplevel", cwd=path))
    except RuntimeError:
        raise LaunchError(f"{Path(path).resolve()} is not inside a git repository") from None


def launch_dir(root: Path, scratch: str | None, commit: str) -> Path:
    base = Path(scratch).expanduser() if scratch else root / ".kmx-launch"
    return base.resolve() / commit[:12]


def submitit_dir(root: Path, scratch: str | None, commit: str) -> Path:
    return launch_dir(root, scratch, commit) / "submitit"


def check_committed(root: Path) -> None:
    """Jobs run the committed tree: refuse when tracked files differ from it."""
    dirty = git("diff", "--name-only", "HEAD", cwd=root)
    if dirty:
        files = ", ".join(dirty.splitlines()[:5])
        raise LaunchError(f"uncommitted changes in {files}: jobs run the committed version; "
                          "commit them first (git commit -am ...)")


# -------------------------------------------------------------------------------------------- launch


def _resources(args: argparse.Namespace) -> executors.Resources:
    return executors.Resources(
        time_min=args.time, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
        mem_gb=args.mem_gb, partition=args.partition, account=args.account, qos=args.qos,
        constraint=args.constraint, array_parallelism=args.array_parallelism, setup=tuple(args.setup or ()),
        visible_gpus=tuple(int(g) for g in args.visible_gpus.split(",")) if args.visible_gpus else ())


def _submit(ex, specs: list[ShardSpec]) -> list:
    with ex.batch():  # one SLURM job array per round
        jobs = [ex.submit(ShardJob(), spec) for spec in specs]
    return jobs


def launch(args: argparse.Namespace) -> int:
    root = repository(args.repo)
    check_committed(root)
    commit = git("rev-parse", "HEAD", cwd=root)
    remote_name, remote_url = runcache.default_remote(root)
    study = shards.study_from_repo(root, by=args.by)
    chosen = [study.shard(n) for n in args.only] if args.only else list(study.shards)
    folder = submitit_dir(root, args.scratch, commit)
    if args.only_missing:
        latest = status.latest_jobs(folder)
        chosen = [s for s in chosen if s.name not in latest or latest[s.name].needs_resubmission]
        for name, st in sorted(latest.items()):
            if not st.needs_resubmission:
                print(f"{name}: not resubmitted, {st.describe()}")
    if not chosen:
        print("nothing to submit: every shard's latest job succeeded or is still running")
        return 0
    base = launch_dir(root, args.scratch, commit)
    # targets: the shard's own stages; dvc repro adds what they depend on (the upstream stages,
    # and in dataset-combination mode the dataset's stages, restored from the run cache).
    now = time.time()
    specs = {s.name: ShardSpec(shard=s.name, targets=s.stages, repo=str(root), commit=commit,
                               checkout=str(base / s.name), remote_name=remote_name, remote_url=remote_url,
                               executor=args.executor, by=args.by, launched_at=now)
             for s in chosen}
    first = [s for s in chosen if s.after is None or s.after not in specs]
    later = [s for s in chosen if s not in first]
    print(f"commit {commit[:12]}, {len(chosen)} shard(s) by {args.by}, executor {args.executor}, "
          f"remote {remote_name} = {remote_url}")
    if args.dry_run:
        for s in chosen:
            after = f" (after {s.after})" if s in later else ""
            print(f"  {s.name}{after}: dvc repro --pull {' '.join(specs[s.name].targets)}")
        return 0

    res = _resources(args)
    folder.mkdir(parents=True, exist_ok=True)
    jobs: dict[str, object] = {}
    if args.executor == "local":
        # Each local job gets its own GPUs (visible_gpus rotates with the job index).
        for i, s in enumerate(first):
            ex = executors.executor("local", folder, res, name=f"kmx-{s.name}", job_index=i)
            jobs[s.name] = ex.submit(ShardJob(), specs[s.name])
    else:
        ex = executors.executor("slurm", folder, res, name="kmx-eval")
        jobs.update(zip([s.name for s in first], _submit(ex, [specs[s.name] for s in first])))
    _print_jobs(jobs, [s.name for s in first])

    if later:  # dataset-combination: each dataset's combination shards run after its dataset shard
        by_after: dict[str, list[shards.Shard]] = {}
        for s in later:
            by_after.setdefault(s.after, []).append(s)
        for after, group in by_after.items():
            if args.executor == "slurm":
                ex = executors.executor("slurm", folder, res, name="kmx-eval",
                                        dependency=f"afterok:{jobs[after].job_id}")
                new = dict(zip([s.name for s in group], _submit(ex, [specs[s.name] for s in group])))
            else:  # the local executor has no dependencies: wait for the dataset's job
                if jobs[after].exception() is not None:
                    print(f"{after} failed: its combination shards were not submitted "
                          f"({', '.join(s.name for s in group)})")
                    continue
                new = {}
                for i, s in enumerate(group):
                    ex = executors.executor("local", folder, res, name=f"kmx-{s.name}", job_index=i)
                    new[s.name] = ex.submit(ShardJob(), specs[s.name])
            jobs.update(new)
            _print_jobs(new, list(new))

    wait = args.wait if args.wait is not None else args.executor == "local"
    if not wait:
        print(f"submitted; when the jobs are done: kmx-eval collect{_flags(args)}")
        return 0
    failed = []
    for name, job in jobs.items():
        exc = job.exception()
        if exc is None:
            result = job.result()
            print(f"{name}: done in {result['seconds']} s, ran {len(result['ran'])} stages, "
                  f"restored {len(result['restored'])}")
        else:
            failed.append(name)
            print(f"{name}: {status.job_status(folder, job.job_id, specs[name]).describe()}")
    print(f"next: kmx-eval collect{_flags(args)}")
    return 1 if failed else 0


def _print_jobs(jobs: dict, names: list[str]) -> None:
    for name in names:
        job = jobs[name]
        print(f"  {name}: job {job.job_id}, log {job.paths.stdout}")


def _flags(args: argparse.Namespace) -> str:
    flags = []
    if args.by != "dataset":
        flags += ["--by", args.by]
    if args.scratch:
        flags += ["--scratch", args.scratch]
    return "".join(f" {shlex.quote(f)}" for f in flags)


# ------------------------------------------------------------------------------------------- collect


def collect(args: argparse.Namespace) -> int:
    root = repository(args.repo)
    commit = git("rev-parse", "HEAD", cwd=root)
    runcache.default_remote(root)
    folder = submitit_dir(root, args.scratch, commit)
    latest = status.latest_jobs(folder)
    by = args.by or next((st.spec.by for st in latest.values()), "dataset")
    study = shards.study_from_repo(root, by=by)
    env = runcache.environment(root)

    records = runcache.fetch_run_cache(root)
    print(f"fetched {records} run-cache records from the remote")
    ran: list[str] = []
    if study.upstream:  # global stages the shards depend on (cheap: resolved settings)
        result = runcache.dvc(["repro", *study.upstream], root, env)
        if result.returncode:
            raise LaunchError(f"dvc repro {' '.join(study.upstream)} failed in {root}")
        ran += result.ran

    missing: dict[str, str] = {}
    for shard in study.shards:
        if shard.after in missing:
            missing[shard.name] = shard.after
            continue
        restored, first_missing = runcache.restore(root, shard.stages)
        if first_missing:
            missing[shard.name] = first_missing
        print(f"{shard.name}: restored {len(restored)} of {len(shard.stages)} stages"
              + (f", not {first_missing}" if first_missing else ""))

    if missing:
        print(f"\n{len(missing)} of {len(study.shards)} shards missing, the report was not built:")
        for name, stage in missing.items():
            st = latest.get(name)
            why = st.describe() if st else f"never launched at commit {commit[:12]}"
            print(f"  {name} (from stage {stage}): {why}")
        kept = [s.name for s in study.shards if s.name not in missing]
        if kept:
            print(f"restored and kept in the workspace: {', '.join(kept)}")
        print(f"resubmit the missing shards: kmx-eval launch --only-missing --by {by}"
              + (f" --scratch {shlex.quote(args.scratch)}" if args.scratch else "") + " [--executor ...]")
        return 1

    # Every shard is in the workspace and the local run cache: dvc repro records them in
    # dvc.lock (restoring, not running) and runs the downstream stages.
    result = runcache.dvc(["repro"], root, env)
    ran += result.ran
    computed = [s for s in result.ran if s not in study.upstream and s not in study.downstream]
    if computed:
        print(f"warning: dvc repro ran shard stages instead of restoring them: {', '.join(computed)}")
    print(f"collect ran: {', '.join(ran) or 'nothing'}")
    return result.returncode


# ---------------------------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kmx-eval", description=__doc__.strip().splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repo", default=".", help="the study's git repository (default: the current one)")
    common.add_argument("--scratch", help="folder for checkouts and job logs, shared with the cluster's "
                                          "nodes (default: .kmx-launch in the repository)")

    la = sub.add_parser("launch", parents=[common], help="submit one job per shard of the current commit")
    la.add_argument("--by", choices=shards.BY, default="dataset", help="shard per dataset (default) or "
                    "per dataset x block combination")
    la.add_argument("--executor", choices=executors.EXECUTORS, default="slurm")
    la.add_argument("--only", nargs="+", metavar="SHARD", help="submit only these shards")
    la.add_argument("--only-missing", action="store_true",
                    help="submit only shards whose latest job at this commit did not succeed and is not running")
    la.add_argument("--dry-run", action="store_true", help="print the shards and their stages, submit nothing")
    wait = la.add_mutually_exclusive_group()
    wait.add_argument("--wait", dest="wait", action="store_true", default=None,
                      help="wait for the jobs (default for --executor local)")
    wait.add_argument("--no-wait", dest="wait", action="store_false")
    r = la.add_argument_group("job resources")
    r.add_argument("--partition", help="SLURM partition")
    r.add_argument("--account", help="SLURM account")
    r.add_argument("--qos", help="SLURM quality of service")
    r.add_argument("--constraint", help="SLURM node constraint (e.g. a GPU type)")
    r.add_argument("--gpus-per-job", type=int, default=0)
    r.add_argument("--cpus-per-job", type=int)
    r.add_argument("--mem-gb", type=float)
    r.add_argument("--time", type=int, default=24 * 60, help="time limit per job, minutes (default 1440)")
    r.add_argument("--array-parallelism", type=int, help="SLURM: jobs of one array running at once")
    r.add_argument("--setup", action="append", metavar="LINE",
                   help="shell line run before each job (repeatable), e.g. 'module load cuda'")
    r.add_argument("--visible-gpus", help="local: GPUs to share among the jobs, e.g. 0,1,2,3")

    co = sub.add_parser("collect", parents=[common],
                        help="restore every shard from the DVC remote and build the report")
    co.add_argument("--by", choices=shards.BY, help="as given to launch (default: read from the jobs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return launch(args) if args.command == "launch" else collect(args)
    except KmxError as exc:
        print(f"kmx-eval {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except subprocess.CalledProcessError as exc:
        print(f"kmx-eval {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
