"""Digests of a finished study, and the one line that says how a rerun compares with them.

``make digests`` writes ``digests.json`` beside ``params.yaml``: the SHA-256 of every output file
of the study (:data:`OUTPUT_FOLDERS`, :data:`OUTPUT_FILES`), its headline numbers with their
intervals (every key ``K`` of ``reports/metrics.json`` that has ``K_low`` and ``K_high``), the
platform records of its stages (kmx_eval/numerics.py) and the SHA-256 of ``params.yaml``.
It is committed with the default study. ``make repro`` ends with :func:`compare`: one line that says
whether the rerun is identical to the committed study, or which outputs differ and whether each
headline number stays inside its committed interval, naming what differs in the platform.

Left out of the digests: the platform records themselves (they name the CPU; :func:`compare` reports
them separately), and the report's renderings (``index.html``, ``summary.md``, figures), which are
drawn from the digested ``reports/metrics.json`` and ``reports/tables`` and whose header names the
platform: a portable run on another CPU is then identical in every digested file.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmx_eval import io, numerics, paths
from kmx_eval.errors import KmxError

DIGESTS = Path("digests.json")
OUTPUT_FOLDERS = ("data", "models", "features", "heads", "maps", "metrics", "reports/tables")
OUTPUT_FILES = ("reports/metrics.json",)
PLATFORM_FOLDER = paths.platform_record("train", "x").parent
HEADLINES = Path("reports") / "metrics.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def output_digests(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every output file of the study in ``root``, sorted."""
    files = [root / f for f in OUTPUT_FILES if (root / f).is_file()]
    for folder in OUTPUT_FOLDERS:
        files += [p for p in (root / folder).rglob("*") if p.is_file()] if (root / folder).is_dir() else []
    out = {}
    for p in files:
        rel = p.relative_to(root)
        # Temporary files of an interrupted write, bytecode and the platform records are no outputs.
        if (any(part.startswith(".") or part == "__pycache__" for part in rel.parts)
                or PLATFORM_FOLDER in rel.parents):
            continue
        out[rel.as_posix()] = sha256(p)
    return dict(sorted(out.items()))


def headlines(metrics: dict[str, Any], prefix: str = "") -> dict[str, list[float]]:
    """``{key: [value, low, high]}`` for every number of ``reports/metrics.json`` with an interval."""
    out: dict[str, list[float]] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(headlines(value, prefix=f"{name}/"))
        else:
            triple = [value, metrics.get(f"{key}_low"), metrics.get(f"{key}_high")]
            # A number without a finite interval (a dataset without masks has none) is no headline.
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in triple):
                out[name] = [float(v) for v in triple]
    return out


def snapshot(root: Path) -> dict[str, Any]:
    """What ``digests.json`` holds for the study in ``root``."""
    params = root / "params.yaml"
    metrics = io.read_json(root / HEADLINES) if (root / HEADLINES).is_file() else {}
    return {"params_sha256": sha256(params) if params.is_file() else None,
            "platforms": numerics.read_records(root), "headlines": headlines(metrics), "outputs": output_digests(root)}


def write(root: Path, dest: Path | None = None) -> dict[str, Any]:
    """Write ``digests.json`` of the study in ``root`` (atomically); return what it holds."""
    snap = snapshot(root)
    if not snap["outputs"]:
        raise KmxError(f"{root} has no study outputs to digest; run make repro first")
    io.write_json(dest or root / DIGESTS, snap)
    return snap


@dataclass
class Comparison:
    """How a study compares with committed digests (see :func:`compare`)."""

    n_outputs: int
    differ: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    n_headlines: int = 0
    platform: list[str] = field(default_factory=list)
    platform_recorded: bool = True
    params_differ: bool = False

    @property
    def identical(self) -> bool:
        return not self.differ

    def line(self) -> str:
        if not self.platform_recorded:
            where = "; the baseline has no platform record to compare with"
        elif self.platform:
            where = f"; this run differs in {', '.join(self.platform)}"
        else:
            where = "; same platform and numerics mode"
        params = " (params.yaml differs from the baseline's)" if self.params_differ else ""
        if self.identical:
            return (f"identical to the committed baseline: all {self.n_outputs} outputs have its "
                    f"SHA-256{params}{where}")
        shown = ", ".join(self.differ[:4]) + (f" and {len(self.differ) - 4} more" if len(self.differ) > 4 else "")
        head = f"{len(self.differ)} of {self.n_outputs} outputs differ from the committed baseline ({shown}){params}"
        if self.outside:
            verdict = (f"{len(self.outside)} of {self.n_headlines} headline numbers fall outside their "
                       f"committed interval: {'; '.join(self.outside[:3])}"
                       + (f" and {len(self.outside) - 3} more" if len(self.outside) > 3 else ""))
        else:
            verdict = f"every one of the {self.n_headlines} headline numbers stays inside its committed interval"
        return f"{head}; {verdict}{where}"


def _platform_differences(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    """``key: old -> new`` for each platform field that differs between any two matching records."""
    seen: dict[str, tuple[Any, Any]] = {}
    for name in sorted(set(old) & set(new)):
        for key in sorted(set(old[name]) | set(new[name])):
            a, b = old[name].get(key), new[name].get(key)
            if a != b and key not in seen:
                seen[key] = (a, b)
    return [f"{key} ({a} -> {b})" for key, (a, b) in seen.items()]


def compare(root: Path, committed: Path | None = None) -> Comparison:
    """Compare the study in ``root`` with the committed ``digests.json``."""
    old = io.read_json(committed or root / DIGESTS)
    new = snapshot(root)
    paths = sorted(set(old["outputs"]) | set(new["outputs"]))
    differ = [p for p in paths if old["outputs"].get(p) != new["outputs"].get(p)]
    outside = []
    for key, (_, low, high) in old["headlines"].items():
        value = new["headlines"].get(key, [None])[0]
        if value is None or not low <= value <= high:
            shown = "missing" if value is None else f"{value:.3f}"
            outside.append(f"{key} {shown} not in [{low:.3f}, {high:.3f}]")
    return Comparison(n_outputs=len(paths), differ=differ, outside=outside, n_headlines=len(old["headlines"]),
                      platform=_platform_differences(old["platforms"], new["platforms"]),
                      platform_recorded=bool(old["platforms"]) and bool(new["platforms"]),
                      params_differ=old.get("params_sha256") != new["params_sha256"])


def main(argv: list[str] | None = None) -> int:
    """``python -m kmx_eval.digests write|compare [--root DIR] [--digests FILE]``."""
    p = argparse.ArgumentParser(prog="python -m kmx_eval.digests", description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("write", "compare"))
    p.add_argument("--root", type=Path, default=Path("."), help="the study's repository (default: .)")
    p.add_argument("--digests", type=Path, default=None, help=f"digests file (default: ROOT/{DIGESTS})")
    args = p.parse_args(argv)
    dest = args.digests or args.root / DIGESTS
    if args.action == "write":
        try:
            print(f"digests of {len(write(args.root, dest)['outputs'])} outputs written to {dest}")
        except KmxError as exc:
            print(f"kmx-eval digests: error: {exc}", file=sys.stderr)
            return 2
        return 0
    if not dest.is_file():
        print(f"no {dest} to compare with: `make digests` writes one for a finished study")
        return 0
    print(compare(args.root, dest).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
