"""The study profiles under profiles/ are valid params files that keep their promises."""

from pathlib import Path

import pytest

from kmx_eval.config import load_params

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
