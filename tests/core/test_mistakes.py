"""Mistakes a new user makes, each stopped with one line that names the key or file (issue 26).

Read the table :data:`MISTAKES` as a list of what goes wrong and what kmx-eval then says: each row
is a change to a small valid study's params.yaml (or to its files), the stage that stops (``resolve``
for everything params alone decide, which ``make repro`` runs before DVC reads dvc.yaml; ``prepare``
for what only the images show), words its one-line message must hold, and what must survive: every
output of the earlier, valid run (``resolved/``, ``data/``, ``models/``, ``metrics/``, ``reports/``)
keeps its bytes. Each row runs the stage in this process, as ``dvc repro`` would run its command.

Not here: a write failure during the report (tests/report) and a stage interrupted mid-way (tests
of kmx_eval/io.py); which stages a changed key reruns (tests/core/test_stage_params.py).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from stage_loader import load_stage

#: A small valid study: the earlier run every mistake is made on.
STUDY = {
    "seeds": [0],
    "datasets": {
        "tiny": {"source": "synthetic", "n_classes": 3, "train_per_class": 4, "test_per_class": 2},
        "folder": {"source": "imagefolder", "path": "inputs/folder", "masks": "inputs/masks",
                   "backbone": {"image_size": 32}},
    },
    "backbone": {"architecture": "resnet18", "image_size": 64, "threads": 1},
    "combinations": ["B4", "B34"],
    "evaluate": {"compare": [["B4", "B34"]]},
}

#: Outputs of the earlier run, which a stopped stage must leave as they were.
EARLIER_OUTPUTS = ("data/tiny/dataset_dict.json", "data/folder/dataset_dict.json",
                   "models/tiny/seed0/model.safetensors", "metrics/tiny/train.json",
                   "reports/index.html", "reports/summary.md", "reports/tables/index.csv")


def _set(path: str, value) -> Callable[[dict], dict]:
    """A change that sets the dotted ``path`` of the params to ``value``."""
    def change(params: dict) -> dict:
        node = params
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        return params
    change.__doc__ = f"{path}: {value!r}"
    return change


def _text(text: str) -> Callable[[dict], str]:
    """A change that replaces the whole file by ``text``."""
    return lambda params: text


def _datasets_as_list(params: dict) -> dict:
    params["datasets"] = [{name: entry} for name, entry in params["datasets"].items()]
    return params


def _case_twins(params: dict) -> dict:
    params["datasets"]["Tiny"] = copy.deepcopy(params["datasets"]["tiny"])
    return params


def _quantus_twice(params: dict) -> dict:
    params.setdefault("evaluate", {})["quantus"] = ["PointingGame", "RelevanceMassAccuracy", "PointingGame"]
    return params


@dataclass(frozen=True)
class Mistake:
    """One row: what the user did, where it stops and what the message says."""

    case: str                                   # issue 26's case and what the user did
    change: Callable[[dict], dict | str]        # the params the user wrote, from the valid study
    words: tuple[str, ...]                      # the one-line message holds each of these
    stage: str = "resolve"                      # the stage that stops
    files: Callable[[Path], None] | None = None  # what the user did to the files
    no_cuda: bool = False                       # run as on a machine without a CUDA GPU
    status: int = 2                             # the stage's exit status
    extra: dict = field(default_factory=dict)


def _nested_class_folders(root: Path) -> None:
    for cls in ("red", "blue"):
        (root / "inputs/folder" / cls).rename(root / "inputs/folder" / f"{cls}-tmp")
        (root / "inputs/folder" / cls).mkdir()
        (root / "inputs/folder" / f"{cls}-tmp").rename(root / "inputs/folder" / cls / "photos")


def _rgb_masks(root: Path) -> None:
    for mask in sorted((root / "inputs/masks").rglob("*.png")):
        grey = np.asarray(Image.open(mask))
        rgb = np.zeros(grey.shape + (3,), np.uint8)
        rgb[..., 1] = grey  # a green object on black, as a drawing program saves it
        Image.fromarray(rgb).save(mask)


def _checkpoint_folder(root: Path) -> None:
    (root / "my_model").mkdir()
    (root / "my_model" / "model.safetensors").write_bytes(b"")


MISTAKES = [
    Mistake("2: a negative seed", _set("seeds", [-1]), ("seeds[0]", "-1", "4294967295")),
    Mistake("2: a seed of 2**32", _set("seeds", [4294967296]), ("seeds[0]", "4294967295")),
    Mistake("2: a negative dataset seed", _set("datasets.tiny.seed", -1), ("datasets.tiny.seed",)),
    Mistake("3: an image size no memory holds", _set("backbone.image_size", 100000),
            ("backbone.image_size", "100000 px", "GiB", "px fits")),
    Mistake("3: a batch no memory holds", _set("backbone.batch_size", 10**8),
            ("backbone.batch_size", "GiB", "images per batch fit")),
    Mistake("3: an embedding batch no memory holds", _set("features.batch_size", 10**8),
            ("features.batch_size", "GiB")),
    Mistake("6: a checkpoint under ~ that is not there", _set("backbone.checkpoint", "~/no_model.pt"),
            ("backbone.checkpoint", "~/no_model.pt", "does not exist", "read as")),
    Mistake("6: a checkpoint that is a folder", _set("backbone.checkpoint", "my_model"),
            ("backbone.checkpoint", "is a folder", "model.safetensors"), files=_checkpoint_folder),
    Mistake("7: an empty params.yaml", _text(""), ("params.yaml is empty", "datasets")),
    Mistake("7: params.yaml holding a list", _text("- shapes\n"), ("expected a mapping of sections",)),
    Mistake("8: datasets written as a list", _datasets_as_list, ("datasets: is a list", "mapping")),
    Mistake("9: combinations without brackets", _set("combinations", "B4"),
            ("combinations", "write a list, such as [B4]")),
    Mistake("10: an empty combination", _set("combinations", ["B4", ""]),
            ("combinations[1]", "empty block combination")),
    Mistake("11: report.explainer explains the CNN", _set("report.explainer", "gradcam"),
            ("report.explainer", "gradcam", "not the k-means head", "margin")),
    Mistake("13: device cuda on a machine without CUDA", _set("backbone.device", "cuda"),
            ("backbone.device", "no CUDA GPU", "auto"), no_cuda=True),
    Mistake("14: a Quantus metric listed twice", _quantus_twice, ("evaluate.quantus", "PointingGame", "twice")),
    Mistake("14: a combination compared with itself", _set("evaluate.compare", [["B4", "B4"]]),
            ("evaluate.compare[0]", "itself")),
    Mistake("14: a pair compared twice", _set("evaluate.compare", [["B4", "B34"], ["B34", "B4"]]),
            ("evaluate.compare[1]", "already")),
    Mistake("15: datasets differing only in case", _case_twins, ("'tiny' and 'Tiny'", "case-insensitive")),
    Mistake("16: mixed precision with device cpu", _set("backbone.mixed_precision", True),
            ("backbone.mixed_precision", "CUDA only"), extra={"device": "cpu"}),
    Mistake("4: class folders with sub-folders", lambda p: p, ("blue/photos/0.png", "sits in a sub-folder of its class folder blue/"), stage="prepare", files=_nested_class_folders),
    Mistake("5: RGB masks", lambda p: p, ("is an RGB image with colours", "grey (L) PNG"),
            stage="prepare", files=_rgb_masks),
]


def _make_inputs(root: Path) -> None:
    """A two-class image folder with masks (and nothing else) under ``root/inputs``."""
    rng = np.random.default_rng(0)
    for cls in ("red", "blue"):
        for folder in ("folder", "masks"):
            (root / "inputs" / folder / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
                root / "inputs/folder" / cls / f"{i}.png")
            mask = np.zeros((24, 24), np.uint8)
            mask[4:16, 4:16] = 255
            Image.fromarray(mask).save(root / "inputs/masks" / cls / f"{i}.png")


def _earlier_run(root: Path) -> dict[str, str]:
    """The valid study resolved, and stand-ins for its other outputs; their sha256 by path."""
    _make_inputs(root)
    (root / "params.yaml").write_text(yaml.safe_dump(STUDY, sort_keys=False))
    assert load_stage("resolve")([]) == 0
    for name in EARLIER_OUTPUTS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"earlier run: {name}\n")
    return _digest(root)


def _digest(root: Path) -> dict[str, str]:
    outputs = [p for top in ("resolved", "data", "models", "metrics", "reports")
               for p in sorted((root / top).rglob("*")) if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in outputs}


@pytest.fixture()
def study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path, _earlier_run(tmp_path)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.case for m in MISTAKES])
def test_each_mistake_stops_with_one_line_and_loses_nothing(mistake, study, capsys, monkeypatch):
    root, before = study
    if mistake.no_cuda:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = copy.deepcopy(STUDY)
    if mistake.extra.get("device"):
        params["backbone"]["device"] = mistake.extra["device"]
    changed = mistake.change(params)
    text = changed if isinstance(changed, str) else yaml.safe_dump(changed, sort_keys=False)
    (root / "params.yaml").write_text(text)
    if mistake.files:
        mistake.files(root)
    capsys.readouterr()
    args = ["folder"] if mistake.stage == "prepare" else []
    status = load_stage(mistake.stage)(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert status == mistake.status, err
    assert "Traceback" not in err
    assert len(errors) == 1, err
    assert errors[0].startswith(f"kmx-eval {mistake.stage}: error: ")
    for word in mistake.words:
        assert word in errors[0], f"{word!r} not in: {errors[0]}"
    assert _digest(root) == before  # the earlier run's outputs, resolved/ included, as they were


def test_mixed_precision_with_device_auto_on_a_machine_without_cuda_is_a_warning(study, caplog, monkeypatch):
    """16: the same params run mixed precision on a GPU machine, so here it is a warning, not a stop."""
    root, _ = study
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (root / "params.yaml").write_text(yaml.safe_dump(_set("backbone.mixed_precision", True)(
        copy.deepcopy(STUDY)), sort_keys=False))
    assert load_stage("resolve")([]) == 0
    assert "backbone.mixed_precision is ignored on this machine" in caplog.text


def test_device_cuda_passes_where_the_stages_run_on_other_machines(study, monkeypatch):
    """13: kmx-eval launch submits from a node that may have no GPU; each job checks its own."""
    root, _ = study
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("KMX_EVAL_OTHER_MACHINE", "1")
    (root / "params.yaml").write_text(yaml.safe_dump(_set("backbone.device", "cuda")(
        copy.deepcopy(STUDY)), sort_keys=False))
    assert load_stage("resolve")([]) == 0


def test_a_dataset_path_through_a_symlink_is_prepared(study, capsys):
    """1: ``path`` and ``masks`` through symlinks (the listing gives real paths)."""
    root, _ = study
    (root / "inputs/link").symlink_to(root / "inputs/folder", target_is_directory=True)
    (root / "inputs/mask_link").symlink_to(root / "inputs/masks", target_is_directory=True)
    params = _set("datasets.folder.path", "inputs/link")(copy.deepcopy(STUDY))
    params["datasets"]["folder"]["masks"] = "inputs/mask_link"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert load_stage("prepare")(["folder"]) == 0, capsys.readouterr().err
    assert (root / "data/folder/dataset_dict.json").read_text() != "earlier run: data/folder/dataset_dict.json\n"


def test_make_repro_runs_the_validator_before_dvc_reads_dvc_yaml():
    """7-10: malformed params meet the resolve stage first, not DVC's templating of dvc.yaml."""
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    recipe = makefile.split("\nrepro:", 1)[1].split("\n\n", 1)[0]
    assert recipe.index("stages/resolve.py") < recipe.index("dvc repro")
