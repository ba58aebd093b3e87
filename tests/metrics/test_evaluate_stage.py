"""The evaluate stage end to end: tiny data with masks and parts, a random ResNet18, real fit and
explain stages, then evaluate for a block combination and for the CNN's baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import yaml

from kmx_eval import paths
from kmx_eval.config import EvaluateConfig
from kmx_eval.metrics.concept_fidelity import CONCEPT_FLOORS
from stage_loader import load_stage as _stage

SIZE, N_CLASSES, SEED, N_IMAGES = 32, 3, 2, 6
KEYPOINTS = ("top", "bottom")




def _split(n: int, rng: np.random.Generator) -> dict:
    images, labels, masks, parts, keypoints = [], [], [], [], []
    for i in range(n):
        c = i % N_CLASSES
        img = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        r, q = rng.integers(2, 14, 2)
        part = np.zeros((SIZE, SIZE), dtype=np.uint8)
        part[r:r + 8, q:q + 16] = 1
        part[r + 8:r + 16, q:q + 16] = 2
        img[part == 1, c] = 230
        img[part == 2, (c + 1) % 3] = 200
        images.append(img)
        labels.append(c)
        masks.append(part > 0)
        parts.append(part)
        # named part locations (x, y, visible) at each part's centre; the first image's bottom not annotated
        keypoints.append([[q + 8.0, r + 4.0, 1.0], [q + 8.0, r + 12.0, float(i > 0)]])
    return {"images": images, "labels": labels, "masks": masks, "parts": parts, "keypoints": keypoints}


def _copies(split: dict, rng: np.random.Generator):
    """Part-intervention copies of the toy images: a part's pixels set to background grey, the
    background replaced by new noise (what the synthetic source renders, in the toy's terms)."""
    from kmx_eval.data.interventions import Interventions

    images, parts = np.stack(split["images"]), np.stack(split["parts"])
    without = np.stack([np.where((parts == k)[..., None], 30, images) for k in (1, 2)], axis=1).astype(np.uint8)
    only = np.where((parts > 0)[..., None], images, rng.integers(0, 60, images.shape)).astype(np.uint8)
    return Interventions(without, only)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from kmx_eval import io, paths
    from kmx_eval.data import ImageDataset, load_prepared, save_prepared
    from kmx_eval.data.base import assemble
    from kmx_eval.data.interventions import FOLDER, copies_dataset
    from kmx_eval.models.backbone import build_backbone, save_backbone
    from kmx_eval.models.blocks import BlockExtractor
    from kmx_eval.models.embeddings import extract_embedding_cache
    from kmx_eval.seeding import seed_everything

    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    train, test = _split(15, rng), _split(9, rng)
    dd = assemble({"train": train, "test": test}, ["a", "b", "c"], "toy", keypoint_names=KEYPOINTS)
    save_prepared(dd, root / "data/toy", extras={FOLDER: copies_dataset(np.arange(9), _copies(test, rng))})
    seed_everything(0)
    backbone = build_backbone("resnet18", N_CLASSES).eval()
    save_backbone(backbone, root / f"models/toy/seed{SEED}",
                  {"architecture": "resnet18", "n_classes": N_CLASSES, "class_names": ["a", "b", "c"],
                   "image_size": SIZE, "weights": "none", "seed": SEED, "test_accuracy": 0.0, "epochs": 0})
    dd = load_prepared(root / "data/toy")
    cache = extract_embedding_cache(BlockExtractor(backbone), ImageDataset(dd["train"]),
                                    ImageDataset(dd["test"]), batch_size=8)
    io.save_npz(root / f"features/toy/seed{SEED}.npz", cache)
    params = {
        "seeds": [SEED],
        "datasets": {"toy": {"source": "synthetic", "n_classes": N_CLASSES, "seed": 0}},
        "backbone": {"architecture": "resnet18", "image_size": SIZE, "device": "cpu"},
        "combinations": ["B34"],
        "features": {"normalisation": "standardize", "batch_size": 8},
        "head": {"n_prototypes": 2, "n_init": 1},
        "explain": {"n_images": N_IMAGES, "batch_size": 4, "ig_steps": 2,
                    "explainers": ["margin", "margin_centred", "cam", "random"],
                    "concepts": {"n_concepts": 3, "n_images": 15, "locations_per_image": 4,
                                 "batch_size": 16}},
        "evaluate": {"compare": [], "purity_m": 3, "bootstrap": {"n_resamples": 50},
                     "faithfulness": {"nr_runs": 3, "n_steps": 4, "regions_evaluation": 3}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert _stage("fit")(["toy", "B34"]) == 0
        assert _stage("explain")(["toy", "B34"]) == 0
        assert _stage("explain_cnn")(["toy"]) == 0
        assert _stage("evaluate")(["toy", "B34"]) == 0
        assert _stage("evaluate")(["toy", paths.BASELINES]) == 0
        yield root


def _read(root: Path, combination: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    folder = root / "metrics/toy" / combination / "evaluate"
    files = (folder / "metrics.csv", folder / "samples.csv", root / paths.curves("toy", combination))
    return tuple(pd.read_csv(f, keep_default_na=True) for f in files)


def test_combination_tables(workdir):
    from kmx_eval.metrics.tidy import TIDY_COLUMNS

    metrics, samples, curves = _read(workdir, "B34")
    assert list(metrics.columns) == list(TIDY_COLUMNS)
    assert set(metrics.kind) == {"head", "prototypes", "explainer", "concepts", "sharpness", "interventions",
                                 "keypoints"}
    # part interventions: n_parts + 1 points per explainer and the model's background agreement
    inter = metrics[metrics.kind == "interventions"].set_index(["method", "metric"])
    assert set(inter.index) == {(m, k) for m in ("margin", "margin_centred", "random", "oracle")
                                for k in ("part_rank_correlation", "part_deletion_1", "part_deletion_2")
                                } | {("kmeans", "background_agreement")}
    assert inter.loc[("kmeans", "background_agreement"), "n"] == N_IMAGES
    assert inter.loc[("margin", "part_rank_correlation"), "chance"] == 0.0
    heads = metrics[metrics.kind == "head"].set_index(["method", "metric"])
    assert set(heads.index) == {("kmeans", "accuracy"), ("probe", "accuracy"), ("kmeans", "agreement"),
                                ("probe", "agreement")}
    assert (heads.n == 9).all()  # the whole test split
    protos = metrics[metrics.kind == "prototypes"]
    # no linear: standardize is not the CNN's space; the probe's rows are read twice (as stored and
    # canonical), beside the matched-capacity reference: the class means of the same space
    assert set(protos.method) == {"kmeans", "probe", "probe_canonical", "class_means"}
    assert set(protos.metric) == {"proximity", "separation", "purity", "decision_agreement", "diversity_scaled",
                                  "diversity_kmex"}
    by = protos.set_index(["method", "metric"])
    assert by.loc[("kmeans", "decision_agreement"), "value"] == 1.0  # its own nearest-prototype rule
    assert by.loc[("class_means", "decision_agreement"), "value"] == 1.0
    assert "one prototype per class" in by.loc[("class_means", "proximity"), "note"]
    # per-prototype values in samples.csv, one per prototype (3 classes: 3 class means)
    per_proto = samples[(samples.method == "class_means") & (samples.metric == "separation")]
    assert sorted(per_proto["sample"]) == [0, 1, 2]
    expl = metrics[metrics.kind == "explainer"]
    # the ceiling of each localisation metric on the model's grid, per image like a method; no map above it
    ceiling = expl[expl.method == "ceiling"].set_index("metric")
    assert set(ceiling.index) == set(expl[expl.category == "localisation"].metric)
    assert "maximum over maps on the" in ceiling["note"].iloc[0]
    others = expl[(expl.category == "localisation") & (expl.method != "ceiling")].groupby("metric")["value"].max()
    assert (ceiling["value"].reindex(others.index) >= others - 1e-6).all()
    expl = expl[expl.method != "ceiling"]
    # the random floor and the oracle on the same model; every metric of the default evaluate.quantus each
    n_metrics = len(EvaluateConfig().quantus)
    assert set(expl.method) == {"margin", "margin_centred", "random", "oracle"}
    assert len(expl) == 4 * n_metrics
    # margin and margin_centred differ by a per-image constant: every result is computed once
    centred = expl[expl.method == "margin_centred"].set_index("metric")
    margin = expl[expl.method == "margin"].set_index("metric")
    assert centred["note"].str.contains("computed once for margin").all()
    assert (centred["value"].fillna(-9) == margin["value"].fillna(-9)).all()
    loc = expl[expl.category == "localisation"]
    assert loc.value.notna().all() and loc.chance.notna().all()
    assert (loc.ci_low <= loc.value + 1e-12).all() and (loc.value <= loc.ci_high + 1e-12).all()
    concepts = metrics[metrics.kind == "concepts"]
    assert set(concepts.metric) == {f"concept_{s}_{r}" for s in ("purity", "ari", "nmi", "ami")
                                    for r in ("object", "image")}
    # the structured floors (colour k-means, SLIC, grid cells with K = 3) are rows of their own, without chance
    assert set(concepts.method) == {"concepts_global", "concepts_class", "oracle", *CONCEPT_FLOORS}
    assert concepts[~concepts.method.isin(CONCEPT_FLOORS)].chance.notna().all()
    assert concepts[concepts.method.isin(CONCEPT_FLOORS)].chance.isna().all()
    # one score per evaluation image for every explainer x metric
    ex_samples = samples[samples.method.isin(["margin", "margin_centred"])
                         & samples.metric.isin(EvaluateConfig().quantus)]
    assert len(ex_samples) == 2 * n_metrics * N_IMAGES
    assert set(curves.method) == {"margin", "margin_centred", "random", "oracle"}
    settings = json.loads((workdir / "metrics/toy/B34/evaluate/settings.json").read_text())
    # 4 steps asked; 3 x 32 x 32 values in steps that divide 32 x 32: 3 steps of 1024 is nearest
    assert settings["quantus"]["PixelFlipping"]["n_steps"] == 3
    assert settings["quantus"]["FaithfulnessCorrelation"]["nr_runs"] == 3
    assert settings["n_images"] == N_IMAGES and settings["purity_m"] == 3
    summary = json.loads((workdir / "metrics/toy/B34/evaluate.json").read_text())
    assert "kmeans/accuracy" in summary[f"seed{SEED}"]
    assert "margin/RelevanceMassAccuracy" in summary[f"seed{SEED}"]


def test_keypoint_rows_sit_between_the_floor_and_the_ceiling_of_their_grid(workdir):
    """The part-level pointing game at the named part locations and the concept-part alignment."""
    from kmx_eval.data import load_keypoints, load_prepared
    from kmx_eval.io import load_npz
    from kmx_eval.metrics.parts import part_pointing_game, pointing_chance

    metrics, samples, _ = _read(workdir, "B34")
    rows = metrics[metrics.kind == "keypoints"]
    pointing = rows[rows.metric == "keypoint_pointing"].set_index("method")
    # every map, and the ceiling of the model's grid (no pixel-level map among the B34 maps)
    assert set(pointing.index) == {"margin", "margin_centred", "random", "oracle", "ceiling"}
    assert (pointing.category == "localisation").all() and (pointing.n == N_IMAGES).all()
    assert (pointing.value <= pointing.loc["ceiling", "value"] + 1e-12).all()
    assert "maximum over maps on the" in pointing.loc["ceiling", "note"]
    # the values are the pointing game of the stored maps at the tolerance the settings record
    maps = load_npz(paths.maps_file("toy", "B34", SEED))
    settings = json.loads((workdir / "metrics/toy/B34/evaluate/settings.json").read_text())
    tolerance = settings["keypoint_tolerance_px"]
    assert tolerance == pytest.approx(EvaluateConfig().keypoint_tolerance * SIZE)
    xy, visible = load_keypoints(load_prepared(workdir / "data/toy")["test"], maps["indices"])
    for method in ("margin", "random"):
        hits = part_pointing_game(maps[method], xy, visible, tolerance=tolerance)
        assert pointing.loc[method, "value"] == pytest.approx(np.nanmean(hits), abs=5e-6)
        per_image = samples[(samples.method == method) & (samples.metric == "keypoint_pointing")]
        np.testing.assert_allclose(per_image.sort_values("sample")["value"],
                                   hits[np.argsort(maps["indices"])], atol=5e-6)
    assert pointing.loc["margin", "chance"] == pytest.approx(
        pointing_chance((SIZE, SIZE), xy, visible, tolerance=tolerance).mean(), abs=5e-6)
    # the concept maps and the structured floors against the part names: AMI, chance 0, an interval
    ami = rows[rows.metric == "concept_part_ami"].set_index("method")
    assert set(ami.index) == {"concepts_global", "concepts_class", *CONCEPT_FLOORS}
    assert (ami.chance == 0).all() and (ami.value <= 1).all()
    finite = ami[ami.value.notna()]  # six images: the interval is wide, but it is one
    assert len(finite) == len(ami) and (finite.ci_low <= finite.ci_high).all()
    assert (finite.ci_low >= -1).all() and (finite.ci_high <= 1 + 1e-9).all()
    assert (ami.n == 2 * N_IMAGES - int((maps["indices"] == 0).any())).all()  # visible parts only


def test_baseline_tables(workdir):
    from kmx_eval import paths

    metrics, samples, _ = _read(workdir, paths.BASELINES)
    heads = metrics[metrics.kind == "head"]
    assert list(heads.method) == ["cnn"] and list(heads.metric) == ["accuracy"]
    protos = metrics[metrics.kind == "prototypes"]
    # the CNN's fc in the raw pooled deepest-block space, with the class means of that space
    assert set(protos.method) == {"linear", "linear_canonical", "class_means"} and len(protos) == 18
    assert set(metrics[metrics.kind == "explainer"].method) == {"cam", "random", "oracle", "oracle_pixel", "ceiling"}
    assert "concepts" not in set(metrics.kind)


def test_evaluate_is_deterministic(workdir):
    before = (workdir / "metrics/toy/B34/evaluate/metrics.csv").read_bytes()
    samples = (workdir / "metrics/toy/B34/evaluate/samples.csv").read_bytes()
    assert _stage("evaluate")(["toy", "B34"]) == 0
    assert (workdir / "metrics/toy/B34/evaluate/metrics.csv").read_bytes() == before
    assert (workdir / "metrics/toy/B34/evaluate/samples.csv").read_bytes() == samples


def test_unknown_combination_is_one_line(workdir, capsys):
    assert _stage("evaluate")(["toy", "B4"]) == 2
    assert "'B4'" in capsys.readouterr().err
