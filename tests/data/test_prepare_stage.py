"""stages/prepare.py end to end on tiny params: the saved DatasetDict, and a one-line user error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _prepare_main():
    spec = importlib.util.spec_from_file_location("kmx_stage_prepare", ROOT / "stages" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _params(tmp_path: Path, datasets: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({
        "datasets": datasets,
        "backbone": {"architecture": "resnet18", "image_size": 32, "epochs": 1},
    }))
    return path


def test_prepare_writes_the_prepared_dataset(tmp_path, monkeypatch):
    from kmx_eval.data import class_names, decode_column, has_masks, has_parts, load_prepared

    params = _params(tmp_path, {"tiny": {"source": "synthetic", "n_classes": 3, "train_per_class": 4,
                                         "test_per_class": 2, "clutter": 2, "seed": 1,
                                         "backbone": {"image_size": 40}}})
    monkeypatch.chdir(tmp_path)
    assert _prepare_main()(["tiny", "--params", str(params)]) == 0
    dd = load_prepared(tmp_path / "data" / "tiny")
    assert [len(dd["train"]), len(dd["test"])] == [12, 6]
    assert len(class_names(dd)) == 3 and has_masks(dd) and has_parts(dd)
    # The per-dataset backbone override decides the size.
    assert decode_column(dd["test"]).shape == (6, 40, 40, 3)
    assert np.bincount(dd["train"]["label"]).tolist() == [4, 4, 4]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["tiny"]


def test_missing_imagefolder_path_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    params = _params(tmp_path, {"mine": {"source": "imagefolder", "path": "photos/nowhere"}})
    monkeypatch.chdir(tmp_path)
    assert _prepare_main()(["mine", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "datasets.mine" in err and "photos/nowhere does not exist" in err
    assert not (tmp_path / "data" / "mine").exists()
