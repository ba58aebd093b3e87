"""End to end with the user's own model and other architectures: `dvc repro` on tiny params.

One study, two datasets: ``own`` explains a DenseNet121 trained nowhere in the suite (built here,
saved to safetensors, ``backbone.checkpoint`` with ``epochs: 0``); ``vgg`` trains a VGG16-BN for one
epoch, whose classifier is not GAP + one linear layer. Every stage and the report run.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file

from kmx_eval.validation import parse_params
from kmx_eval.seeding import seed_everything

from test_pipeline import REPO, dvc, run, stale_stages, write_params

pytestmark = pytest.mark.e2e

CHECKPOINT = "inputs/own.safetensors"
STUDY = {
    "seeds": [0],
    "datasets": {
        "own": {"source": "synthetic", "n_classes": 3, "train_per_class": 6, "test_per_class": 4,
                "clutter": 2, "seed": 0,
                "backbone": {"architecture": "densenet121", "checkpoint": CHECKPOINT, "epochs": 0}},
        "vgg": {"source": "synthetic", "n_classes": 2, "train_per_class": 6, "test_per_class": 3,
                "clutter": 2, "seed": 1, "backbone": {"architecture": "vgg16_bn", "epochs": 1}},
    },
    "backbone": {"architecture": "resnet18", "image_size": 32, "epochs": 1, "batch_size": 8,
                 "lr": 0.001, "device": "cpu", "threads": 1},
    "combinations": ["B4"],
    "head": {"n_prototypes": 2, "n_init": 1, "max_iter": 50, "probe_max_iter": 200},
    # The explainers and metrics that touch the architecture; the rest is the tiny study's business.
    "explain": {"n_images": 3, "batch_size": 4, "explainers": ["margin", "cam", "gradcam", "random"],
                "concepts": {"n_concepts": 2, "scope": ["global"], "n_images": 18, "locations_per_image": 4,
                             "batch_size": 16}},
    "evaluate": {"quantus": ["RelevanceMassAccuracy", "FaithfulnessCorrelation"],
                 "faithfulness": {"nr_runs": 2, "n_steps": 2, "nr_samples": 1, "regions_evaluation": 2},
                 "bootstrap": {"n_resamples": 20}, "compare": []},
    "report": {"gallery_images": 1},
}
parse_params(STUDY)  # a typo here is a failed collection, not minutes of pipeline


def own_model() -> torch.nn.Module:
    """The user's model: a plain torchvision DenseNet121 with 3 classes and non-trivial BatchNorm."""
    seed_everything(5)
    model = torchvision.models.densenet121(num_classes=3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own")
    shutil.copy(REPO / "dvc.yaml", root)
    for folder in ("stages", "kmx_eval"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".gitignore", root)
    (root / "inputs").mkdir()
    save_file(own_model().state_dict(), str(root / CHECKPOINT))
    write_params(root, STUDY)
    run(["git", "init", "-q"], cwd=root)
    dvc("init", "-q", cwd=root)
    shutil.copy(REPO / ".dvcignore", root)  # after init, which writes its own: __pycache__ is no code dep
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "own model"], cwd=root)
    start = time.perf_counter()
    # About 3 minutes on an idle 2-core machine (17 stage processes), several times that when shared.
    dvc("repro", cwd=root, timeout=2400)
    print(f"own-model pipeline: {time.perf_counter() - start:.0f} s")
    return root


def _metrics(study: Path, ds: str, comb: str) -> pd.DataFrame:
    return pd.read_csv(study / "metrics" / ds / comb / "evaluate" / "metrics.csv")


def test_explained_backbone_is_the_checkpoint_tensor_for_tensor(study):
    saved = load_file(str(study / CHECKPOINT))
    stored = load_file(str(study / "models" / "own" / "seed0" / "backbone.safetensors"))
    assert stored.keys() == saved.keys()
    for key in saved:
        assert stored[key].dtype == saved[key].dtype and torch.equal(stored[key], saved[key]), key


def test_cnn_accuracy_in_the_outputs_is_the_models_own_on_the_test_split(study):
    import json

    from kmx_eval.data import ImageDataset, load_prepared

    test = ImageDataset(load_prepared(study / "data" / "own")["test"], augment=False, train=False)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = np.array([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        direct = float((own_model()(x).argmax(1).numpy() == y).mean())
    train = json.loads((study / "metrics" / "own" / "train.json").read_text())
    assert train["seed0"] == {"test_accuracy": direct}  # epochs: 0 trains nothing
    cnn = _metrics(study, "own", "cnn")
    row = cnn[(cnn["method"] == "cnn") & (cnn["metric"] == "accuracy")]
    assert row["value"].tolist() == [direct]
    report = json.loads((study / "reports" / "metrics.json").read_text())
    assert report["own"]["cnn"]["accuracy"] == direct


def test_report_names_architecture_and_checkpoint_of_each_dataset(study):
    from kmx_eval.models.backbone import checkpoint_sha256

    html = (study / "reports" / "index.html").read_text()
    assert f"densenet121, checkpoint own.safetensors (sha256 {checkpoint_sha256(study / CHECKPOINT)})" in html
    assert "vgg16_bn (weights: none)" in html


def test_vgg_linear_prototypes_and_cam_are_not_applicable_gradcam_runs(study):
    cnn = _metrics(study, "vgg", "cnn")
    for method, why in (("cam", "CAM needs GAP + one linear layer"), ("linear", "no prototypes w_c")):
        rows = cnn[cnn["method"] == method]
        assert len(rows) > 0 and rows["value"].isna().all(), method
        assert rows["note"].str.startswith("not applicable").all() and rows["note"].str.contains(why, regex=False).all()
        assert "three linear layers" in rows["note"].iloc[0]
    gradcam = cnn[cnn["method"] == "gradcam"]
    assert len(gradcam) > 0 and gradcam["value"].notna().any()
    kmeans = _metrics(study, "vgg", "B4")
    assert kmeans[(kmeans["method"] == "kmeans") & (kmeans["metric"] == "accuracy")]["value"].notna().all()
    with np.load(study / "maps" / "vgg" / "cnn" / "seed0.npz") as maps:
        assert "gradcam" in maps.files and "cam" not in maps.files


def test_densenet_cam_and_linear_prototypes_are_computed(study):
    cnn = _metrics(study, "own", "cnn")
    assert cnn[cnn["method"] == "cam"]["value"].notna().any()
    linear = cnn[(cnn["method"] == "linear") & (cnn["metric"] == "purity")]
    assert linear["value"].notna().all()


def test_replacing_the_checkpoint_file_reruns_its_training_only(study):
    """DVC tracks the checkpoint's content (its sha256 in train's resolved settings), not its path."""
    original = (study / CHECKPOINT).read_bytes()
    try:
        model = own_model()
        with torch.no_grad():
            model.classifier.bias.add_(1.0)
        save_file(model.state_dict(), str(study / CHECKPOINT))
        stale = stale_stages(study)
        assert "train@own" in stale and not any("@vgg" in name for name in stale), stale
    finally:
        (study / CHECKPOINT).write_bytes(original)
    assert "train@own" not in stale_stages(study)
