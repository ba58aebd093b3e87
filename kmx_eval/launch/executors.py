"""The submitit executors a launch submits through, and the job parameters it gives them.

``slurm``: one ``sbatch`` job array per submission round (submitit's ``AutoExecutor`` with
``cluster="slurm"``; the array's ``%N`` limit is ``--array-parallelism``). ``local``: one process per
job on this machine (submitit's ``LocalExecutor``, the same interface), for a workstation with
several GPUs and for tests; it starts every submitted job at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

EXECUTORS = ("slurm", "local")


@dataclass(frozen=True)
class Resources:
    """What each job asks for. ``None`` leaves the cluster's default.

    Attributes
    ----------
    time_min : int
        Wall-time limit of one job, minutes (submitit requeues a Checkpointable job that reaches it,
        up to 3 times).
    gpus_per_job, cpus_per_job : int
    mem_gb : float or None
    partition, account, qos, constraint : str or None
        SLURM only.
    array_parallelism : int or None
        SLURM only: how many jobs of one array run at the same time.
    setup : list of str
        Shell lines run before the job in the sbatch script (``module load ...``).
    visible_gpus : tuple of int
        Local only: the GPUs to hand out; job ``i`` gets ``gpus_per_job`` of them, starting at
        ``i * gpus_per_job`` (wrapping around).
    """

    time_min: int = 24 * 60
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    mem_gb: float | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = None
    setup: tuple[str, ...] = field(default_factory=tuple)
    visible_gpus: tuple[int, ...] = field(default_factory=tuple)


def parameters(kind: str, res: Resources, *, name: str = "kmx-eval", dependency: str | None = None,
               job_index: int = 0) -> dict[str, Any]:
    """The keyword arguments of ``AutoExecutor.update_parameters`` for ``kind`` (slurm or local).

    Generic submitit names (``timeout_min``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``)
    apply to both executors; ``slurm_*`` ones only to SLURM, ``local_*`` ones only to local.
    """
    if kind not in EXECUTORS:
        raise ValueError(f"executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    p: dict[str, Any] = {"name": name, "timeout_min": int(res.time_min), "nodes": 1, "tasks_per_node": 1}
    if res.gpus_per_job:  # no --gpus-per-node=0: a cluster without GPUs (gres) may refuse it
        p["gpus_per_node"] = int(res.gpus_per_job)
    if res.cpus_per_job is not None:
        p["cpus_per_task"] = int(res.cpus_per_job)
    if res.mem_gb is not None:
        p["mem_gb"] = res.mem_gb
    if kind == "slurm":
        for key in ("partition", "account", "qos", "constraint", "array_parallelism"):
            value = getattr(res, key)
            if value is not None:
                p[f"slurm_{key}"] = value
        if res.setup:
            p["slurm_setup"] = list(res.setup)
        if dependency:
            p["slurm_dependency"] = dependency
            # Without it a job whose dependency failed stays PENDING (DependencyNeverSatisfied) forever.
            p["slurm_additional_parameters"] = {"kill-on-invalid-dep": "yes"}
    else:
        if res.setup:
            p["local_setup"] = list(res.setup)
        if res.visible_gpus and res.gpus_per_job:
            n = len(res.visible_gpus)
            start = (job_index * res.gpus_per_job) % n
            p["local_visible_gpus"] = tuple(res.visible_gpus[(start + k) % n] for k in range(n))
    return p


def executor(kind: str, folder: str | Path, res: Resources, **kw: Any) -> submitit.AutoExecutor:
    """A submitit executor writing its pickles and logs to ``folder`` (flat: ``<job id>_*``)."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    ex = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    ex.update_parameters(**parameters(kind, res, **kw))
    return ex
