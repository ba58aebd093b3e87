"""The state of each shard's latest job, read from submitit's own folder and from SLURM.

submitit writes, per job, ``<job id>_submitted.pkl`` (the function and its arguments: here the
:class:`~kmx_eval.launch.job.ShardSpec`, which names the shard), ``<job id>_<task>_log.out`` /
``.err`` and, when the function returned or raised, ``<job id>_<task>_result.pkl``. A local job's
id is its controller's process id. A SLURM job's state comes from ``sacct`` (accounting) and, for
the reason a job is pending and on clusters without accounting, from ``squeue``
(:func:`slurm_states`): a job that ``squeue`` lists is never resubmitted. Nothing else is recorded.

Each status names the job's state and its cause in one line (:meth:`JobStatus.describe`): killed
by SIGTERM, time limit, preempted, dependency failed, or the stage's own error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import submitit
from submitit.core.utils import DelayedSubmission

#: SLURM states of a job that may still produce a result (not to be resubmitted).
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
#: Reasons (squeue) why a PENDING job can never start: it counts as failed.
NEVER_SATISFIED = {"DependencyNeverSatisfied"}
#: The cause of a SLURM end state without a result pickle, as the user reads it.
CAUSES = {"CANCELLED": "cancelled (scancel: killed by SIGTERM) before it wrote a result",
          "TIMEOUT": "killed at its time limit (--time) and not requeued",
          "PREEMPTED": "preempted and not requeued",
          "OUT_OF_MEMORY": "killed for using more memory than it asked for (--mem-gb)",
          "NODE_FAIL": "its node failed",
          "BOOT_FAIL": "its node failed to boot",
          "DEADLINE": "killed at its deadline",
          "FAILED": "failed before it wrote a result (see the log)"}
#: The state of a local job whose controller process still runs (submitit cannot tell it from
#: another process than the one that started the job).
LOCAL_ALIVE = "RUNNING (pid alive)"
NO_ACCOUNTING = ("this SLURM cluster has no job accounting (sacct: {error}): job states come from squeue "
                 "and the jobs' result files; a finished job without a result counts as failed")


@dataclass(frozen=True)
class SlurmState:
    """A SLURM job as ``sacct`` and ``squeue`` see it: state (``RUNNING``, ``CANCELLED by 0``...,
    ``UNKNOWN`` when neither knows the job) and ``squeue``'s reason while it is queued."""

    state: str = "UNKNOWN"
    reason: str = ""


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def slurm_states(job_ids: Iterable[str]) -> dict[str, SlurmState]:
    """The state of each of ``job_ids`` (``1234`` or array elements ``1234_0``).

    ``sacct`` gives the states of finished and running jobs; ``squeue`` those of queued and running
    ones, with the reason a job is pending. Where ``sacct`` fails (no accounting storage) this
    prints one line saying so and relies on ``squeue`` alone: a job it lists is active; one it does
    not list has ended (its result pickle, read by :func:`job_status`, says how).
    """
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    states: dict[str, SlurmState] = {}
    mains = sorted({i.split("_")[0] for i in ids})
    sacct = _run(["sacct", "-X", "-o", "JobID,State", "--parsable2", *(f"-j{m}" for m in mains)])
    if sacct is not None and sacct.returncode == 0:
        info = submitit.SlurmJob.watcher.read_info(sacct.stdout)  # expands array ranges (1234_[0-3])
        states.update({i: SlurmState(info[i]["State"]) for i in ids if i in info})
    else:
        error = (sacct.stderr.strip().splitlines() or ["not found"])[-1] if sacct is not None else "not found"
        print("kmx-eval: " + NO_ACCOUNTING.format(error=error), file=sys.stderr)
    squeue = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r"])  # every queued job, arrays one per line
    for line in (squeue.stdout.splitlines() if squeue is not None and squeue.returncode == 0 else []):
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        if job_id in ids:
            states[job_id] = SlurmState(state.strip(), reason.strip())
    return {i: states.get(i, SlurmState()) for i in ids}


@dataclass
class JobStatus:
    """One submitted job, as submitit and SLURM see it.

    Attributes
    ----------
    shard, job_id, executor : str
    state : str
        SLURM's state (``COMPLETED``, ``FAILED``, ``TIMEOUT``...) or the local executor's
        (``FINISHED``, ``RUNNING (pid alive)``, ``NO PROCESS AND NO RESULT``).
    outcome : {"success", "failed", "active", "no result"}
        From the result pickle when there is one, else from the state.
    message : str
        Why it did not succeed, in one line: the job's error, or the cause of its state.
    stdout, stderr : Path
        The job's log files.
    spec : ShardSpec
    """

    shard: str
    job_id: str
    executor: str
    state: str
    outcome: str
    message: str
    stdout: Path
    stderr: Path
    spec: object

    @property
    def needs_resubmission(self) -> bool:
        return self.outcome not in ("success", "active")

    def describe(self) -> str:
        what = {"success": "succeeded", "failed": "failed", "active": "is still queued or running",
                "no result": "ended without a result"}[self.outcome]
        text = f"job {self.job_id} ({self.executor}, {self.state}) {what}"
        if self.message:
            text += f": {self.message}"
        return f"{text}; log: {self.stderr} (and {self.stdout.name})"


def _pid_alive(job_id: str) -> bool:
    try:
        os.kill(int(job_id), 0)
    except (ValueError, ProcessLookupError, PermissionError, OSError):
        return False
    cmdline = Path(f"/proc/{job_id}/cmdline")
    return not cmdline.exists() or b"submitit" in cmdline.read_bytes()


def _last_error(text: str) -> str:
    """The exception line of the traceback inside submitit's FailedJobError message."""
    trace = text.split("-" * 22)
    lines = [ln.strip() for ln in (trace[1] if len(trace) >= 3 else text).splitlines() if ln.strip()]
    for line in reversed(lines):
        if "ShardFailed: " in line:
            return line.split("ShardFailed: ", 1)[1]
    return lines[-1] if lines else ""


def _without_result(job, slurm: SlurmState | None) -> tuple[str, str, str]:
    """``(state, outcome, message)`` of a job that has no result pickle (yet)."""
    if isinstance(job, submitit.LocalJob):
        if _pid_alive(job.job_id):
            return LOCAL_ALIVE, "active", ""
        return job.state, "no result", "its process ended without a result (killed?)"
    slurm = slurm or SlurmState()
    word = slurm.state.split()[0] if slurm.state else "UNKNOWN"
    if word == "PENDING" and slurm.reason in NEVER_SATISFIED:
        return slurm.state, "failed", f"can never start ({slurm.reason}): dependency failed"
    if word in ACTIVE:
        return slurm.state, "active", ""
    cause = CAUSES.get(word, "not in squeue, and sacct does not know it (killed, timed out or cancelled?)"
                       if word == "UNKNOWN" else "")
    return slurm.state, "no result", cause


def job_status(folder: Path, job_id: str, spec, *, slurm: SlurmState | None = None) -> JobStatus:
    """The state of one job rebuilt from submitit's ``folder`` (and ``slurm``, its SLURM state;
    asked for when None)."""
    job_class = submitit.SlurmJob if spec.executor == "slurm" else submitit.LocalJob
    job = job_class(folder=folder, job_id=job_id)
    if spec.executor == "slurm" and slurm is None:
        slurm = slurm_states([job_id])[job_id]
    if job.paths.result_pickle.exists():
        exc = job.exception()  # the result exists: returns at once
        outcome, message = ("success", "") if exc is None else ("failed", _last_error(str(exc)))
        state = "FINISHED" if spec.executor == "local" else slurm.state
    else:
        state, outcome, message = _without_result(job, slurm)
    return JobStatus(spec.shard, job_id, spec.executor, state, outcome, message, job.paths.stdout,
                     job.paths.stderr, spec)


def submitted(folder: str | Path) -> dict[str, object]:
    """Every job submitted from ``folder``: its id and its :class:`ShardSpec`."""
    folder = Path(folder)
    found: dict[str, object] = {}
    for pickle in sorted(folder.glob("*_submitted.pkl")) if folder.is_dir() else []:
        try:
            spec = DelayedSubmission.load(pickle).args[0]
        except Exception:  # noqa: BLE001 - a pickle of another tool or version: not ours
            continue
        if hasattr(spec, "shard"):
            found[pickle.name[: -len("_submitted.pkl")]] = spec
    return found


def latest_jobs(folder: str | Path, *, by: str | None = None) -> dict[str, JobStatus]:
    """For each shard, the status of the job submitted last (by its launch time) from ``folder``;
    only jobs launched ``--by by`` when given.

    A combination shard whose job ended without a result while the job it depended on did not
    succeed is described as "dependency failed: shard X did not succeed".
    """
    folder = Path(folder)
    specs = submitted(folder)
    latest: dict[str, str] = {}
    for job_id, spec in specs.items():
        if by is not None and getattr(spec, "by", by) != by:
            continue
        if spec.shard not in latest or spec.launched_at > specs[latest[spec.shard]].launched_at:
            latest[spec.shard] = job_id
    deps = {getattr(specs[j], "after_job", None) for j in latest.values()} - {None}
    wanted = set(latest.values()) | {d for d in deps if d in specs}
    slurm = slurm_states(j for j in wanted if specs[j].executor == "slurm")
    statuses = {j: job_status(folder, j, specs[j], slurm=slurm.get(j)) for j in wanted}
    for job_id in latest.values():
        st, dep = statuses[job_id], statuses.get(getattr(specs[job_id], "after_job", None) or "")
        if st.outcome in ("no result", "failed") and dep is not None and dep.outcome != "success":
            st.outcome = "failed"
            st.message = (f"dependency failed: shard {dep.shard} (job {dep.job_id}, {dep.state}) "
                          f"did not succeed, so this job could not start")
    return {statuses[j].shard: statuses[j] for j in latest.values()}
