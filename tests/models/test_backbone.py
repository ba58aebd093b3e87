"""Backbone: registry, ImageNet weights without network, deterministic training, safetensors round trip."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch

from kmx_eval.config import BackboneConfig
from kmx_eval.errors import DataError, ParamsError, UnavailableError
from kmx_eval.models.backbone import (
    ARCHITECTURES,
    build_backbone,
    evaluate_backbone,
    load_backbone,
    save_backbone,
    train_backbone,
)
from kmx_eval.seeding import seed_everything

CFG = BackboneConfig(architecture="resnet18", image_size=32, epochs=2, batch_size=4, lr=2e-3,
                     device="cpu")


def test_registry_lists_the_resnets_vgg_densenet_and_efficientnet():
    assert ARCHITECTURES.names() == ["densenet121", "efficientnet_b0", "resnet18", "resnet34",
                                     "resnet50", "vgg16_bn"]


@pytest.mark.parametrize("arch, c4", [("resnet18", 512), ("resnet50", 2048)])
def test_fc_is_replaced_by_an_n_classes_linear_layer(arch, c4):
    model = build_backbone(arch, 7).eval()
    assert isinstance(model.fc, torch.nn.Linear)
    assert (model.fc.in_features, model.fc.out_features) == (c4, 7)
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_architecture_names_the_valid_ones():
    with pytest.raises(ParamsError, match="resnet18, resnet34, resnet50, vgg16_bn") as err:
        build_backbone("resnet35", 3)
    assert "'resnet35'" in str(err.value) and "did you mean" in str(err.value)


def test_bad_weights_and_too_few_classes_are_params_errors():
    with pytest.raises(ParamsError, match="none, imagenet"):
        build_backbone("resnet18", 3, weights="random")
    with pytest.raises(ParamsError, match="at least 2 classes"):
        build_backbone("resnet18", 1)


@pytest.mark.parametrize("architecture", ["resnet18", "efficientnet_b0"])
def test_imagenet_weights_come_from_the_torch_hub_cache_without_the_network(monkeypatch, tmp_path, architecture):
    # A user with the weights in ~/.cache/torch (or TORCH_HOME) and no network: torchvision reads
    # <TORCH_HOME>/hub/checkpoints/<the file of the weights' URL> and never downloads.
    import torchvision

    from kmx_eval.models.architectures import get_architecture

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("the network is unreachable in this test")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    builder = get_architecture(architecture).builder
    url = torchvision.models.get_model_weights(builder)["IMAGENET1K_V1"].url  # offline: only its file name
    torch.manual_seed(7)
    stored = builder(weights=None).state_dict()  # 1000 classes, as the published file
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(stored, tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])

    torch.manual_seed(8)  # another draw: only the new classifier may come from it
    model = build_backbone(architecture, 3, weights="imagenet")
    classifier = get_architecture(architecture).classifier
    got = model.state_dict()
    replaced = {k for k in got if k.startswith(classifier + ".")}
    assert replaced and got[next(iter(sorted(replaced)))].shape[0] == 3
    kept = [k for k in stored if k not in replaced and not k.startswith(classifier + ".")]
    assert kept and all(torch.equal(got[k], stored[k]) for k in kept)  # tensor for tensor


@pytest.mark.parametrize("failure", [urllib.error.URLError("Name or service not known"),
                                     RuntimeError("invalid load key")])
def test_imagenet_weights_without_network_give_one_sentence(monkeypatch, failure):
    # Force the download to fail the way it does offline, whatever network the test machine has.
    def no_network(*args, **kwargs):
        raise failure

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", no_network)
    with pytest.raises(UnavailableError) as err:
        build_backbone("resnet34", 3, weights="imagenet")
    msg = str(err.value)
    assert "resnet34" in msg and "ImageNet" in msg
    assert "hub/checkpoints" in msg and "resnet34-" in msg and "weights: none" in msg
    assert "\n" not in msg and ". " not in msg.replace("(from https", "")  # one sentence
    assert err.value.__cause__ is None and err.value.__suppress_context__


def _train(make_images, init_seed: int = 0, shuffle_seed: int = 0):
    seed_everything(init_seed)
    model = build_backbone("resnet18", 2)
    history = train_backbone(model, make_images(8, seed=1), make_images(4, seed=2), cfg=CFG,
                             seed=shuffle_seed, device="cpu")
    return model, history


def test_same_seed_gives_identical_weights_and_history(make_images):
    model_a, hist_a = _train(make_images)
    model_b, hist_b = _train(make_images)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert hist_a["loss"] == hist_b["loss"] and hist_a["test_accuracy"] == hist_b["test_accuracy"]
    # Training changed the weights, and the seed argument alone (same initial weights) changes the
    # order of the mini-batches and so the result.
    fresh = (seed_everything(0), build_backbone("resnet18", 2))[1].state_dict()
    assert not torch.equal(fresh["conv1.weight"], state_a["conv1.weight"])
    model_c, _ = _train(make_images, shuffle_seed=1)
    assert not torch.equal(model_c.state_dict()["fc.weight"], state_a["fc.weight"])


def test_history_has_one_entry_per_epoch_and_training_reduces_the_loss(make_images):
    seed_everything(0)
    model = build_backbone("resnet18", 2)
    cfg = CFG.model_copy(update={"epochs": 4})
    history = train_backbone(model, make_images(12, seed=1), make_images(4, seed=2), cfg=cfg, seed=0)
    assert len(history["loss"]) == len(history["train_accuracy"]) == 4
    assert history["loss"][-1] < history["loss"][0]
    assert all(0.0 <= a <= 1.0 for a in history["train_accuracy"])
    assert 0.0 <= history["test_accuracy"] <= 1.0 and history["train_seconds"] > 0
    logits, labels = evaluate_backbone(model, make_images(4, seed=2), batch_size=3)
    assert history["test_accuracy"] == pytest.approx(float((logits.argmax(1) == labels).mean()))


def test_zero_epochs_only_evaluates(make_images):
    seed_everything(0)
    model = build_backbone("resnet18", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = train_backbone(model, make_images(8), make_images(4),
                             cfg=CFG.model_copy(update={"epochs": 0}), seed=0)
    assert history["loss"] == [] and 0.0 <= history["test_accuracy"] <= 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_evaluate_returns_logits_and_labels_in_dataset_order(tiny_resnet18, make_images):
    data = make_images(7, n_classes=3)
    logits, labels = evaluate_backbone(tiny_resnet18, data, batch_size=3)
    assert logits.dtype == np.float32 and logits.shape == (7, 3)
    assert labels.dtype == np.int64 and labels.tolist() == data.y.tolist()
    with torch.no_grad():
        np.testing.assert_allclose(logits, tiny_resnet18(data.x).numpy(), rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_gives_identical_logits(tmp_path, make_images):
    seed_everything(0)
    model = build_backbone("resnet18", 2)
    train_backbone(model, make_images(8), make_images(4), cfg=CFG.model_copy(update={"epochs": 1}), seed=0)
    model.eval()
    meta = {"architecture": "resnet18", "n_classes": 2, "class_names": ["a", "b"], "seed": 0}
    save_backbone(model, tmp_path / "seed0", meta)
    assert sorted(p.name for p in (tmp_path / "seed0").iterdir()) == ["backbone.json",
                                                                      "backbone.safetensors"]
    loaded, loaded_meta = load_backbone(tmp_path / "seed0", "cpu")
    assert loaded_meta == meta and not loaded.training
    x = make_images(5, seed=3).x
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for key, value in model.state_dict().items():  # running stats and num_batches_tracked too
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_load_refuses_weights_that_do_not_fit_the_meta(tmp_path, tiny_resnet18):
    save_backbone(tiny_resnet18, tmp_path, {"architecture": "resnet18", "n_classes": 3})
    meta = json.loads((tmp_path / "backbone.json").read_text())
    (tmp_path / "backbone.json").write_text(json.dumps({**meta, "n_classes": 5}))
    with pytest.raises(DataError, match="backbone.safetensors does not fit a resnet18 with 5 classes"):
        load_backbone(tmp_path)
    (tmp_path / "backbone.json").write_text(json.dumps({"n_classes": 3}))
    with pytest.raises(DataError, match="lacks architecture"):
        load_backbone(tmp_path)
