"""What one job does: reproduce one shard in a clean checkout and push its results to the remote.

Every ``kmx-eval launch`` (a first submission or an ``--only-missing`` resubmission) gives each job
a new checkout folder (``<scratch>/<commit>/<launch time>/<shard>``), so a job never inherits what
a killed job left behind (issue 25: a SIGTERM while DVC rewrote ``dvc.lock`` left it empty, and
every resubmission that reused the checkout failed on it). The job is a
:class:`submitit.helpers.Checkpointable`: when SLURM preempts it or its time limit is near,
submitit requeues it with the same arguments and the requeued job reuses its own checkout, whose
local DVC cache holds every stage that had finished; before reuse :func:`make_checkout` resets
the tracked files to the commit and drops a ``dvc.lock`` that the interruption left unreadable, so
``dvc repro`` continues where it stopped (outputs that do not match ``dvc.lock`` are restored from
the cache or recomputed by DVC itself).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit
import yaml

from kmx_eval import paths
from kmx_eval.launch.runcache import dvc, environment, is_local_url, push_run_cache

STAGE_ERROR = re.compile(r"^(kmx-eval \S+: error: .*|ERROR: .*)$", re.MULTILINE)


class ShardFailed(RuntimeError):
    """``dvc repro`` of a shard failed; the message holds the stages' one-line errors."""


@dataclass(frozen=True)
class ShardSpec:
    """Everything a job needs, pickled by submitit into its ``<job id>_submitted.pkl``.

    ``kmx-eval collect`` reads these pickles back to know which job ran which shard.
    """

    shard: str
    targets: tuple[str, ...]
    repo: str
    commit: str
    checkout: str
    remote_name: str
    remote_url: str
    executor: str
    by: str
    launched_at: float = field(default_factory=time.time)
    #: dataset-combination: the shard it runs after, and that shard's job id (its dependency)
    after: str | None = None
    after_job: str | None = None


def git(*args: str, cwd: str | Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def make_checkout(spec: ShardSpec) -> Path:
    """A checkout of ``spec.commit`` at ``spec.checkout``: cloned when missing; when a requeued job
    finds it, verified (:func:`reset_checkout`) and reused. Its default DVC remote points at the same
    place as in the user's repository."""
    path = Path(spec.checkout)
    if (path / ".git").exists():
        reset_checkout(path, spec.commit)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{int(time.time() * 1e6)}.tmp")
        git("clone", "--quiet", "--no-checkout", spec.repo, str(tmp))
        git("checkout", "--quiet", "--detach", spec.commit, cwd=tmp)
        local = Path(spec.repo) / ".dvc" / "config.local"  # credentials, remotes added with --local
        if local.exists():
            shutil.copy2(local, tmp / ".dvc" / "config.local")
        tmp.rename(path)
    head = git("rev-parse", "HEAD", cwd=path)
    if head != spec.commit:
        raise RuntimeError(f"checkout {path} is at {head[:12]}, not at the launched commit {spec.commit[:12]}")
    if is_local_url(spec.remote_url):
        # A relative path in .dvc/config is relative to the config file: in the checkout it would
        # name another folder. Point the checkout's remote at the user's (absolute) path.
        result = dvc(["remote", "modify", "--local", spec.remote_name, "url", spec.remote_url], path, echo=False)
        if result.returncode:
            raise RuntimeError(f"could not configure the DVC remote in {path}: {result.output.strip()}")
    return path


def reset_checkout(path: Path, commit: str) -> None:
    """Make a checkout that an interrupted job used safe to reuse: tracked files as at ``commit``
    (``git checkout --force``: a half-rewritten tracked ``dvc.lock`` comes back), an untracked
    ``dvc.lock`` that does not parse removed (DVC then restores or reruns the stages it cannot
    trust), and DVC's repository lock files of the killed process removed (only this job uses
    this checkout)."""
    git("checkout", "--quiet", "--force", "--detach", commit, cwd=path)
    lock = path / "dvc.lock"
    if lock.exists() and not _readable_lock(lock):
        print(f"kmx-eval: {lock} was left unreadable by an interrupted run: removed", flush=True)
        lock.unlink()
    for name in ("lock", "rwlock"):
        (path / ".dvc" / "tmp" / name).unlink(missing_ok=True)


def _readable_lock(lock: Path) -> bool:
    try:
        data = yaml.safe_load(lock.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("stages"), dict)


def failure_message(spec: ShardSpec, repro) -> str:
    """One line: how ``dvc repro`` of the shard ended (killed by a signal during a stage, or the
    stages' own one-line errors)."""
    if repro.returncode < 0:
        try:
            sig = signal.Signals(-repro.returncode).name
        except ValueError:
            sig = f"signal {-repro.returncode}"
        where = f" during stage {repro.ran[-1]}" if repro.ran else ""
        cause = {"SIGTERM": " (scancel, a time limit or a node shutdown)",
                 "SIGKILL": " (out of memory, or the end of a time limit's grace period)",
                 "SIGUSR2": " (preempted)"}.get(sig, "")
        return f"shard {spec.shard}: dvc repro killed by {sig}{where}{cause}"
    errors = [m.group(1).strip() for m in STAGE_ERROR.finditer(repro.output)]
    return (f"shard {spec.shard}: dvc repro exited {repro.returncode}: "
            + (" | ".join(errors) if errors else repro.output[-2000:]))


def platform_records(checkout: Path) -> dict[str, str]:
    """The platform records the stages of this checkout wrote (``metrics/platform/<stage>.json``,
    kmx_eval/paths.py), by file name. They are not DVC outputs, so the run cache does not carry
    them: the job returns them in its result and ``collect`` writes them into the workspace, so
    that the report names where the numbers were made as a serial run's does."""
    folder = checkout / paths.platform_record("train", "x").parent
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


class ShardJob(submitit.helpers.Checkpointable):
    """``ShardJob()(spec)``: check out, ``dvc repro --pull --keep-going`` the shard's stages, push.

    Returns a dict with the stages it ran and restored (pickled by submitit as the job's result).
    Raises :class:`ShardFailed` when a stage failed, after pushing what did succeed.
    """

    def __call__(self, spec: ShardSpec) -> dict:
        start = time.time()
        checkout = make_checkout(spec)
        env = environment(checkout)
        print(f"kmx-eval: shard {spec.shard} at commit {spec.commit[:12]} in {checkout}", flush=True)
        print(f"kmx-eval: python {sys.executable}, remote {spec.remote_name} = {spec.remote_url}", flush=True)
        # --pull: stages another job (or an earlier run of this one) pushed are restored, not run.
        # --keep-going: a failing stage does not stop the independent ones; they are pushed below.
        repro = dvc(["repro", "--pull", "--keep-going", *spec.targets], checkout, env)
        records, objects = push_run_cache(checkout)
        print(f"kmx-eval: pushed {records} run-cache records and {objects} objects to {spec.remote_name}",
              flush=True)
        if repro.returncode != 0:
            raise ShardFailed(failure_message(spec, repro))
        return {"shard": spec.shard, "ran": repro.ran, "restored": repro.restored, "checkout": str(checkout),
                "seconds": round(time.time() - start, 1), "platform": platform_records(checkout)}
