"""The report's tables (kmx_eval/report/tables.py) and their renderings (kmx_eval/report/table.py):
best-value marking, every dataset and combination, Markdown and LaTeX."""

from __future__ import annotations

import pandas as pd
import pytest

from kmx_eval.metrics import tidy
from kmx_eval.report import stats, table, tables

from report_fixtures import COMBINATIONS, DATASETS, tidy_row



@pytest.mark.parametrize("higher", [True, False])
def test_best_marking_respects_direction_per_dataset(higher):
    rows = []
    for ds, values in (("d1", (0.2, 0.5, 0.9)), ("d2", (0.7, 0.3, 0.3))):
        for comb, v in zip(COMBINATIONS, values):
            rows.append(tidy_row(dataset=ds, combination=comb, value=v, higher_is_better=higher))
    agg = stats.aggregate_seeds(tidy.frame(rows))
    t = tables.metric_table(agg, name="t", title="t", caption="", categories=["localisation"],
                            datasets=["d1", "d2"], combinations=list(COMBINATIONS), with_chance=True)
    best = t.best["M"]
    if higher:
        assert best[("d1", "B234", "margin")] and best[("d2", "B4", "margin")]
        assert best.sum() == 2
    else:  # lower is better: the minimum wins, ties are all marked
        assert best[("d1", "B4", "margin")]
        assert best[("d2", "B34", "margin")] and best[("d2", "B234", "margin")]
        assert best.sum() == 3
    assert not t.best["M chance"].any()  # chance levels are never "best"
    # The long form carries the same marks.
    long = t.numbers[t.numbers["column"] == "M"]
    assert long["best"].sum() == best.sum()


def test_no_best_without_direction_or_competitor():
    agg = stats.aggregate_seeds(tidy.frame([tidy_row(dataset="d1")]))
    t = tables.metric_table(agg, name="t", title="t", caption="", categories=["localisation"])
    assert not t.best.to_numpy().any()
    agg["higher_is_better"] = pd.Series([None] * len(agg), index=agg.index, dtype=object)
    two = pd.concat([agg, agg.assign(combination="B34", value=0.9)])
    t = tables.metric_table(two, name="t", title="t", caption="", categories=["localisation"])
    assert not t.best.to_numpy().any()


def test_report_tables_hold_every_dataset_and_combination(frames):
    metrics, _, _ = frames
    agg = stats.aggregate_seeds(metrics)
    combos = list(COMBINATIONS) + ["cnn"]
    by_name = {t.name: t for t in tables.report_tables(agg, datasets=DATASETS, combinations=combos)}
    acc = by_name["accuracy"]
    keys = {(d, c) for d, c, _ in acc.cells.index}
    assert keys == {(d, c) for d in DATASETS for c in combos}
    # Rows follow params order: datasets, then combinations with the CNN last.
    first = [c for d, c, _ in acc.cells.index if d == DATASETS[0]]
    assert list(dict.fromkeys(first)) == combos
    # Localisation: every metric beside its chance column; no-mask dataset is n/a with its note.
    loc = by_name["localisation"]
    assert list(loc.cells.columns) == ["PointingGame", "PointingGame chance", "RelevanceMassAccuracy",
                                       "RelevanceMassAccuracy chance"]
    digits = loc.cells.xs("digits", level="dataset")
    assert (digits["RelevanceMassAccuracy"] == "n/a").all()
    assert (loc.notes.xs("digits", level="dataset")["RelevanceMassAccuracy"]
            .str.contains("no masks")).all()
    # Several seeds: cells carry the spread.
    assert "±" in acc.cells.iat[0, 0]


def test_markdown_and_latex_mark_best(frames):
    metrics, _, _ = frames
    agg = stats.aggregate_seeds(metrics)
    t = tables.report_tables(agg, datasets=DATASETS, combinations=list(COMBINATIONS) + ["cnn"])[2]  # localisation
    md = table.to_markdown(t)
    tex = table.to_latex(t)
    n_best = int(t.best.to_numpy().sum())
    assert n_best >= 2
    assert md.count("| **") + md.count(" **") >= n_best
    assert tex.count(r"\textbf{") == n_best
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in tex
    assert r"margin\_centred" in tex and "margin_centred" not in tex.replace(r"margin\_centred", "")
    assert "$\\pm$" in tex
    # Missing values get their reason as a footnote in Markdown.
    assert "not applicable: dataset has no masks" in md


def test_variance_share_table_shows_each_blocks_share_per_combination():
    fits = {("d", "B34"): {"seed0": {"kmeans_accuracy": 0.9, "variance_share_B3": 0.3, "variance_share_B4": 0.7},
                           "seed1": {"variance_share_B3": 0.32, "variance_share_B4": 0.68}},
            ("d", "B34_balanced"): {"seed0": {"variance_share_B3": 0.49, "variance_share_B4": 0.51}}}
    t = tables.variance_share_table(fits, ["d"], ["B34", "B34_balanced"])
    assert list(t.cells.columns) == ["B3", "B4"]
    assert t.sort_keys.loc[("d", "B34", "F_S"), "B4"] == pytest.approx(0.69)
    assert t.sort_keys.loc[("d", "B34_balanced", "F_S"), "B3"] == pytest.approx(0.49)
    assert tables.variance_share_table({}, ["d"], ["B4"]).cells.empty


def test_the_sharpness_table_shows_each_score_beside_its_coarse_twin():
    import numpy as np  # only this test builds maps

    from kmx_eval.metrics.evaluation import EvaluationTables
    from kmx_eval.metrics.sharpness import SHARPNESS_METRICS

    rng = np.random.default_rng(0)
    masks = np.zeros((6, 24, 24), np.uint8)
    masks[:, 6:14, 6:14] = 1
    frames = []
    for comb, fine in (("B4", 2), ("B234", 12)):
        t = EvaluationTables("d", comb, n_resamples=50, confidence=0.9)
        cells = rng.random((6, fine, fine))
        maps = np.kron(cells, np.ones((24 // fine, 24 // fine))) + masks
        t.add_sharpness(0, {"margin": maps, "random": rng.random((6, 24, 24))}, grid=(2, 2), masks=masks,
                        parts=None, sample_ids=np.arange(6))
        frames.append(t.frames()[0])
    agg = stats.aggregate_seeds(pd.concat(frames, ignore_index=True))
    sharp = {t.name: t for t in tables.report_tables(agg, datasets=["d"], combinations=["B4", "B234"],
                                                    explainers=["margin"])}["sharpness"]
    assert list(sharp.cells.columns) == list(SHARPNESS_METRICS)
    assert [m for _, _, m in sharp.cells.index] == ["margin", "random", "margin", "random"]
    assert "n/a" in set(sharp.cells["part_pointing"])
    # the random control is never marked best; B234's finer map is
    assert not sharp.best.xs("random", level="method").to_numpy().any()
    assert sharp.best.loc[("d", "B234", "margin"), "fine_energy"]


def test_the_keypoint_tables_appear_only_with_part_locations_and_normalise_on_the_grid():
    import numpy as np

    from kmx_eval.metrics.evaluation import EvaluationTables

    rng = np.random.default_rng(0)
    n, size = 8, 16
    xy = rng.uniform(2, size - 2, (n, 3, 2))
    visible = np.ones((n, 3), bool)
    peaked = np.zeros((n, size, size))
    peaked[np.arange(n), xy[:, 0, 1].astype(int), xy[:, 0, 0].astype(int)] = 1.0
    concepts = rng.integers(0, 3, (n, size, size))
    t = EvaluationTables("d", "B4", n_resamples=50, confidence=0.9)
    t.add_keypoints(0, {"margin": peaked, "random_grid": rng.random((n, size, size))}, keypoints=xy,
                    visible=visible, tolerance=1.0, grids={"ceiling": (4, 4)}, sample_ids=np.arange(n),
                    concepts={"concepts_global": concepts})
    agg = stats.aggregate_seeds(t.frames()[0])
    by_name = {tb.name: tb for tb in tables.report_tables(agg, datasets=["d"], combinations=["B4"],
                                                         explainers=["margin"])}
    raw, scaled = by_name["keypoints"], by_name["keypoints_normalised"]
    assert list(raw.cells.columns) == ["keypoint_pointing", "keypoint_pointing chance", "concept_part_ami",
                                       "concept_part_ami chance"]
    assert {m for _, _, m in raw.cells.index} == {"margin", "random_grid", "ceiling", "concepts_global"}
    assert "n/a" not in set(raw.cells.loc[("d", "B4", "margin")])
    # the concept table keeps its own rows: the alignment is not a column there
    assert "concept_part_ami" not in by_name["concept_fidelity"].cells.columns
    floor = agg.set_index(["method", "metric"]).loc[("random_grid", "keypoint_pointing"), "value"]
    ceiling = agg.set_index(["method", "metric"]).loc[("ceiling", "keypoint_pointing"), "value"]
    normal = tables.normalised_localisation(agg, kind="keypoints").set_index("method")
    assert normal.loc["margin", "value"] == pytest.approx((1.0 - floor) / (ceiling - floor), abs=1e-3)
    assert ("d", "B4", "margin") in scaled.cells.index
    # without part locations, no keypoint table at all
    plain = agg[agg["kind"] != "keypoints"]
    assert not {"keypoints", "keypoints_normalised"} & {tb.name for tb in tables.report_tables(plain)}
