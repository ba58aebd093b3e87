"""``kmx-eval launch`` and ``kmx-eval collect``: a study's shards as cluster (or local) jobs.

    kmx-eval launch  [--by dataset|dataset-combination] [--executor slurm|local] [resources]
                     [--only SHARD ...] [--only-missing] [--dry-run] [--wait|--no-wait]
    kmx-eval collect [--by ...]

``launch`` submits one job per shard of the current commit (see :mod:`kmx_eval.launch.shards`);
``collect`` restores every shard's stages from the DVC remote, runs the rest (the report), names
the shards that are missing with their job's state and log, and exits 1 when any is missing.
Files: ``<scratch>/<commit>/submitit/`` (submitit's pickles and job logs) and
``<scratch>/<commit>/<launch time>/<shard>/`` (the job's checkout, new for every launch);
``--scratch`` defaults to ``.kmx-launch`` in the repository and must be on a filesystem that the
cluster's nodes share. ``launch`` refuses uncommitted changes except in what DVC writes
(``dvc.lock``, the stages' outputs), so that ``launch --only-missing`` can follow a failed
``collect``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import submitit

from kmx_eval import io, paths
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
    """Jobs run the committed tree: refuse when tracked files differ from it, except what DVC
    writes (``dvc.lock`` and the stages' outputs: a ``collect`` that stopped at a missing shard
    leaves them changed, and ``launch --only-missing`` must follow it without a commit)."""
    produced = _produced(root)
    dirty = [f for f in git("diff", "--name-only", "HEAD", cwd=root).splitlines()
             if f and not any(f == out or f.startswith(f"{out}/") for out in produced)]
    if dirty:
        files = ", ".join(dirty[:5])
        raise LaunchError(f"uncommitted changes in {files}: jobs run the committed version; "
                          "commit them first (git commit -am ...)")


def _produced(root: Path) -> set[str]:
    """``dvc.lock`` and every stage output of ``root``, relative to it (posix)."""
    from dvc.repo import Repo  # DVC takes seconds to import: only where a command needs it

    with contextlib.chdir(root), Repo(str(root)) as repo:
        outs = {Path(os.path.relpath(out.fs_path, root)).as_posix()
                for stage in repo.index.stages for out in stage.outs}
    return outs | {"dvc.lock"}


# -------------------------------------------------------------------------------------------- launch


def _resources(args: argparse.Namespace) -> executors.Resources:
    return executors.Resources(
        time_min=args.time, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
        mem_gb=args.mem_gb, partition=args.partition, account=args.account, qos=args.qos,
        constraint=args.constraint, array_parallelism=args.array_parallelism, setup=tuple(args.setup or ()),
        visible_gpus=tuple(int(g) for g in args.visible_gpus.split(",")) if args.visible_gpus else ())


@dataclass(frozen=True)
class Plan:
    """What one ``launch`` submits: the shards (combination shards after their dataset's), each
    one's job arguments, and the earlier jobs of those shards that it replaces."""

    root: Path
    commit: str
    folder: Path
    shards: tuple[shards.Shard, ...]
    specs: dict[str, ShardSpec]
    replaced: dict[str, status.JobStatus]


def choose(study: shards.Study, *, only: list[str] | None, latest: dict[str, status.JobStatus] | None
           ) -> tuple[list[shards.Shard], dict[str, status.JobStatus]]:
    """The shards to submit: ``only`` (default all); with ``latest`` (``--only-missing``) those
    whose latest job did not succeed and is not running. A combination shard goes with its dataset
    shard whenever that is submitted (its earlier job depended on the replaced one).
    Returns the shards in the study's order and the earlier jobs they replace."""
    chosen = [study.shard(n) for n in only] if only else list(study.shards)
    if latest is not None:
        chosen = [s for s in chosen if s.name not in latest or latest[s.name].needs_resubmission]
    names = {s.name for s in chosen}
    chosen = [s for s in study.shards if s.name in names or s.after in names]
    replaced = {s.name: latest[s.name] for s in chosen if latest and s.name in latest}
    return chosen, replaced


def plan(args: argparse.Namespace) -> Plan:
    root = repository(args.repo)
    check_committed(root)
    commit = git("rev-parse", "HEAD", cwd=root)
    remote_name, remote_url = runcache.default_remote(root)
    study = shards.study_from_repo(root, by=args.by)
    folder = submitit_dir(root, args.scratch, commit)
    latest = status.latest_jobs(folder, by=args.by) if args.only_missing else None
    chosen, replaced = choose(study, only=args.only, latest=latest)
    for name, st in sorted((latest or {}).items()):
        if name not in replaced:
            print(f"{name}: not resubmitted, {st.describe()}")
    # A new checkout per launch: a resubmitted job never inherits what a killed job left behind.
    now = time.time()
    attempt = launch_dir(root, args.scratch, commit) / time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    attempt = attempt.with_name(f"{attempt.name}.{int(now * 1000) % 1000:03d}")
    # targets: the shard's own stages; dvc repro adds what they depend on (the upstream stages,
    # and in dataset-combination mode the dataset's stages, restored from the run cache).
    specs = {s.name: ShardSpec(shard=s.name, targets=s.stages, repo=str(root), commit=commit,
                               checkout=str(attempt / s.name), remote_name=remote_name,
                               remote_url=remote_url, executor=args.executor, by=args.by,
                               launched_at=now, after=s.after)
             for s in chosen}
    print(f"commit {commit[:12]}, {len(chosen)} shard(s) by {args.by}, executor {args.executor}, "
          f"remote {remote_name} = {remote_url}")
    return Plan(root, commit, folder, tuple(chosen), specs, replaced)


def launch(args: argparse.Namespace) -> int:
    p = plan(args)
    if not p.shards:
        print("nothing to submit: every shard's latest job succeeded or is still running")
        return 0
    if args.dry_run:
        for s in p.shards:
            after = f" (after {s.after})" if s.after in p.specs else ""
            print(f"  {s.name}{after}: dvc repro --pull {' '.join(p.specs[s.name].targets)}")
        return 0
    _cancel_replaced(p.replaced)
    p.folder.mkdir(parents=True, exist_ok=True)
    jobs = submit(p, executor=args.executor, res=_resources(args))
    wait = args.wait if args.wait is not None else args.executor == "local"
    if not wait:
        print(f"submitted; when the jobs are done: kmx-eval collect{_flags(args)}")
        return 0
    return _wait(jobs, p, flags=_flags(args))


def _cancel_replaced(replaced: dict[str, status.JobStatus]) -> None:
    """A replaced SLURM job still queued can never start (its dependency failed): cancel it."""
    for st in replaced.values():
        if st.executor == "slurm" and st.state.startswith("PENDING"):
            subprocess.run(["scancel", st.job_id], capture_output=True)
            print(f"  {st.shard}: cancelled job {st.job_id} ({st.message})")


#: Seconds between two looks at the local dataset jobs (``submit``); SLURM waits by itself.
LOCAL_POLL_SECONDS = 5.0


def submit(p: Plan, *, executor: str, res: executors.Resources) -> dict[str, object]:
    """Submit the plan: its independent shards first (one SLURM job array), then each dataset's
    combination shards after their dataset's job (SLURM: ``afterok`` with
    ``--kill-on-invalid-dep=yes``; local: as soon as the dataset's job has succeeded, in the order
    the dataset jobs finish, else not at all)."""
    first = [s for s in p.shards if s.after not in p.specs]
    jobs = _submit_round(p, first, executor=executor, res=res)
    by_after: dict[str, list[shards.Shard]] = {}
    for s in p.shards:
        if s not in first:
            by_after.setdefault(s.after, []).append(s)
    if executor != "local":
        for after, group in by_after.items():
            jobs.update(_submit_round(p, group, executor=executor, res=res, after_job=jobs[after].job_id))
        return jobs
    # Local jobs have no scheduler to hold them: wait here, but for whichever dataset job finishes
    # first, so that a quick dataset's combinations do not queue behind a slow dataset's training.
    while by_after:
        finished = [after for after in by_after if jobs[after].done()]
        if not finished:
            time.sleep(LOCAL_POLL_SECONDS)
            continue
        for after in finished:
            group = by_after.pop(after)
            if jobs[after].exception() is not None:
                print(f"{after} failed: its combination shards were not submitted "
                      f"({', '.join(s.name for s in group)})")
                continue
            jobs.update(_submit_round(p, group, executor=executor, res=res, after_job=jobs[after].job_id))
    return jobs


def _submit_round(p: Plan, group: list[shards.Shard], *, executor: str, res: executors.Resources,
                  after_job: str | None = None) -> dict[str, object]:
    specs = [replace(p.specs[s.name], after_job=after_job) for s in group]
    if executor == "local":  # one process per job, each with its own GPUs (rotating with the index)
        jobs = [executors.executor("local", p.folder, res, name=f"kmx-{spec.shard}", job_index=i)
                .submit(ShardJob(), spec) for i, spec in enumerate(specs)]
    else:
        dependency = f"afterok:{after_job}" if after_job else None
        ex = executors.executor("slurm", p.folder, res, name="kmx-eval", dependency=dependency)
        with ex.batch():  # one SLURM job array per round
            jobs = [ex.submit(ShardJob(), spec) for spec in specs]
    for spec, job in zip(specs, jobs):
        print(f"  {spec.shard}: job {job.job_id}, log {job.paths.stdout}")
    return {spec.shard: job for spec, job in zip(specs, jobs)}


def _wait(jobs: dict[str, object], p: Plan, *, flags: str) -> int:
    failed = []
    for name, job in jobs.items():
        exc = job.exception()
        if exc is None:
            result = job.result()
            print(f"{name}: done in {result['seconds']} s, ran {len(result['ran'])} stages, "
                  f"restored {len(result['restored'])}")
        else:
            failed.append(name)
            print(f"{name}: {status.job_status(p.folder, job.job_id, p.specs[name]).describe()}")
    print(f"next: kmx-eval collect{flags}")
    return 1 if failed else 0


def _flags(args: argparse.Namespace, *, by: str | None = None) -> str:
    flags = ["--by", by] if by else (["--by", args.by] if args.by != "dataset" else [])
    if args.scratch:
        flags += ["--scratch", args.scratch]
    return "".join(f" {shlex.quote(f)}" for f in flags)


# ------------------------------------------------------------------------------------------- collect


def collect(args: argparse.Namespace) -> int:
    root = repository(args.repo)
    commit = git("rev-parse", "HEAD", cwd=root)
    runcache.default_remote(root)
    folder = submitit_dir(root, args.scratch, commit)
    specs = sorted(status.submitted(folder).values(), key=lambda spec: spec.launched_at)
    by = args.by or (specs[-1].by if specs else "dataset")  # as the last launch at this commit
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
            missing[shard.name] = f"runs after shard {shard.after}, which is missing"
            continue
        restored, first_missing = runcache.restore(root, shard.stages)
        if first_missing:
            missing[shard.name] = f"no result on the remote for its stage {first_missing}"
        print(f"shard {shard.name}: restored {len(restored)} of {len(shard.stages)} stages"
              + (f", not {first_missing}" if first_missing else ""))
    if missing:
        _report_missing(missing, study, latest=status.latest_jobs(folder, by=by), commit=commit,
                        hint=f"kmx-eval launch --only-missing{_flags(args, by=by)} [--executor ...]")
        return 1

    carried = carry_platform_records(folder, root)
    if carried:
        print(f"wrote {carried} platform records of the jobs' stages (metrics/platform/)")
    # Every shard is in the workspace and the local run cache: dvc repro records them in
    # dvc.lock (restoring, not running) and runs the downstream stages.
    result = runcache.dvc(["repro"], root, env)
    ran += result.ran
    computed = [s for s in result.ran if s not in study.upstream and s not in study.downstream]
    if computed:
        print(f"warning: dvc repro ran shard stages instead of restoring them: {', '.join(computed)}")
    print(f"collect ran: {', '.join(dict.fromkeys(ran)) or 'nothing'}")  # resolve runs in both repros
    return result.returncode


def carry_platform_records(folder: Path, root: Path) -> int:
    """Write into ``root`` the platform records that the succeeded jobs of ``folder`` returned
    (the latest job's where two ran the same stage); returns how many files changed."""
    records: dict[str, str] = {}
    for job_id, spec in sorted(status.submitted(folder).items(), key=lambda item: item[1].launched_at):
        job_class = submitit.SlurmJob if spec.executor == "slurm" else submitit.LocalJob
        job = job_class(folder=folder, job_id=job_id)
        if job.paths.result_pickle.exists() and job.exception() is None:
            records.update(job.result().get("platform", {}))
    target = root / paths.platform_record("train", "x").parent
    changed = 0
    for name, text in records.items():
        path = target / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            io.write_text(path, text)
            changed += 1
    return changed


def _report_missing(missing: dict[str, str], study: shards.Study, *, latest: dict[str, status.JobStatus],
                    commit: str, hint: str) -> None:
    print(f"\n{len(missing)} of {len(study.shards)} shards missing, the report was not built:")
    for name, why in missing.items():
        st = latest.get(name)
        job = st.describe() if st else f"never launched at commit {commit[:12]}"
        print(f"  shard {name} ({why}): {job}")
    kept = [s.name for s in study.shards if s.name not in missing]
    if kept:
        print(f"restored and kept in the workspace: {', '.join(kept)}")
    print(f"resubmit the missing shards (no commit needed): {hint}")


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
