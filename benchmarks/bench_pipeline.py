"""``dvc repro`` end to end in a temporary copy of the repository, with a per-stage breakdown.

Copies ``dvc.yaml``, ``stages/``, ``kmx_eval/``, ``.gitignore`` and the params file (as
``params.yaml``) into a fresh temporary folder, makes it a git + DVC repository, and runs
``dvc repro`` while streaming its output: every ``Running stage '<name>':`` line is timestamped, and
a stage's time is the time until the next stage starts (or dvc exits), so it includes DVC's own
hashing and caching of the stage's outputs. Then a second ``dvc repro``, which must find nothing to
do, is timed (median of 3).

Targets (of the default params, on the reference 2-core CPU): total < 10 minutes, no-op < 2 s.
With another params file the same targets are printed for comparison only.

This takes minutes on the default params; on a shared machine, check it first with tiny params:

    .venv/bin/python benchmarks/bench_pipeline.py                       # default params.yaml
    .venv/bin/python benchmarks/bench_pipeline.py --params tiny.yaml    # another params file
    .venv/bin/python benchmarks/bench_pipeline.py --quick               # built-in tiny params

Datasets given by a relative ``path`` (imagefolder) need ``--copy inputs`` (copied beside them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

import _common as common

TARGET_TOTAL_S = 600.0
TARGET_NOOP_S = 2.0
RUNNING = re.compile(r"Running stage '([^']+)'")
BIN = Path(sys.executable).parent

#: The --quick study: one small synthetic dataset, resnet18 at 64 px, one combination pair.
#: (tests/e2e/test_pipeline.py has a similar TINY dict with a second, image-folder dataset.)
QUICK_PARAMS = {
    "seeds": [0],
    "datasets": {"tiny": {"source": "synthetic", "n_classes": 3, "train_per_class": 24,
                          "test_per_class": 8, "clutter": 2, "seed": 0}},
    "backbone": {"architecture": "resnet18", "image_size": 64, "epochs": 2, "batch_size": 16, "lr": 0.003},
    "combinations": ["B4", "B34"],
    "head": {"n_prototypes": 2, "n_init": 1, "max_iter": 50, "probe_max_iter": 200},
    "explain": {"n_images": 6, "ig_steps": 4, "batch_size": 8,
                "concepts": {"n_concepts": 3, "n_images": 12, "locations_per_image": 8, "batch_size": 64}},
    "evaluate": {"faithfulness": {"nr_runs": 3, "n_steps": 4, "nr_samples": 1, "regions_evaluation": 3},
                 "bootstrap": {"n_resamples": 50}, "compare": [["B4", "B34"]]},
    "report": {"gallery_images": 2},
}


def environment_for_dvc() -> dict[str, str]:
    """PATH with this venv first (dvc.yaml runs ``python stages/...``), offline, no analytics."""
    env = dict(os.environ)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", HF_DATASETS_OFFLINE="1",
               DVC_NO_ANALYTICS="1", TQDM_DISABLE="1", PYTHONHASHSEED="0",
               GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost")
    return env


def expanded_params(raw: dict, source: str) -> str:
    """The params as YAML with every schema default written out.

    ``dvc.yaml`` tracks keys such as ``features.resize`` or ``datasets.<name>.seed``; DVC refuses
    to run a stage whose tracked key is missing from ``params.yaml``, even when the schema has a
    default for it. Writing the validated params back in full keeps the same study and satisfies
    DVC, so a short params file (only what differs from the defaults) can be timed.
    """
    import yaml

    from kmx_eval.validation import parse_params

    full = parse_params(raw, source=source).to_full_dict()  # fail here, not minutes into dvc
    return f"# {source}, with every default written out (bench_pipeline.py)\n" + yaml.safe_dump(full, sort_keys=False)


def make_repository(root: Path, params_text: str, copies: list[Path], env: dict) -> None:
    """A fresh git + DVC repository at ``root`` with the pipeline, the package and the params."""
    shutil.copy(common.REPO / "dvc.yaml", root / "dvc.yaml")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(common.REPO / "stages", root / "stages", ignore=ignore)
    shutil.copytree(common.REPO / "kmx_eval", root / "kmx_eval", ignore=ignore)
    if (common.REPO / ".gitignore").exists():
        shutil.copy(common.REPO / ".gitignore", root / ".gitignore")
    for src in copies:
        dst = root / src.name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (root / "params.yaml").write_text(params_text, encoding="utf-8")
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"],
                ["cp", str(common.REPO / ".dvcignore"), "."],  # after init: __pycache__ is no code dep
                [str(BIN / "dvc"), "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "benchmark study"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, text=True)


def timed_repro(root: Path, env: dict, targets: list[str], echo: bool, timeout: float) -> dict:
    """Run ``dvc repro`` streaming its output; return total seconds, stage starts and the log."""
    cmd = [str(BIN / "dvc"), "repro", *targets]
    t0 = common.now()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    timer = threading.Timer(timeout, proc.kill)  # a stuck stage must not hang the benchmark
    timer.start()
    starts: list[tuple[str, float]] = []
    log: list[str] = []
    try:
        for line in proc.stdout:
            t = common.now() - t0
            line = line.rstrip("\n")
            log.append(f"{t:8.1f}s  {line}")
            m = RUNNING.search(line)
            if m:
                starts.append((m.group(1), t))
            if echo and line.strip():
                print(f"  [{t:7.1f}s] {line}", flush=True)
        rc = proc.wait()
    finally:
        timer.cancel()
    total = common.now() - t0
    stages = []
    for i, (name, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else total
        stages.append({"stage": name, "start_s": start, "seconds": end - start})
    return {"returncode": rc, "total_s": total, "stages": stages, "log": log}


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__, threads=None)
    p.add_argument("--params", default=None, help="params file to time (default: params.yaml of the repository)")
    p.add_argument("--copy", action="append", default=[], metavar="PATH",
                   help="extra file or folder to copy into the temporary repository (e.g. inputs/)")
    p.add_argument("--targets", nargs="*", default=[], help="dvc repro targets (default: the whole DAG)")
    p.add_argument("--workdir", default=None, help="where to create the temporary repository (default: system tmp)")
    p.add_argument("--keep", action="store_true", help="keep the temporary repository")
    p.add_argument("--quiet", action="store_true", help="do not echo dvc's output")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="seconds before dvc repro is killed")
    args = p.parse_args(argv)
    if args.threads:
        # Stages run in subprocesses: torch reads these at start-up.
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import yaml

    if args.quick and args.params is None:
        raw, source = QUICK_PARAMS, "built-in quick params"
    else:
        path = Path(args.params or common.REPO / "params.yaml")
        raw, source = yaml.safe_load(path.read_text(encoding="utf-8")), str(path)
    params_text = expanded_params(raw, source)
    default = args.params is None and not args.quick
    env = environment_for_dvc()
    env_before = common.environment()
    root = Path(tempfile.mkdtemp(prefix="kmx-bench-pipeline-", dir=args.workdir))
    try:
        make_repository(root, params_text, [Path(c).resolve() for c in args.copy], env)
        print(f"dvc repro of {source} in {root}", flush=True)
        first = timed_repro(root, env, args.targets, echo=not args.quiet, timeout=args.timeout)
        total = first["total_s"]
        by_kind: dict[str, float] = defaultdict(float)
        for s in first["stages"]:
            by_kind[s["stage"].split("@")[0]] += s["seconds"]
        print(f"\nPer stage ({source}):")
        width = max([len(s["stage"]) for s in first["stages"]] + [5])
        for s in first["stages"]:
            print(f"  {s['stage']:<{width}}  {s['seconds']:8.1f} s  {100 * s['seconds'] / total:5.1f}%")
        print("Per stage kind:")
        for kind, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
            print(f"  {kind:<{width}}  {seconds:8.1f} s  {100 * seconds / total:5.1f}%")
        if first["returncode"] != 0:
            print("\n".join(first["log"][-30:]), file=sys.stderr)
            print(f"dvc repro failed with exit status {first['returncode']} after {total:.0f} s; the "
                  f"times above are those of the stages that ran", file=sys.stderr)
            args.keep = True
            return 1

        noops = [timed_repro(root, env, args.targets, echo=False, timeout=600) for _ in range(3)]
        reran = [s["stage"] for n in noops for s in n["stages"]]
        if any(n["returncode"] != 0 for n in noops) or reran:
            print(f"the second dvc repro was not a no-op: it ran {sorted(set(reran))}", file=sys.stderr)
        scope = "" if default else " (target is for the default params)"
        checks = [
            common.Check(f"dvc repro end to end{scope}", total, "<", TARGET_TOTAL_S, unit="s",
                         detail=f"{len(first['stages'])} stages; {total / 60:.1f} min"),
            common.Check("no-op dvc repro (median of 3)", common.median([n["total_s"] for n in noops]),
                         "<", TARGET_NOOP_S, unit="s",
                         detail=f"runs {', '.join('%.2f' % n['total_s'] for n in noops)} s; "
                                f"stages rerun: {sorted(set(reran)) or 'none'}"),
        ]
        common.print_table(f"dvc repro timings ({source})", checks)
        return common.finish(args, "bench_pipeline", checks,
                             {"params": source, "targets": args.targets, "threads": args.threads},
                             {"stages": first["stages"], "by_kind": dict(by_kind),
                              "noop_s": [n["total_s"] for n in noops], "log": first["log"]}, env_before)
    finally:
        if args.keep:
            print(f"repository kept at {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
