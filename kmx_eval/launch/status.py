"""The state of each shard's latest job, read from submitit's own folder.

submitit writes, per job, ``<job id>_submitted.pkl`` (the function and its arguments: here the
:class:`~kmx_eval.launch.job.ShardSpec`, which names the shard), ``<job id>_<task>_log.out`` /
``.err`` and, when the function returned or raised, ``<job id>_<task>_result.pkl``. The job object
is rebuilt from the folder and the id (``submitit.SlurmJob`` asks SLURM's ``sacct`` for its state;
for ``submitit.LocalJob`` the id is the controller's process id). Nothing else is recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import submitit
from submitit.core.utils import DelayedSubmission

#: SLURM states of a job that may still produce a result (not to be resubmitted).
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
#: The state of a local job whose controller process still runs (submitit cannot tell it from
#: another process than the one that started the job).
LOCAL_ALIVE = "RUNNING (pid alive)"


@dataclass
class JobStatus:
    """One submitted job, as submitit sees it.

    Attributes
    ----------
    shard, job_id, executor : str
    state : str
        submitit's state: SLURM's (``COMPLETED``, ``FAILED``, ``TIMEOUT``...) or the local
        executor's (``FINISHED``, ``RUNNING (pid alive)``, ``NO PROCESS AND NO RESULT``).
    outcome : {"success", "failed", "active", "no result"}
        From the result pickle when there is one, else from the state.
    message : str
        The last line of the job's error, when it failed.
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
                "no result": "ended without a result (killed, timed out or cancelled?)"}[self.outcome]
        text = f"job {self.job_id} ({self.executor}, state {self.state}) {what}"
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


def job_status(folder: Path, job_id: str, spec) -> JobStatus:
    """The state of one job rebuilt from submitit's ``folder``."""
    job_class = submitit.SlurmJob if spec.executor == "slurm" else submitit.LocalJob
    job = job_class(folder=folder, job_id=job_id)
    message = ""
    if job.paths.result_pickle.exists():
        exc = job.exception()  # the result exists: returns at once
        outcome = "success" if exc is None else "failed"
        if exc is not None:
            message = _last_error(str(exc))
        state = "FINISHED" if spec.executor == "local" else job.state
    else:
        state = job.state
        if spec.executor == "local" and _pid_alive(job_id):
            state = LOCAL_ALIVE
        word = state.split()[0] if state else ""
        active = state == LOCAL_ALIVE or (spec.executor == "slurm" and word in ACTIVE)
        outcome = "active" if active else "no result"
    return JobStatus(spec.shard, job_id, spec.executor, state, outcome, message, job.paths.stdout,
                     job.paths.stderr, spec)


def latest_jobs(folder: str | Path) -> dict[str, JobStatus]:
    """For each shard, the status of the job submitted last (by its launch time) from ``folder``."""
    folder = Path(folder)
    found: dict[str, tuple[float, str, object]] = {}
    if not folder.is_dir():
        return {}
    for pickle in folder.glob("*_submitted.pkl"):
        job_id = pickle.name[: -len("_submitted.pkl")]
        try:
            spec = DelayedSubmission.load(pickle).args[0]
        except Exception:  # noqa: BLE001 - a pickle of another tool or version: not ours
            continue
        if not hasattr(spec, "shard"):
            continue
        if spec.shard not in found or spec.launched_at > found[spec.shard][0]:
            found[spec.shard] = (spec.launched_at, job_id, spec)
    return {shard: job_status(folder, job_id, spec) for shard, (_, job_id, spec) in found.items()}
