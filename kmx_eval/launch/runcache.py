"""The DVC operations of a scale-out run: which remote, pushing a job's results, restoring them.

Why not only ``dvc push --run-cache`` / ``dvc repro --pull`` (checked with DVC 3.67.1):

- ``dvc push --run-cache`` pushes the run-cache records (``runs/`` on the remote) and the outputs
  that ``dvc.lock`` tracks in the cache, but not the files of ``cache: false`` outputs (the small
  metrics JSON files), although a run-cache record lists them and DVC's own run cache keeps a copy
  of them. ``dvc repro --pull`` on another clone then warns "Some of the cache files do not exist
  neither locally nor on remote" and *runs the stage again*. :func:`push_run_cache` therefore also
  pushes every object that a pushed record names (DVC's ``stage_cache.get_used_objs`` and
  ``cloud.push``, the functions ``dvc push`` is built on).
- ``dvc repro --pull`` restores a stage from the run cache when it can and otherwise runs it. A
  collect step must never compute a shard's stage (a failed shard would then run on the
  coordinating machine), so :func:`restore` restores a shard's stages one by one through DVC's
  ``stage_cache.restore(stage, pull=True)`` (what ``dvc repro --pull`` calls before it would run
  a stage) and stops at the first stage that has no record; nothing is run.
- ``--run-cache`` is not the default of ``dvc push`` / ``dvc pull`` in 3.67 (3.51 made it the
  default in treeverse/dvc#10433, treeverse/dvc#10494 reverted it): here the run cache is
  pushed and fetched explicitly.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from kmx_eval.errors import KmxError

RUNNING = re.compile(r"Running stage '([^']+)'")
CACHED = re.compile(r"Stage '([^']+)' is cached - skipping run")


class RemoteError(KmxError):
    """No usable DVC remote."""


def bin_dir() -> Path:
    """The folder of this Python's ``python`` and ``dvc`` (the stages of dvc.yaml call ``python``)."""
    return Path(sys.executable).parent


def environment(checkout: str | Path, base: dict | None = None) -> dict[str, str]:
    """The environment of ``dvc`` in ``checkout``.

    ``PATH`` starts with this interpreter's folder, so that the stage commands' ``python`` is the
    one with the suite's dependencies; ``PYTHONPATH`` starts with the checkout, so that the stages
    import the checkout's ``kmx_eval`` (the code of the commit that DVC hashed), not an installed
    copy; ``PYTHONHASHSEED`` is fixed as in the Makefile; DVC's analytics stay off.
    """
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONHASHSEED", "0")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


@dataclass
class DvcRun:
    """What one ``dvc`` command did: exit status, stages it ran, stages it restored, its output."""

    returncode: int
    ran: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    output: str = ""


def dvc(args: Sequence[str], cwd: str | Path, env: dict[str, str] | None = None, echo: bool = True) -> DvcRun:
    """Run ``dvc ARGS`` in ``cwd``, echo its output line by line (into the job's log), and record
    which stages it ran (``Running stage``) and restored (``is cached - skipping run``)."""
    env = env or environment(cwd)
    # Its own process group: when dvc is killed (scancel, preemption) before the stage command it
    # started, that command would live on as an orphan, writing into a checkout that the requeued
    # job uses again (seen on SLURM with proctrack/linuxproc). The group is ended with dvc.
    proc = subprocess.Popen([str(bin_dir() / "dvc"), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    lines, result = [], DvcRun(returncode=0)
    assert proc.stdout is not None
    # An orphan keeps the output pipe open: end the group as soon as dvc has exited.
    threading.Thread(target=lambda: (proc.wait(), _signal_group(proc.pid, signal.SIGKILL)), daemon=True).start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()
            if m := RUNNING.search(line):
                result.ran.append(m.group(1))
            if m := CACHED.search(line):
                result.restored.append(m.group(1))
    except BaseException:  # this job interrupted (submitit exits on a preemption signal): end dvc
        _signal_group(proc.pid, signal.SIGTERM)
        raise
    finally:
        result.returncode = proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # stage commands that outlived dvc
    result.output = "".join(lines)
    return result


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def default_remote(root: str | Path) -> tuple[str, str]:
    """``(name, url)`` of the default DVC remote of ``root``, its relative paths made absolute.

    Raises
    ------
    RemoteError
        When no default remote is configured (every job must push to it).
    """
    # here: DVC takes seconds to import; only the commands that use it pay for it
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        config = repo.config
        name = config["core"].get("remote")
        if not name:
            raise RemoteError(
                "no default DVC remote: jobs share their results through one. Add one and commit it, e.g. "
                "`dvc remote add -d shared /shared/path/dvc-remote && git commit .dvc/config -m remote`")
        try:
            url = config["remote"][name]["url"]
        except KeyError:
            raise RemoteError(f"the default DVC remote {name!r} is not defined in .dvc/config") from None
    return name, str(url)


def is_local_url(url: str) -> bool:
    return "://" not in url


def push_run_cache(root: str | Path) -> tuple[int, int]:
    """Push the run-cache records of ``root`` and every object they name to the default remote.

    Returns ``(records, objects)`` transferred. See the module docstring for why ``dvc push
    --run-cache`` alone is not enough.
    """
    # here: DVC takes seconds to import; only the commands that use it pay for it
    from dvc.repo import Repo

    # DVC resolves the paths of run-cache records against the working directory: be in the repo.
    with contextlib.chdir(root), Repo(str(root)) as repo, repo.lock:
        records = repo.stage_cache.push(None)
        objects = 0
        for odb, objs in repo.stage_cache.get_used_objs(records).items():
            result = repo.cloud.push(objs, odb=odb)
            if result.failed:
                raise RemoteError(f"could not push {len(result.failed)} objects of the run cache to the remote")
            objects += len(result.transferred)
    return len(records), objects


def fetch_run_cache(root: str | Path) -> int:
    """Download the run-cache records of the default remote (``dvc fetch --run-cache`` without
    the outputs of ``dvc.lock``). Returns the number of records transferred."""
    # here: DVC takes seconds to import; only the commands that use it pay for it
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo, repo.lock:
        return len(repo.stage_cache.pull(None))


def restore(root: str | Path, stages: Sequence[str]) -> tuple[list[str], str | None]:
    """Restore ``stages`` (upstream first) from the run cache, pulling their outputs; run nothing.

    Returns
    -------
    restored : list of str
        The stages restored (or already up to date in the workspace), in order.
    missing : str or None
        The first stage that could not be restored (no run-cache record for its current
        dependencies and params, or its outputs are not on the remote); the later stages of
        ``stages`` are not tried. None when all were restored.
    """
    # here: DVC takes seconds to import; only the commands that use it pay for it
    from dvc.exceptions import ConfirmRemoveError, DvcException
    from dvc.repo import Repo
    from dvc.stage.cache import RunCacheNotFoundError

    restored: list[str] = []
    with contextlib.chdir(root), Repo(str(root)) as repo, repo.lock:
        for name in stages:
            try:
                (stage,) = repo.stage.collect(name)
                try:
                    repo.stage_cache.restore(stage, pull=True)
                except ConfirmRemoveError:
                    # The record and its objects were found, but the workspace holds other bytes at
                    # an output path (a metrics file another study committed: a profile run in a clone
                    # of the default's repository). `dvc repro` would replace them by running the stage;
                    # the stage's own result replaces them here.
                    # (collected again: the removed outputs' state is read anew, else the second
                    # checkout still sees the old files and refuses again)
                    stage.remove_outs(force=True)
                    (stage,) = repo.stage.collect(name)
                    repo.stage_cache.restore(stage, pull=True)
            except (RunCacheNotFoundError, DvcException):
                return restored, name
            restored.append(name)
    return restored, None
