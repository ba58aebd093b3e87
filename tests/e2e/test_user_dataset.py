"""A user's own folder of photos, added to the shipped params.yaml exactly as the README shows.

The entry is the README's two-line one (source and path), the folder holds greyscale, RGBA and RGB
files and no masks, and params.yaml is the shipped file as written, not filled in with defaults.
Only the shipped datasets are taken out (they are the twelve-minute default study; what matters
here is how DVC treats the keys a user leaves out). `dvc repro` must run through the report.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from readme_blocks import code_blocks

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODES = ("L", "RGBA", "RGB")


def make_photos(root: Path) -> None:
    """Three classes of six small photos each, in mixed image modes, no masks."""
    rng = np.random.default_rng(1)
    for c, colour in enumerate(((220, 60, 60), (60, 200, 60), (60, 60, 220))):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(6):
            img = rng.integers(0, 80, (48, 48, 3), dtype=np.uint8)
            x, y = rng.integers(0, 24, 2)
            img[y:y + 20, x:x + 20] = colour
            Image.fromarray(img).convert(MODES[i % 3]).save(root / f"class{c}" / f"{i}.png")


def minimal_entry() -> tuple[str, dict]:
    """The README's dataset entry that has only source and path, as its name and mapping."""
    for block in code_blocks("yaml"):
        entries = yaml.safe_load(block).get("datasets", {})
        for name, entry in entries.items():
            if set(entry) == {"source", "path"}:
                return name, entry
    raise AssertionError("the README shows no two-line dataset entry")


def shipped_params_with(name: str, entry: dict) -> str:
    """The shipped params.yaml, text as written, with its datasets replaced by ``name: entry``."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    head, rest = text.split("\ndatasets:\n", 1)
    # The datasets section ends at the next top-level key.
    after = rest[re.search(r"^\S", rest, re.M).start():]
    body = yaml.safe_dump({name: entry}, sort_keys=False)
    return f"{head}\ndatasets:\n" + "".join(f"  {line}\n" for line in body.splitlines()) + "\n" + after


def test_the_readme_minimal_entry_runs_through_the_report(tmp_path):
    name, entry = minimal_entry()
    root = tmp_path / "study"
    root.mkdir()
    for item in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / item, root)
    for folder in ("stages", "kmx_eval"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    photos = root / "photos"
    make_photos(photos)
    entry = {**entry, "path": str(photos)}  # the README's placeholder path, pointed at the photos
    # The one edit to the shipped file besides its datasets: one CPU thread, because this test runs
    # beside another test worker and two threads on a shared core wait on each other.
    text = shipped_params_with(name, entry).replace("\n  threads: 2 ", "\n  threads: 1 ", 1)
    assert "\n  threads: 1 " in text
    (root / "params.yaml").write_text(text, encoding="utf-8")
    written = yaml.safe_load((root / "params.yaml").read_text())
    assert written["datasets"] == {name: entry}  # not filled in: no seed, test_fraction, masks

    env = {**__import__("os").environ, "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
           "DVC_NO_ANALYTICS": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def sh(*cmd: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1500)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc

    sh("git", "init", "-q")
    sh(str(BIN / "dvc"), "init", "-q")
    shutil.copy(REPO / ".dvcignore", root)  # after init, which writes its own: __pycache__ is no code dep
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "a user's dataset")
    proc = sh(str(BIN / "dvc"), "repro")
    ran = set(re.findall(r"Running stage '([^']+)'", proc.stdout))
    print("stages run:", sorted(ran))
    assert {f"prepare@{name}", f"evaluate_cnn@{name}", "report"} <= ran
    html = (root / "reports" / "index.html").read_text(encoding="utf-8")
    assert name in html
    metrics = (root / "metrics" / name / "B4" / "evaluate" / "metrics.csv").read_text()
    assert "not applicable" in metrics  # no masks: localisation is marked, not zero
