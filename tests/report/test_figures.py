"""Figures: trade-off points, Pareto front, shared colour scales, byte-stable PNG and SVG."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from report_fixtures import COMBINATIONS, N_EVAL, synthetic_images, synthetic_maps

from kmx_eval.report import figures, galleries, stats


def test_pareto_front_keeps_only_undominated_points():
    x = np.array([0.97, 0.95, 0.90, 0.90, 0.80, np.nan])
    y = np.array([0.20, 0.30, 0.50, 0.40, 0.50, 0.90])
    front = figures.pareto_front(x, y)
    # (0.90, 0.40) loses to (0.90, 0.50); (0.80, 0.50) loses to (0.90, 0.50); NaN is never on it.
    assert front.tolist() == [True, True, True, False, False, False]
    # Lower-is-better y flips which points dominate.
    assert figures.pareto_front(x, y, higher_y=False).tolist() == [True, False, False, False, False, False]


def test_tradeoff_points_read_kmeans_accuracy_and_margin_fidelity(frames):
    agg = stats.aggregate_seeds(frames[0])
    points = figures.tradeoff_points(agg, "shapes", list(COMBINATIONS), fidelity_metric="RelevanceMassAccuracy")
    combos = points[points["group"] == "combination"].set_index("label")
    for comb in COMBINATIONS:
        acc = stats.lookup(agg, dataset="shapes", combination=comb, method="kmeans", metric="accuracy")
        fid = stats.lookup(agg, dataset="shapes", combination=comb, method="margin",
                            metric="RelevanceMassAccuracy")
        assert combos.loc[comb, "x"] == acc["value"].iloc[0]
        assert combos.loc[comb, "y"] == fid["value"].iloc[0]
        assert combos.loc[comb, "y_low"] == fid["ci_low"].iloc[0]
    baselines = points[points["group"] == "baseline"]
    # The random map is a floor (a band), never a point (issue 22).
    assert set(baselines["method"]) == {"cam", "gradcam", "integrated_gradients"}
    cnn = stats.lookup(agg, dataset="shapes", combination="cnn", method="cnn", metric="accuracy")
    assert (baselines["x"] == cnn["value"].iloc[0]).all()
    # Without masks the fidelity is missing and the note says why.
    digits = figures.tradeoff_points(agg, "digits", list(COMBINATIONS), fidelity_metric="RelevanceMassAccuracy")
    assert digits["y"].isna().all() and digits["note"].str.contains("no masks").all()


def test_scaled_maps_share_a_symmetric_scale_when_signed():
    a = np.array([[2.0, -1.0]])
    b = np.array([[0.5, 0.25]])
    (sa, sb), signed = galleries.scaled_maps([a, b])
    assert signed
    assert np.abs(sa).max() == 1.0 and np.abs(sb).max() == 1.0
    assert sa.tolist() == [[1.0, -0.5]]
    (sz,), signed = galleries.scaled_maps([np.zeros((2, 2))])
    assert not signed and (sz == 0).all()


def _build_figures(frames):
    agg = stats.aggregate_seeds(frames[0])
    images, masks, _ = synthetic_images(N_EVAL, 2)
    maps = {f"{c} margin": synthetic_maps(np.arange(3), masks, c, ["margin"], 0, True)["margin"]
            for c in COMBINATIONS}
    concepts = synthetic_maps(np.arange(3), masks, "B234", [], 0, True)["concepts_global"]
    return {
        "tradeoff": figures.tradeoff_figure(
            figures.tradeoff_points(agg, "shapes", list(COMBINATIONS), fidelity_metric="RelevanceMassAccuracy"),
            "shapes", fidelity_metric="RelevanceMassAccuracy"),
        "gallery": galleries.explanation_gallery(images[:3], maps, masks=masks[:3], concepts=concepts),
        "curves": figures.curves_figure(frames[2], "shapes", list(COMBINATIONS) + ["cnn"]),
    }


def test_figures_are_byte_identical_across_runs(frames):
    first = {k: figures.render(f) for k, f in _build_figures(frames).items()}
    second = {k: figures.render(f) for k, f in _build_figures(frames).items()}
    for name in first:
        for kind in ("png", "svg"):
            a, b = first[name][kind], second[name][kind]
            assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest(), f"{name}.{kind} differs"
    png, svg = first["tradeoff"]["png"], first["tradeoff"]["svg"].decode()
    assert png.startswith(b"\x89PNG") and b"Software" not in png
    assert svg.lstrip().startswith("<?xml") and "<dc:date>" not in svg


def test_prototype_gallery_shows_every_class_and_prototype():
    images, _, _ = synthetic_images(6, 1)
    kmeans = np.array([[0, 1], [2, 3], [4, 5]])
    fig = galleries.prototype_gallery(dict(enumerate(images)), kmeans, linear=np.array([5, 4, 3]),
                                      class_names=["a", "b", "c"])
    assert len(fig.axes) == 3 * (2 + 1)
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert "#5" in labels and "#0" in labels
    many = galleries.prototype_gallery(dict(enumerate(images)), np.zeros((30, 2), int), max_classes=4)
    assert len(many.axes) == 4 * 2
    assert "first 4 of 30 classes" in many.get_suptitle()


@pytest.mark.parametrize("missing", ["masks", "concepts"])
def test_explanation_gallery_without_masks_or_concepts(missing):
    images, masks, _ = synthetic_images(2, 0)
    maps = {"B4 margin": np.ones((2, 32, 32)), "IG": np.ones((2, 32, 32))}
    kwargs = {"masks": masks, "concepts": np.zeros((2, 32, 32), np.int16)}
    kwargs[missing] = None
    fig = galleries.explanation_gallery(images, maps, **kwargs)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:1] == ["image"] and titles[-2:] == ["B4 margin", "IG"]
    assert {"masks": "mask", "concepts": "concepts"}[missing] not in titles


# ------------------------------------------------------------ trade-off on each grid's own scale (issue 22)
def _with_rooms(agg, dataset="shapes"):
    """``agg`` plus a grid floor (random_grid) and ceiling row per model, and a random map that would
    beat every head, as the controls of a study that has them."""
    rows = []
    for comb in list(COMBINATIONS) + ["cnn"]:
        for method, value in (("random_grid", 0.1 + 0.05 * len(comb)), ("ceiling", 0.9), ("ceiling_pixel", 1.0),
                              ("oracle", 0.99)):
            rows.append(dict(dataset=dataset, combination=comb, kind="explainer", method=method,
                             category="localisation", metric="RelevanceMassAccuracy", value=value,
                             ci_low=value - 0.01, ci_high=value + 0.01, seed_sd=np.nan, n_seeds=2, n=6,
                             n_missing=0, chance=np.nan, higher_is_better=True, note="", interval="wilson"))
    return pd.concat([agg, pd.DataFrame(rows)], ignore_index=True)


def test_tradeoff_is_drawn_between_each_grids_floor_and_ceiling(frames):
    agg = _with_rooms(stats.aggregate_seeds(frames[0]))
    points = figures.tradeoff_points(agg, "shapes", list(COMBINATIONS), fidelity_metric="RelevanceMassAccuracy")
    assert figures.normalised_scale(points)
    assert not set(points["method"]) & figures.CONTROL_MAPS  # floors and ceilings are no points
    for p in points.itertuples():
        floor = 0.1 + 0.05 * len(p.combination)
        ceiling = 1.0 if p.method == "integrated_gradients" else 0.9  # a pixel map against the pixel ceiling
        if p.method == "integrated_gradients":
            floor = stats.lookup(agg, dataset="shapes", combination="cnn", method="random",
                                 metric="RelevanceMassAccuracy")["value"].iloc[0]
        assert p.y_norm == pytest.approx((p.y - floor) / (ceiling - floor))
        assert p.y_norm_low <= p.y_norm <= p.y_norm_high
    # Without the grid rows: the raw values, with the random map and the oracle as bands.
    raw = figures.tradeoff_points(stats.aggregate_seeds(frames[0]), "shapes", list(COMBINATIONS),
                                  fidelity_metric="RelevanceMassAccuracy")
    assert not figures.normalised_scale(raw) and raw["y_norm"].isna().all()
    assert np.isfinite(raw.loc[raw["group"] == "baseline", "raw_floor"]).all()
    fig = figures.tradeoff_figure(points, "shapes", fidelity_metric="RelevanceMassAccuracy")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any(label.startswith("floor: random map on the map's grid") for label in labels)
    assert any(label.startswith("ceiling: best map of the grid") for label in labels)
    assert "(value - floor) / (ceiling - floor)" in fig.axes[0].get_ylabel()


def test_the_pareto_front_runs_through_compared_heads_only(frames):
    agg = stats.aggregate_seeds(frames[0])
    # A random map on the CNN that beats every head on fidelity at the CNN's accuracy: before issue 22 the
    # front ran through it.
    rand = (agg["dataset"] == "shapes") & (agg["combination"] == "cnn") & (agg["method"] == "random") & (
        agg["metric"] == "RelevanceMassAccuracy")
    agg.loc[rand, ["value", "ci_low", "ci_high"]] = [0.99, 0.98, 1.0]
    for frame in (agg, _with_rooms(agg)):
        points = figures.tradeoff_points(frame, "shapes", list(COMBINATIONS), fidelity_metric="RelevanceMassAccuracy")
        front = figures.tradeoff_front(points)
        assert len(front) and not set(front["method"]) & figures.CONTROL_MAPS
        assert set(front["label"]) <= set(points["label"])
        # Every compared point off the front is dominated by one on it.
        col = "y_norm" if figures.normalised_scale(points) else "y"
        for p in points[~points["label"].isin(front["label"])].itertuples():
            assert ((front["x"] >= p.x) & (front[col] >= getattr(p, col))).any()
