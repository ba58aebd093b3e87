"""params.yaml validation: every bad key or value is one line naming it, exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kmx_eval.validation import load_params, parse_params
from kmx_eval.errors import ParamsError

REPO = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())


def with_change(path: str, value, delete: bool = False) -> dict:
    """A copy of the default params with the dotted key ``path`` set to ``value``."""
    import copy

    raw = copy.deepcopy(DEFAULT)
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if delete:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return raw


def test_default_params_are_valid():
    params = load_params(REPO / "params.yaml")
    assert params.combinations == ["B4", "B34", "B234"]
    assert params.explain.concepts.scope == ["global", "class"]
    assert "shapes" in params.datasets
    assert params.backbone_for("shapes").image_size == params.backbone.image_size
    # The default synthetic set is the hard one: classes share parts from a small pool of styles,
    # and parts are told by shape and texture, not colour (issue 24).
    shapes = params.datasets["shapes"]
    assert shapes.n_styles is not None and shapes.n_styles < shapes.n_classes * shapes.n_parts
    assert shapes.colour == "per_image"


# (dotted key, bad value, words the one-line message must contain)
BAD = [
    ("combinatons", ["B4"], ["combinatons", "unknown key", "combinations"]),
    ("backbone.epoch", 3, ["backbone.epoch", "unknown key", "epochs"]),
    ("backbone.epochs", "ten", ["backbone.epochs", "integer"]),
    ("backbone.seed", 1, ["backbone.seed", "seeds"]),
    ("datasets.shapes.source", "imagenet", ["datasets.shapes.source", "imagenet", "synthetic", "digits"]),
    ("datasets.shapes.n_clases", 4, ["datasets.shapes.n_clases", "n_classes"]),
    ("backbone.architecture", "resnet35", ["architecture", "resnet35", "resnet34"]),
    ("combinations", ["B4", "B5"], ["combinations[1]", "B5", "does not have", "B1, B2, B3, B4"]),
    ("combinations", ["B43"], ["combinations[0]", "B43", "B34"]),
    ("combinations", ["B"], ["combinations[0]", "empty"]),
    ("combinations", [], ["combinations", "at least one"]),
    ("explain.explainers", ["margin", "gradcamm"], ["explain.explainers[1]", "gradcamm", "gradcam"]),
    ("evaluate.quantus", ["PointingGame", "Faithfulness"], ["evaluate.quantus[1]", "Faithfulness", "FaithfulnessCorrelation"]),
    ("backbone.image_size", 16, ["backbone.image_size", "16", "32"]),
    ("backbone.device", "gpu", ["backbone.device", "auto", "cuda"]),
    ("features.normalisation", "zscore", ["features.normalisation", "standardize"]),
    ("evaluate.compare", [["B4", "B1234"]], ["evaluate.compare[0]", "B1234", "not in combinations"]),
    ("seeds", [], ["seeds", "at least one"]),
    ("report.explainer", "gradcam_kmeans", ["report.explainer", "gradcam_kmeans", "margin"]),
    ("report.fidelity_metric", "Pointing", ["report.fidelity_metric", "Pointing", "PointingGame"]),
    ("report.primary.faithfulness", "ROADD", ["report.primary.faithfulness", "ROADD", "not computed",
                                              "SymmetricMoRFLeRF", "ROAD"]),
    ("report.primary.faithfulness", "PointingGame", ["report.primary.faithfulness", "localisation metric",
                                                     "SymmetricMoRFLeRF", "ROAD"]),
    ("report.primary.localisation", "PointingGame", ["report.primary.localisation", "report.fidelity_metric",
                                                     "RelevanceMassAccuracy"]),
    ("report.primary.concepts", "concept_nmi", ["report.primary.concepts", "concept_nmi", "concept_nmi_object"]),
    ("head.n_prototypes", 0, ["head.n_prototypes", "greater than or equal to 1"]),
    ("features.block_weighting", "equal", ["features.block_weighting", "equal", "channels", "balanced"]),
    ("explain.concepts.scope", "both", ["explain.concepts.scope", "both", "global", "class"]),
    ("explain.concepts.scope", ["global", "global"], ["explain.concepts.scope", "at most once"]),
    ("combinations", ["B4", "B34_equal"], ["combinations[1]", "B34_equal", "_channels, _balanced"]),
]


@pytest.mark.parametrize("key,value,words", BAD, ids=[b[0] + "=" + str(b[1]) for b in BAD])
def test_bad_params_name_the_key(key, value, words):
    with pytest.raises(ParamsError) as info:
        parse_params(with_change(key, value))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_missing_datasets_section():
    with pytest.raises(ParamsError, match="datasets"):
        parse_params(with_change("datasets", None, delete=True))


def test_yaml_syntax_error(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("backbone: {epochs: 3\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_stage_exits_2_with_one_line_and_no_traceback(tmp_path):
    # The resolve stage, first in every dvc repro, checks every name against its registry.
    bad = with_change("backbone.architecture", "resnet35")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "resolve.py"), "--params", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "resnet35" in lines[0] and "resnet34" in lines[0]


def test_full_dict_writes_every_default_and_round_trips():
    sparse = {"datasets": {"s": {"source": "synthetic", "n_classes": 3}}}
    full = parse_params(sparse).to_full_dict()
    assert full["features"]["resize"] == "bilinear"
    assert full["datasets"]["s"]["n_classes"] == 3 and full["datasets"]["s"]["seed"] == 0
    assert full["datasets"]["s"]["clutter"] == 6  # the source's own fields, not only the base's
    assert parse_params(full).to_full_dict() == full
