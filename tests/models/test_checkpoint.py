"""The user's own checkpoint: loaded tensor for tensor, or refused with one line naming the problem."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torchvision
import yaml
from safetensors.torch import load_file, save_file

from kmx_eval.errors import DataError
from kmx_eval.models.backbone import checkpoint_sha256, load_checkpoint
from kmx_eval.seeding import seed_everything
from stage_loader import load_stage


@pytest.fixture(scope="module")
def own_resnet18():
    """A model trained 'elsewhere': plain torchvision, 3 classes, random BatchNorm statistics."""
    seed_everything(3)
    model = torchvision.models.resnet18(num_classes=3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
    return model.eval()


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_safetensors_checkpoint_loads_tensor_for_tensor(tmp_path, own_resnet18):
    path = tmp_path / "mine.safetensors"
    save_file(own_resnet18.state_dict(), str(path))
    model = load_checkpoint(path, "resnet18", 3)
    saved = load_file(str(path))
    assert set(model.state_dict()) == set(saved)
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[key]), key
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), own_resnet18(x))


def test_torch_state_dict_files_load_with_weights_only(tmp_path, own_resnet18):
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.pth"
    torch.save(own_resnet18.state_dict(), plain)
    # A training script's checkpoint of a DataParallel model.
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in own_resnet18.state_dict().items()}},
               wrapped)
    for path in (plain, wrapped):
        model = load_checkpoint(path, "resnet18", 3)
        assert all(torch.equal(v, own_resnet18.state_dict()[k]) for k, v in model.state_dict().items())


def test_missing_checkpoint(tmp_path):
    with pytest.raises(DataError) as err:
        load_checkpoint(tmp_path / "nope.safetensors", "resnet18", 3)
    assert _one_line(err) == f"backbone.checkpoint: checkpoint {tmp_path / 'nope.safetensors'} does not exist"


def test_a_checkpoint_under_home_is_found_and_a_folder_is_named_as_one(tmp_path, own_resnet18, monkeypatch):
    """~ is expanded as in dataset paths; a folder is not reported as missing (issue 26, case 6)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    save_file(own_resnet18.state_dict(), str(tmp_path / "mine.safetensors"))
    model = load_checkpoint("~/mine.safetensors", "resnet18", 3)
    assert torch.equal(model.state_dict()["fc.weight"], own_resnet18.state_dict()["fc.weight"])
    assert checkpoint_sha256("~/mine.safetensors") == checkpoint_sha256(tmp_path / "mine.safetensors")
    with pytest.raises(DataError) as err:
        load_checkpoint(tmp_path, "resnet18", 3)
    assert _one_line(err).startswith(f"backbone.checkpoint: {tmp_path} is a folder; give the file")


def test_state_dict_of_another_architecture_names_the_first_missing_key(tmp_path, own_resnet18):
    path = tmp_path / "mine.safetensors"
    save_file(own_resnet18.state_dict(), str(path))
    with pytest.raises(DataError) as err:
        load_checkpoint(path, "resnet34", 3)
    message = _one_line(err)
    assert "is not a state dict of resnet34: key 'layer1.2.conv1.weight' is missing" in message
    assert "its keys match resnet18" in message
    with pytest.raises(DataError) as err:
        load_checkpoint(path, "vgg16_bn", 3)
    assert "is not a state dict of vgg16_bn: key 'features.0.weight' is missing" in _one_line(err)


def test_an_unexpected_key_is_named(tmp_path, own_resnet18):
    state = {**own_resnet18.state_dict(), "extra.weight": torch.zeros(2)}
    path = tmp_path / "extra.safetensors"
    save_file(state, str(path))
    with pytest.raises(DataError, match=r"key 'extra.weight' is unexpected \(0 missing, 1 unexpected\)"):
        load_checkpoint(path, "resnet18", 3)


def test_classifier_size_must_match_the_dataset(tmp_path, own_resnet18):
    path = tmp_path / "mine.safetensors"
    save_file(own_resnet18.state_dict(), str(path))
    with pytest.raises(DataError) as err:
        load_checkpoint(path, "resnet18", 5, where="datasets.birds.backbone.checkpoint")
    assert _one_line(err) == (f"datasets.birds.backbone.checkpoint: the classifier (fc) of {path} has 3 "
                              f"outputs but the dataset has 5 classes")


def test_a_pickled_model_is_refused_with_how_to_convert_it(tmp_path, own_resnet18):
    path = tmp_path / "whole_model.pt"
    torch.save(own_resnet18, path)
    with pytest.raises(DataError) as err:
        load_checkpoint(path, "resnet18", 3)
    message = _one_line(err)
    assert "needs arbitrary pickle to load (it holds a torchvision.models.resnet.ResNet" in message
    assert "never runs" in message
    assert "from safetensors.torch import save_file" in message
    assert str(path.with_suffix(".safetensors")) in message


def test_a_file_that_is_no_checkpoint(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match="is not a readable safetensors file"):
        load_checkpoint(junk, "resnet18", 3)
    junk_pt = tmp_path / "junk.pt"
    junk_pt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match="is neither a safetensors file nor a PyTorch file"):
        load_checkpoint(junk_pt, "resnet18", 3)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(DataError, match="holds a list, not a state dict"):
        load_checkpoint(listed, "resnet18", 3)


def test_checkpoint_sha256_is_the_files_digest(tmp_path):
    import hashlib

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (3 << 20))
    assert checkpoint_sha256(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


# ------------------------------------------------------------------------------ the train stage
SIZE = 32


@pytest.fixture
def workdir(tmp_path, monkeypatch, own_resnet18):
    from test_train_embed_stages import _tiny_prepared  # 2 classes, 32 px

    _tiny_prepared(tmp_path / "data" / "tiny")
    seed_everything(4)
    two = torchvision.models.resnet18(num_classes=2).eval()
    save_file(two.state_dict(), str(tmp_path / "two.safetensors"))
    save_file(own_resnet18.state_dict(), str(tmp_path / "three.safetensors"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _params(workdir, **backbone):
    params = {"seeds": [0, 1], "datasets": {"tiny": {"source": "synthetic", "n_classes": 2}},
              "backbone": {"architecture": "resnet18", "image_size": SIZE, "epochs": 0, "batch_size": 6,
                           "device": "cpu", **backbone},
              "combinations": ["B4"], "evaluate": {"compare": []}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def test_train_stage_with_epochs_0_stores_the_checkpoint_as_it_is(workdir):
    _params(workdir, checkpoint="two.safetensors")
    assert load_stage("train")(["tiny"]) == 0
    saved = load_file(str(workdir / "two.safetensors"))
    for seed in (0, 1):
        stored = load_file(str(workdir / f"models/tiny/seed{seed}/backbone.safetensors"))
        assert stored.keys() == saved.keys()
        assert all(torch.equal(stored[k], saved[k]) for k in saved)
    meta = json.loads((workdir / "models/tiny/seed0/backbone.json").read_text())
    assert meta["checkpoint"] == {"file": "two.safetensors",
                                  "sha256": checkpoint_sha256(workdir / "two.safetensors")}
    assert meta["epochs"] == 0 and meta["architecture"] == "resnet18"


def test_train_stage_fine_tunes_from_the_checkpoint(workdir):
    _params(workdir, checkpoint="two.safetensors", epochs=1)
    assert load_stage("train")(["tiny"]) == 0
    saved = load_file(str(workdir / "two.safetensors"))
    stored = load_file(str(workdir / "models/tiny/seed0/backbone.safetensors"))
    assert not torch.equal(stored["fc.weight"], saved["fc.weight"])  # trained from it...
    # ...and not from scratch: one epoch at lr 2e-3 leaves the first convolution close to the file.
    drift = (stored["conv1.weight"] - saved["conv1.weight"]).norm() / saved["conv1.weight"].norm()
    assert 0 < drift < 0.5


@pytest.mark.parametrize("backbone, pattern", [
    ({"checkpoint": "missing.safetensors"},
     r"backbone.checkpoint: checkpoint missing.safetensors does not exist"),
    ({"checkpoint": "three.safetensors"},
     r"backbone.checkpoint: the classifier \(fc\) of three.safetensors has 3 outputs but the dataset has 2 classes"),
    ({"checkpoint": "two.safetensors", "architecture": "resnet34"},
     r"is not a state dict of resnet34: key 'layer1.2.conv1.weight' is missing"),
    ({"checkpoint": "two.safetensors", "weights": "imagenet"},
     r"backbone.checkpoint: a checkpoint and weights 'imagenet' both say where the weights come from"),
    ({"architecture": "resnet19"}, r"unknown backbone architecture 'resnet19'.*valid: densenet121, "
                                   r"efficientnet_b0, resnet18, resnet34, resnet50, vgg16_bn"),
])
def test_train_stage_refuses_bad_checkpoints_with_one_line_and_keeps_outputs(workdir, capsys, backbone,
                                                                             pattern):
    _params(workdir, checkpoint="two.safetensors")
    assert load_stage("train")(["tiny"]) == 0
    before = (workdir / "models/tiny/seed0/backbone.safetensors").read_bytes()
    capsys.readouterr()
    _params(workdir, **backbone)
    assert load_stage("train")(["tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(pattern, err), err
    assert (workdir / "models/tiny/seed0/backbone.safetensors").read_bytes() == before
    assert sorted(p.name for p in (workdir / "models").iterdir()) == ["tiny"]  # no temporary left


def test_a_half_precision_checkpoint_is_loaded_as_float32_and_trainable(tmp_path, own_resnet18):
    path = tmp_path / "half.safetensors"
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in own_resnet18.state_dict().items()},
              str(path))
    model = load_checkpoint(path, "resnet18", 3)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    assert not any(t.is_meta for t in model.state_dict().values())
    torch.testing.assert_close(model.conv1.weight, own_resnet18.conv1.weight.half().float())
