"""What every benchmark script shares: interleaved timing, paired ratios, the result table, ``--json``.

The benchmarks run on shared, noisy machines, so none of them trusts an absolute time. Each one
measures the variants it compares *in the same run*, round-robin (round r starts with variant
``r mod k``, so that no variant always runs first, right after a warm-up or a slow neighbour), repeats
the rounds, and reports

    ratio = median_r ( t_reference(r) / t_variant(r) )          (throughput ratio, paired by round)

or the inverse for costs, beside absolute medians for context. A paired median is robust to a
neighbour that slows the machine for a few seconds: both variants of a round see the same load.
Each check has a target; a script prints PASS or MISS per check and exits 0 either way (a benchmark
reports, it does not gate), unless ``--strict`` is given.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]

#: The operators a target can use: the ratio must be >= or <= the bound.
OPS = {">=": lambda r, b: r >= b, "<=": lambda r, b: r <= b, "<": lambda r, b: r < b}


class TensorImages:
    """A map-style dataset of ``(x (3, H, W), label, index)`` items over fixed tensors (no decoding),
    the item format of ``kmx_eval.data.ImageDataset``."""

    def __init__(self, x, labels):
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i]), i


@dataclass
class Check:
    """One measured ratio and its target.

    Attributes
    ----------
    what : str
        What was measured, in words (``"B1..B4 taps vs model(x), 224 px"``).
    ratio : float
        The measured ratio (or, for an absolute target such as a wall time, the value itself).
    op, bound : str, float or None
        The target ``ratio op bound`` (``">=", 0.9``); ``None`` for an informational row.
    unit : str
        ``"x"`` for ratios, ``"s"``, ``"h"`` or ``"MiB"`` for absolute values.
    detail : str
        The absolute figures behind the ratio (medians, counts), for the reader.
    """

    what: str
    ratio: float
    op: str | None = None
    bound: float | None = None
    unit: str = "x"
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return "-" if self.op is None else f"{self.op} {self.bound:g}{'' if self.unit == 'x' else ' ' + self.unit}"

    @property
    def status(self) -> str:
        if self.op is None:
            return "info"
        if self.ratio is None or not math.isfinite(self.ratio):
            return "MISS"
        return "PASS" if OPS[self.op](self.ratio, self.bound) else "MISS"

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "ratio": self.ratio, "unit": self.unit, "target": self.target,
                "op": self.op, "bound": self.bound, "status": self.status, "detail": self.detail,
                **({"data": self.data} if self.data else {})}


def parser(description: str, threads: int | None = 1) -> argparse.ArgumentParser:
    """The options every benchmark has: ``--quick``, ``--json PATH``, ``--repeats``, ``--threads``, ``--strict``.

    ``threads`` is the default of ``--threads``: 1 for the ratio benchmarks, because on a shared
    machine a multi-threaded operator waits for its slowest thread and one descheduled thread
    turns a 10 ms forward into 1 s (measured here: single-threaded samples vary by a few percent,
    two-threaded ones by 10x). Ratios of equal work barely depend on the thread count.
    """
    p = argparse.ArgumentParser(description=description.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(description.strip().splitlines()[1:]))
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; used by the smoke test)")
    p.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds per comparison")
    p.add_argument("--threads", type=int, default=threads,
                   help=f"torch intra-op threads (default: {threads or 'torch default, the number of cores'}; "
                        "0 = torch default)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a check misses its target")
    return p


def setup_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads and the BLAS/OpenMP pools (scikit-learn's k-means) to ``threads``.

    ``None`` or 0 keeps the libraries' defaults.
    """
    if threads:
        from kmx_eval.device import pin_threads  # the same pinning as the stages' backbone.threads

        pin_threads(int(threads))


def environment() -> dict[str, Any]:
    """What the numbers depend on: CPU count, threads, versions, and the load when measured."""
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpu_count": os.cpu_count()}
    try:
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not on every platform
        env["load_average"] = None
    if "torch" in sys.modules:
        import torch

        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                   cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    return env


def now() -> float:
    return time.perf_counter()


def interleaved(variants: Mapping[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                sync: Callable[[], None] | None = None, min_time: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call of each variant over ``repeats`` round-robin rounds, after ``warmup`` rounds.

    Round ``r`` runs the variants starting with the one at position ``r mod k``. A sample of a
    variant is ``n_v`` back-to-back calls divided by ``n_v``, with ``n_v = ceil(min_time / t_v)``
    calibrated on the last warm-up call (``t_v``): on a loaded machine a call of a few
    milliseconds is dominated by the scheduler, a sample of ``min_time`` seconds is not. ``sync``
    (e.g. ``torch.cuda.synchronize``) is called before each clock read, so asynchronous work counts.

    Returns
    -------
    dict of name -> list of ``repeats`` seconds per call, in round order (so that ``times[a][r]``
    and ``times[b][r]`` are paired).
    """
    names = list(variants)
    sync = sync or (lambda: None)
    inner = {n: 1 for n in names}
    for w in range(max(1, warmup)):
        for name in names:
            sync()
            t0 = now()
            variants[name]()
            sync()
            elapsed = now() - t0
            if w == max(1, warmup) - 1 and min_time > 0:
                inner[name] = max(1, math.ceil(min_time / max(elapsed, 1e-6)))
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            sync()
            t0 = now()
            for _ in range(inner[name]):
                variants[name]()
            sync()
            times[name].append((now() - t0) / inner[name])
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if len(values) else float("nan")


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """``median_r numerator[r] / denominator[r]`` (rounds paired, see the module docstring)."""
    return median([a / b for a, b in zip(numerator, denominator) if b > 0])


def spread(values: Sequence[float]) -> str:
    """``median [min-max]`` of a list of seconds, for the detail column."""
    return f"{median(values):.3g} s [{min(values):.3g}-{max(values):.3g}]"


def print_table(title: str, checks: Sequence[Check], notes: Sequence[str] = ()) -> None:
    """Print the checks as a fixed-width table: what | ratio | target | status, then details."""
    rows = [(c.what, _fmt(c.ratio, c.unit), c.target, c.status) for c in checks]
    head = ("measured", "ratio", "target", "status")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print(line)
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    print(line)
    for c in checks:
        if c.detail:
            print(f"  {c.what}: {c.detail}")
    for n in notes:
        print(f"  note: {n}")
    sys.stdout.flush()


def _fmt(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return text + ("x" if unit == "x" else f" {unit}")


def finish(args: argparse.Namespace, name: str, checks: Sequence[Check], settings: Mapping[str, Any],
           extra: Mapping[str, Any] | None = None, env_before: Mapping[str, Any] | None = None) -> int:
    """Write ``--json`` (through :func:`kmx_eval.io.write_json`, atomic) and return the exit status."""
    env = environment()
    if env_before is not None:
        env["load_average_before"] = env_before.get("load_average")
    if args.json:
        from kmx_eval import io

        io.write_json(args.json, {"benchmark": name, "quick": bool(args.quick), "settings": dict(settings),
                                  "environment": env, "checks": [c.as_dict() for c in checks],
                                  **(dict(extra) if extra else {})})
        print(f"\nresults written to {args.json}")
    load = env.get("load_average")
    if load is not None and env.get("cpu_count") and load[0] > env["cpu_count"]:
        print(f"note: load average {load[0]:.1f} on {env['cpu_count']} cores while measuring: "
              f"other work shared the CPU, so absolute figures are noisy (ratios are paired by round)")
    missed = [c for c in checks if c.status == "MISS"]
    return 1 if (args.strict and missed) else 0
