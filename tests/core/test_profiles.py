"""The study profiles under profiles/ are valid params files that keep their promises."""

import urllib.error
from pathlib import Path

import pytest

from kmx_eval import validation
from kmx_eval.config import load_params
from kmx_eval.models.backbone import ARCHITECTURES

PROFILES = sorted((Path(__file__).resolve().parents[2] / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_every_profile_is_a_valid_params_file(path):
    params = load_params(path)
    assert params.datasets and params.combinations


def test_thorough_profile_has_seeds_the_hard_set_and_a_fine_grid():
    params = load_params(Path(__file__).resolve().parents[2] / "profiles" / "thorough.yaml")
    assert len(params.seeds) >= 3
    shapes = params.datasets["shapes"]
    assert shapes.n_styles is not None and shapes.n_styles < shapes.n_classes * shapes.n_parts
    # B2 is layer2 at stride 8: 128 px gives it a 16 x 16 grid (B4: 4 x 4).
    assert params.backbone_for("shapes").image_size // 8 >= 16
    assert any(c.startswith("B2") for c in params.combinations)  # a combination with B2's grid
    assert ("B4", "B234") in [tuple(p) for p in params.evaluate.compare]


PAPER = Path(__file__).resolve().parents[2] / "profiles" / "paper.yaml"
PAPER_SYNTHETIC = PAPER.with_name("paper_synthetic.yaml")


def _grids(params, dataset: str) -> dict[str, int]:
    cfg = params.backbone_for(dataset)
    shapes = ARCHITECTURES.get(cfg.architecture).shapes(cfg.image_size)
    return {f"B{block}": shape[1] for block, shape in shapes.items()}


@pytest.mark.parametrize("path", [PAPER, PAPER_SYNTHETIC], ids=["cub", "synthetic"])
def test_the_paper_profiles_run_the_papers_grid_and_combinations(path):
    params = validation.load_params(path)
    (name,) = params.datasets
    cfg = params.backbone_for(name)
    assert (cfg.architecture, cfg.image_size) == ("resnet34", 224)
    assert {b: g for b, g in _grids(params, name).items() if b in ("B2", "B3", "B4")} == \
        {"B2": 28, "B3": 14, "B4": 7}
    assert params.combinations == ["B4", "B34", "B234"]
    assert params.head.n_prototypes == 10  # KMEx's prototypes per class on CUB-200
    assert ("B4", "B234") in [tuple(p) for p in params.evaluate.compare]


def test_the_paper_profile_is_cub_from_a_path_with_imagenet_weights_on_a_gpu():
    params = validation.load_params(PAPER)
    cub = params.datasets["cub"]
    assert cub.source == "cub" and cub.path and cub.classes is None  # all 200 species
    cfg = params.backbone_for("cub")
    assert (cfg.weights, cfg.checkpoint, cfg.device) == ("imagenet", None, "cuda")
    synthetic = validation.load_params(PAPER_SYNTHETIC)
    assert [d.source for d in synthetic.datasets.values()] == ["synthetic"]
    assert [d.colour for d in synthetic.datasets.values()] == ["per_image"]  # parts not told by colour
    assert synthetic.backbone.device == "auto"  # runs where there is no GPU, too


def test_the_paper_profiles_weights_come_from_the_torch_hub_cache(monkeypatch, tmp_path):
    """paper.yaml's backbone, built as the train stage builds it, from a cached file, offline."""
    import torch
    import torchvision

    from kmx_eval.models.architectures import get_architecture
    from kmx_eval.models.backbone import build_backbone

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("the network is unreachable in this test")

    cfg = validation.load_params(PAPER).backbone_for("cub")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("torch.hub.download_url_to_file", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    builder = get_architecture(cfg.architecture).builder
    url = torchvision.models.get_model_weights(builder)["IMAGENET1K_V1"].url
    torch.manual_seed(3)
    stored = builder(weights=None).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(stored, tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])
    model = build_backbone(cfg.architecture, 200, cfg.weights)  # kmx_eval/pipeline/train.py's call
    got = model.state_dict()
    assert got["fc.weight"].shape[0] == 200
    assert all(torch.equal(got[k], v) for k, v in stored.items() if not k.startswith("fc."))


def test_the_two_paper_profiles_differ_only_in_their_data_and_how_the_backbone_starts():
    cub, synthetic = validation.load_params(PAPER), validation.load_params(PAPER_SYNTHETIC)
    skip = {"datasets", "backbone"}
    assert cub.model_dump(exclude=skip) == synthetic.model_dump(exclude=skip)
    start = {"weights", "lr", "device"}  # ImageNet weights fine-tuned on a GPU, or trained from scratch
    assert cub.backbone.model_dump(exclude=start) == synthetic.backbone.model_dump(exclude=start)
