"""The tiny two-dataset study of tests/e2e/test_pipeline.py, and helpers to run it with DVC. Used by
tests/e2e and tests/launch (the study as parallel jobs): one synthetic dataset with masks and one image folder
without, resnet18 at 64/32 px, three block combinations.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from kmx_eval.validation import parse_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

OVERRIDES = {
    "seeds": [0],
    "datasets": {
        "tiny": {"source": "synthetic", "n_classes": 3, "train_per_class": 24, "test_per_class": 8,
                 "clutter": 2},
        # A folder of images without masks: localisation must be marked not applicable.
        "folder": {"source": "imagefolder", "path": "inputs/folder", "test_fraction": 0.25,
                   "backbone": {"image_size": 32}},
    },
    # One thread: tiny forwards on a loaded 2-core machine wait on a descheduled second thread.
    "backbone": {"architecture": "resnet18", "image_size": 64, "epochs": 2, "batch_size": 16,
                 "lr": 0.003, "threads": 1},
    # Two combinations: one block and two. The balanced weighting is tested through the fit stage
    # (tests/heads/test_fit_stage.py) and the heads' and models' unit tests; profiles/thorough.yaml
    # runs B234_balanced end to end.
    "combinations": ["B4", "B34"],
    "head": {"n_prototypes": 2, "n_init": 1, "max_iter": 50, "probe_max_iter": 200},
    "explain": {"n_images": 6, "ig_steps": 4, "batch_size": 8,
                "concepts": {"n_concepts": 3, "n_images": 12, "locations_per_image": 8, "batch_size": 64}},
    "evaluate": {"faithfulness": {"nr_runs": 3, "n_steps": 4, "nr_samples": 1, "regions_evaluation": 3},
                 "bootstrap": {"n_resamples": 50}, "compare": [["B4", "B34"]]},
    "report": {"gallery_images": 2},
}


# Written as a user writes it: only what differs from the defaults (as tests/e2e does).
TINY = OVERRIDES
parse_params(TINY)  # a typo here is a failed collection, not minutes of pipeline


def env() -> dict:
    """The environment of `dvc` and the stages: this venv first, offline, one thread, git identity."""
    e = dict(os.environ)
    e.update(PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}", HF_DATASETS_OFFLINE="1",
             DVC_NO_ANALYTICS="1", TQDM_DISABLE="1",
             # One thread: tiny forwards on a loaded 2-core machine wait on a descheduled
             # second thread (measured 40x slower in benchmarks/bench_quantus.py).
             OMP_NUM_THREADS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
             GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return e


def run(cmd: list[str], cwd: Path, timeout: int = 900, check: bool = True, extra_env: dict | None = None
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def dvc(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], cwd=cwd, **kw)


def make_image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            img = rng.integers(0, 60, (40, 40, 3), dtype=np.uint8)
            x, y = rng.integers(0, 20, 2)
            img[y:y + 16, x:x + 16] = colour
            Image.fromarray(img).save(root / cls / f"{i}.png")


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def metric_files(repo: Path) -> list[Path]:
    """The study's metrics files, without the platform records (metrics/platform/): those say where a
    stage ran, and a stage restored from DVC's run cache (a collected scale-out run) brings none."""
    return sorted(p for p in (repo / "metrics").rglob("*")
                  if p.is_file() and p.suffix in (".json", ".csv") and p.parent.name != "platform")


def make_study_repo(root: Path, params: dict | None = None) -> Path:
    """A git + DVC repository at ``root`` holding the pipeline (dvc.yaml, stages/, kmx_eval/), the
    image folder of the ``folder`` dataset and ``params`` (default: the tiny study), committed."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "kmx_eval", root / "kmx_eval", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".gitignore", root)
    make_image_folder(root / "inputs" / "folder")
    write_params(root, TINY if params is None else params)
    run(["git", "init", "-q"], cwd=root)
    dvc("init", "-q", cwd=root)
    shutil.copy(REPO / ".dvcignore", root)  # after init, which writes its own: __pycache__ is no code dep
    dvc("config", "core.analytics", "false", cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "tiny study"], cwd=root)
    return root
