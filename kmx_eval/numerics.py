"""Which CPU kernels a stage's arithmetic runs on, and the platform record of every stage.

Torch (ATen), oneDNN, MKL, OpenBLAS and numpy each pick their kernels for the CPU at hand when
they load: AVX-512 on one machine, AVX2 on another. The kernels sum in another order, so the same
params and seed give other bytes on another CPU, and training amplifies the first difference into
other weights, accuracies and verdicts (docs/METHOD.md, section 7).

``backbone.numerics`` chooses:

- ``portable``: every library is pinned to AVX2 kernels (:data:`PORTABLE_ENV`), whatever the calling
  shell set: the same params give the same bytes on any x86-64 CPU that has AVX2 (Intel since
  2013, AMD since 2015), with the same library versions and thread count;
- ``native``: each library takes the fastest kernels of this CPU; the settings of
  :data:`PORTABLE_ENV` are removed from the environment, so the calling shell cannot change the
  bytes either. Same machine, same bytes; another CPU, other bytes.

The pins are environment variables that each library reads once, when it loads: they must be set
before numpy or torch is imported. :func:`pin_stage_process`, called by ``kmx_eval/__init__.py``,
does that for a stage process (``python stages/<name>.py``) from the ``--params`` file it was given;
:func:`check_pinned` (called by :func:`kmx_eval.cli.stage` once params are validated) says when
it came too late. This module imports neither numpy nor torch at import time for that reason.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Sequence

from kmx_eval import paths
from kmx_eval.errors import UnavailableError

log = logging.getLogger("kmx_eval")

MODES = ("native", "portable")
DEFAULT_MODE = "portable"

#: The instruction set of the portable mode, as ``torch.backends.cpu.get_cpu_capability()`` names it.
PORTABLE_CAPABILITY = "AVX2"

#: What the portable mode sets, per library. Each library reads its variable once, when it loads.
PORTABLE_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",          # torch's own vectorised kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",           # oneDNN (convolutions, pooling, batch norm on CPU)
    "DNNL_MAX_CPU_ISA": "AVX2",             # the same, its older name
    "MKL_CBWR": "AVX2",                     # MKL's conditional numerical reproducibility (BLAS)
    "OPENBLAS_CORETYPE": "Haswell",         # numpy's and scipy's OpenBLAS (k-means, probe)
    # numpy's own dispatched loops (its AVX-512 exp/log/... give other last bits than AVX2's)
    "NPY_ENABLE_CPU_FEATURES": "SSSE3 SSE41 POPCNT SSE42 AVX F16C FMA3 AVX2",
}

#: ``torch.cdist``'s mode that sums squared differences pair by pair (no BLAS product): the same bits
#: on every run and any thread count, where a multi-threaded product may sum in another order from run
#: to run. Every distance that decides an assignment or a metric uses it (concept ids, prototype fidelity).
EXACT_CDIST = "donot_use_mm_for_euclid_dist"

#: Libraries whose kernels are chosen when they load: pinning after this is too late.
_PINNED_AT_LOAD = ("numpy", "torch", "scipy", "sklearn")

#: Set by :func:`pin` so a process (and its children) can tell which mode pinned it.
MODE_VARIABLE = "KMX_NUMERICS"


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none: not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def require_avx2() -> None:
    """Raise :class:`UnavailableError` where the CPU has no AVX2 (the portable mode's kernels)."""
    flags = cpu_flags()
    if flags and "avx2" not in flags:
        raise UnavailableError("backbone.numerics is 'portable' (AVX2 kernels) but this CPU has no "
                               "AVX2; use numerics: native (its bytes are then this CPU's own)")


def pin(mode: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Set (portable) or clear (native) the kernel pins of :data:`PORTABLE_ENV` in ``environ``.

    Overrides what the calling shell set. Takes effect for libraries loaded afterwards, in this
    process and its children; raises :class:`UnavailableError` where the CPU has no AVX2.
    """
    env = os.environ if environ is None else environ
    if mode not in MODES:
        raise UnavailableError(f"backbone.numerics {mode!r} is not one of {', '.join(MODES)}")
    if mode == "portable":
        require_avx2()
        env.update(PORTABLE_ENV)
    else:
        for name in PORTABLE_ENV:
            env.pop(name, None)
    env[MODE_VARIABLE] = mode


def too_late() -> list[str]:
    """The libraries of :data:`_PINNED_AT_LOAD` already loaded in this process."""
    return [name for name in _PINNED_AT_LOAD if name in sys.modules]


def params_file(argv: Sequence[str]) -> Path:
    """The ``--params`` file of a stage's command line (default ``params.yaml``), as argparse reads it."""
    for i, arg in enumerate(argv):
        if arg == "--params" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--params="):
            return Path(arg.partition("=")[2])
    return Path("params.yaml")


def requested_mode(path: str | Path) -> str:
    """``backbone.numerics`` of a params file, read before validation (:data:`DEFAULT_MODE` where
    absent). A file or value that is wrong gives the default here: validation, which comes next,
    names the problem in one line."""
    import yaml  # here, not at the top: kmx_eval/__init__.py imports this module in every process

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        mode = raw["backbone"]["numerics"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return DEFAULT_MODE
    return mode if mode in MODES else DEFAULT_MODE


def is_stage_process(argv: Sequence[str]) -> bool:
    """Whether this process runs a stage script, ``python stages/<name>.py`` (dvc.yaml's commands)."""
    script = Path(argv[0]) if argv and argv[0] else None
    return script is not None and script.suffix == ".py" and script.parent.name == "stages"


def pin_stage_process(argv: Sequence[str] | None = None) -> str | None:
    """Pin this process's kernels as its params file says, if it is a stage process and nothing
    numeric is loaded yet; return the mode pinned (None: not a stage process, or too late)."""
    argv = sys.argv if argv is None else argv
    if not is_stage_process(argv) or too_late():
        return None
    mode = requested_mode(params_file(argv))
    try:
        pin(mode)
    except UnavailableError:
        return None  # check_pinned raises it again, as the stage's one-line error
    return mode


def check_pinned(mode: str) -> None:
    """Make sure this process runs ``mode``'s kernels; pin now if numpy and torch are not loaded.

    A stage run inside another process whose libraries were already loaded (a test calling a
    stage's ``main``) runs on that process's kernels, silently: its platform record shows the
    instruction set used. In a stage process that is a bug, and a warning says so.
    """
    if mode == "portable":
        require_avx2()  # the stage's one-line error where pin_stage_process could not pin
    if os.environ.get(MODE_VARIABLE) == mode:
        return
    if not too_late():
        pin(mode)
        return
    if not is_stage_process(sys.argv):
        return
    log.warning("numerics %s requested, but %s loaded before the kernels could be pinned; this run "
                "uses the kernels of the process it runs in (see its platform record)",
                mode, ", ".join(too_late()))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; :func:`platform.processor` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform  # here: only where /proc/cpuinfo is missing

    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    """torch, MKL, oneDNN, numpy and OpenBLAS versions of this process, as they report them."""
    # Here, not at the top: kmx_eval/__init__.py imports this module before the kernels are pinned.
    import numpy as np
    import torch
    from threadpoolctl import threadpool_info

    config = torch.__config__.show()
    mkl = next((line.split("Version")[1].split("-")[0].strip() for line in config.splitlines()
                if "Math Kernel Library" in line), "none")
    onednn = re.search(r"(?:MKL-DNN|oneDNN) v?([0-9][0-9.]*)", config)
    blas = sorted({f"{i['internal_api']} {i['version']} ({i.get('architecture')})"
                   for i in threadpool_info() if i["user_api"] == "blas" and i["internal_api"] != "mkl"})
    return {"torch": torch.__version__, "mkl": mkl, "onednn": onednn.group(1) if onednn else "none", "numpy": np.__version__,
            "openblas": "; ".join(blas) or "none"}


def platform_record(*, mode: str, device: Any, threads: int | None) -> dict[str, Any]:
    """Where a stage's numbers were made: CPU, dispatched instruction set, library versions, threads,
    device and numerics mode.

    Nothing in it changes from run to run on one machine (no time, host name or process id), so
    two runs on the same machine write the same bytes (docs/ARCHITECTURE.md, "Numerics and platform records").
    """
    import torch  # here: this module is imported before torch loads (see the module docstring)

    dev = str(device)
    if getattr(device, "type", dev) == "cuda":
        dev = f"cuda ({torch.cuda.get_device_name(0)})"
    return {"numerics": mode, "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": int(threads) if threads is not None else torch.get_num_threads(),
            "device": dev, **library_versions()}


def describe(record: Mapping[str, Any]) -> str:
    """One line for a report header: ``AMD EPYC, AVX2 kernels (portable), 2 threads, cpu, torch 2.14.1``."""
    return (f"{record.get('cpu', '?')}, {record.get('cpu_capability', '?')} kernels "
            f"({record.get('numerics', '?')} numerics), {record.get('threads', '?')} threads, "
            f"{record.get('device', '?')}, torch {record.get('torch', '?')}, MKL {record.get('mkl', '?')}, "
            f"oneDNN {record.get('onednn', '?')}")


def read_records(root: str | Path = ".") -> dict[str, dict[str, Any]]:
    """The platform records of the study in ``root``, by name (``train@shapes``..., ``report``):
    what :func:`kmx_eval.cli.write_platform_record` wrote (kmx_eval/paths.py, ``platform_record``)."""
    import json  # here: only the report and the digests read records

    root = Path(root)
    folder = root / paths.platform_record("train", "x").parent
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if (root / paths.platform_record("report")).is_file():
        files.append(root / paths.platform_record("report"))
    return {("report" if p.name == "platform.json" else p.stem): json.loads(p.read_text(encoding="utf-8"))
            for p in files}


def summarise(records: Mapping[str, Mapping[str, Any]]) -> str:
    """One line for the report header and summary.md: :func:`describe` of the records' platform,
    or each distinct platform with the stage runs it made where they differ ("" without records)."""
    groups: dict[str, list[str]] = {}
    for name, record in sorted(records.items()):
        groups.setdefault(describe(record), []).append(name)
    if len(groups) <= 1:
        return next(iter(groups), "")
    return "; ".join(f"{line} ({', '.join(names)})" for line, names in groups.items())
