"""params.yaml is written as DVC writes it back: `dvc exp run -S key=value` changes one line.

DVC applies ``-S`` through Hydra and writes the file back with ruamel.yaml, which turns flow-style
lists (``[B4, B34]``) into one item a line and drops some blank lines: a shipped file in another
style would show a diff of dozens of lines for one changed value (issue 26).
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("override", ["report.gallery_images=4", "backbone.lr=0.001",
                                      "head.n_prototypes=3"])
def test_dvc_exp_run_set_param_changes_one_line(tmp_path, override):
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` calls

    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    before = path.read_text(encoding="utf-8").splitlines()
    apply_overrides(str(path), [override])
    after = path.read_text(encoding="utf-8").splitlines()
    changed = [line for line in difflib.unified_diff(before, after, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    key, value = override.split("=")
    assert len(changed) == 2, "\n".join(changed)
    assert changed[1][1:].strip().startswith(f"{key.rsplit('.', 1)[1]}: {value}")
    assert yaml.safe_load(path.read_text()) != yaml.safe_load((REPO / "params.yaml").read_text())
