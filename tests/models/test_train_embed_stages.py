"""The train and embed stages on a tiny prepared dataset: files, metrics, reproducibility, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from stage_loader import load_stage as _stage
import yaml
from tiny_models import comb

SIZE = 32




def _tiny_prepared(path: Path) -> None:
    """A DatasetDict in the prepared format: 2 classes (bright left or right half), 32 px RGB."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    features = Features({"image": Image(), "label": ClassLabel(names=["left", "right"])})

    def split(n):
        images, labels = [], []
        for i in range(n):
            arr = rng.integers(0, 90, (SIZE, SIZE, 3), dtype=np.uint8)
            arr[:, (i % 2) * SIZE // 2:(i % 2 + 1) * SIZE // 2] += 150
            images.append(PILImage.fromarray(arr, "RGB"))
            labels.append(i % 2)
        return Dataset.from_dict({"image": images, "label": labels}, features=features)

    DatasetDict({"train": split(12), "test": split(6)}).save_to_disk(str(path))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A repository-like working directory with data/tiny and a small params.yaml."""
    _tiny_prepared(tmp_path / "data" / "tiny")
    params = {
        "seeds": [0, 1],
        "datasets": {"tiny": {"source": "synthetic", "n_classes": 2}},
        "backbone": {"architecture": "resnet18", "image_size": SIZE, "epochs": 1, "batch_size": 6,
                     "device": "cpu", "augment": True},
        "features": {"batch_size": 5, "resize": "bilinear"},
        "combinations": ["B4", "B24"],
        "evaluate": {"compare": [["B4", "B24"]]},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_then_embed_write_the_contracted_files(workdir):
    from kmx_eval.data import ImageDataset, load_prepared
    from kmx_eval.io import load_npz
    from kmx_eval.models.backbone import evaluate_backbone, load_backbone
    from kmx_eval.models.embeddings import combination_embeddings

    train, embed = _stage("train"), _stage("embed")
    assert train(["tiny"]) == 0
    assert sorted(p.name for p in (workdir / "models").iterdir()) == ["tiny"]  # no temporary left
    assert sorted(p.name for p in (workdir / "models" / "tiny").iterdir()) == ["seed0", "seed1"]
    meta = json.loads((workdir / "models/tiny/seed0/backbone.json").read_text())
    assert {k: meta[k] for k in ("architecture", "n_classes", "class_names", "image_size", "weights",
                                 "seed", "epochs", "device")} == {
        "architecture": "resnet18", "n_classes": 2, "class_names": ["left", "right"],
        "image_size": SIZE, "weights": "none", "seed": 0, "epochs": 1, "device": "cpu"}
    metrics = json.loads((workdir / "metrics/tiny/train.json").read_text())
    assert sorted(metrics) == ["seed0", "seed1"]
    for values in metrics.values():  # a DVC metrics file: numbers only
        assert set(values) == {"test_accuracy", "train_accuracy", "final_loss"}
        assert all(isinstance(v, (int, float)) for v in values.values())
    assert metrics["seed0"]["test_accuracy"] == meta["test_accuracy"]
    weights0 = _sha(workdir / "models/tiny/seed0/backbone.safetensors")
    assert weights0 != _sha(workdir / "models/tiny/seed1/backbone.safetensors")

    assert embed(["tiny"]) == 0
    assert sorted(p.name for p in (workdir / "features" / "tiny").iterdir()) == ["seed0.npz", "seed1.npz"]
    cache = load_npz(workdir / "features/tiny/seed1.npz")
    model, _ = load_backbone(workdir / "models/tiny/seed1")
    test = ImageDataset(load_prepared(workdir / "data/tiny")["test"], augment=False)
    logits, labels = evaluate_backbone(model, test, batch_size=4)
    np.testing.assert_allclose(cache["test/logits"], logits, rtol=1e-5, atol=1e-5)
    assert cache["test/labels"].tolist() == labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert cache["train/none/B4@B4"].shape == (12, 512) and cache["stats/B2/std"].shape == (128,)
    assert combination_embeddings(cache, "test", comb("B24"), "standardize").shape == (6, 640)
    assert cache["test/logits"].dtype == np.float32

    # Same params, same seed: byte-identical weights (augmentation and shuffling are seeded).
    assert train(["tiny"]) == 0
    assert _sha(workdir / "models/tiny/seed0/backbone.safetensors") == weights0


def test_stages_fail_with_one_line_and_exit_2(workdir, capsys):
    train, embed = _stage("train"), _stage("embed")
    assert train(["nope"]) == 2
    assert "dataset 'nope' is not in params.yaml" in capsys.readouterr().err
    assert embed(["tiny"]) == 2  # no backbone trained yet
    err = capsys.readouterr().err.strip()
    assert "backbone.json does not exist" in err and len(err.splitlines()) == 1
    assert not (workdir / "features").exists() or not any((workdir / "features").iterdir())
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["backbone"]["image_size"] = 64
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    assert train(["tiny"]) == 2
    assert "holds 32 px images but the backbone's image_size is 64" in capsys.readouterr().err
