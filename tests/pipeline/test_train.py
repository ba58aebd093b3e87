"""One seed's backbone (the train stage's library part): the checkpoint's record, the copy each seed
starts from, the metadata of backbone.json and the numbers of train.json."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from kmx_eval.config import BackboneConfig
from kmx_eval.errors import DataError
from kmx_eval.models.backbone import checkpoint_sha256
from kmx_eval.pipeline.train import train_seed_backbone, user_checkpoint
from kmx_eval.seeding import seed_everything

NAMES = ["a", "b", "c"]


def _cfg(**kw) -> BackboneConfig:
    return BackboneConfig(architecture="resnet18", image_size=32, batch_size=4, device="cpu", **kw)


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_user_checkpoint_is_loaded_with_the_record_of_its_file(tmp_path, tiny_resnet18):
    path = tmp_path / "mine" / "weights.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in tiny_resnet18.state_dict().items()}, str(path))
    start, record = user_checkpoint(path, "resnet18", 3, where="datasets.toy.backbone.checkpoint")
    assert _equal(start, tiny_resnet18)
    assert record == {"file": "weights.safetensors", "sha256": checkpoint_sha256(path)}  # no folder
    with pytest.raises(DataError, match="datasets.toy.backbone.checkpoint: the classifier"):
        user_checkpoint(path, "resnet18", 4, where="datasets.toy.backbone.checkpoint")


def test_epochs_0_keeps_a_copy_of_the_checkpoint_and_reports_only_test_accuracy(tiny_resnet18, make_images):
    record = {"file": "weights.safetensors", "sha256": "0" * 64}
    trained = train_seed_backbone(_cfg(epochs=0), NAMES, train=make_images(6, n_classes=3),
                                  test=make_images(5, n_classes=3, seed=1), seed=7, device="cpu",
                                  start=tiny_resnet18, checkpoint=record)
    assert trained.model is not tiny_resnet18 and _equal(trained.model, tiny_resnet18)
    assert set(trained.metrics) == {"test_accuracy"}  # nothing trained: no loss, no train accuracy
    meta = trained.meta
    assert {k: meta[k] for k in ("architecture", "n_classes", "class_names", "image_size", "weights",
                                 "checkpoint", "seed", "epochs", "device")} == {
        "architecture": "resnet18", "n_classes": 3, "class_names": NAMES, "image_size": 32,
        "weights": "none", "checkpoint": record, "seed": 7, "epochs": 0, "device": "cpu"}
    assert meta["test_accuracy"] == trained.metrics["test_accuracy"]
    assert meta["history"] == {"loss": [], "train_accuracy": []} and meta["torch"] == torch.__version__


def test_each_seed_trains_its_own_copy_from_the_seeded_initialisation(tiny_resnet18, make_images):
    train, test = make_images(8, n_classes=3), make_images(4, n_classes=3, seed=1)
    before = {k: v.clone() for k, v in tiny_resnet18.state_dict().items()}
    tuned = train_seed_backbone(_cfg(epochs=1), NAMES, train=train, test=test, seed=0, device="cpu",
                                start=tiny_resnet18)
    assert all(torch.equal(before[k], v) for k, v in tiny_resnet18.state_dict().items())  # start untouched
    assert not _equal(tuned.model, tiny_resnet18)
    assert set(tuned.metrics) == {"test_accuracy", "train_accuracy", "final_loss"}
    assert tuned.metrics["final_loss"] == tuned.meta["history"]["loss"][-1]
    # From scratch, the initial weights come from torch's generator: the caller's seed decides them.
    runs = []
    for _ in range(2):
        seed_everything(3)
        runs.append(train_seed_backbone(_cfg(epochs=0), NAMES, train=train, test=test, seed=3, device="cpu").model)
    assert _equal(runs[0], runs[1]) and runs[0].fc.out_features == 3
