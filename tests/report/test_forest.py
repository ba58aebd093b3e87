"""The paired comparisons as a forest plot (kmx_eval/report/forest.py, issue 22): checked by its data."""

from __future__ import annotations

import numpy as np
import pytest

from kmx_eval.report import forest, multiplicity, stats


@pytest.fixture(scope="module")
def compared(frames):
    metrics, samples, _ = frames
    agg = stats.aggregate_seeds(metrics, samples, n_resamples=100)
    cmp = stats.paired_comparisons(samples, [("B4", "B234")], n_resamples=100, confidence=0.95, seed=0)
    return agg, multiplicity.adjust(cmp, primary=[("margin", "RelevanceMassAccuracy")])


def test_one_row_per_metric_grouped_by_category_with_greyed_failures(compared):
    agg, cmp = compared
    rows = forest.forest_rows(cmp, agg, "shapes", methods=["margin", "kmeans", "probe"],
                              failed={"shapes": {"PointingGame"}, "digits": {"RelevanceMassAccuracy"}})
    shown = cmp[(cmp["dataset"] == "shapes") & cmp["method"].isin(["margin", "kmeans", "probe"])]
    assert len(rows) == len(shown) and not rows.duplicated(["method", "metric"]).any()
    assert set(zip(rows["method"], rows["metric"])) == set(zip(shown["method"], shown["metric"]))
    # Categories are contiguous, in CATEGORY_ORDER.
    cats = list(dict.fromkeys(rows["category"]))
    assert cats == sorted(cats, key=lambda c: forest.CATEGORY_ORDER.index(c))
    assert all(rows["category"].iloc[i] == c for c in cats for i in np.flatnonzero(rows["category"] == c))
    assert set(rows.loc[rows["failed_control"], "metric"]) == {"PointingGame"}  # only this dataset's failures
    # Decisions and endpoints are the adjusted ones; no per-prototype metric is paired.
    merged = rows.merge(shown, on=["method", "metric"], suffixes=("", "_cmp"))
    assert (merged["differs"] == merged["differs_cmp"]).all()
    assert rows.loc[rows["primary"], "metric"].tolist() == ["RelevanceMassAccuracy"]
    assert not set(rows["metric"]) & stats.UNPAIRED_METRICS


def test_rows_are_scaled_per_metric_and_turned_so_that_right_is_better(compared):
    agg, cmp = compared
    rows = forest.forest_rows(cmp, agg, "shapes", methods=["margin", "kmeans", "probe"]).set_index("metric")
    assert (rows[["scaled", "scaled_low", "scaled_high"]].abs().fillna(0) <= 1 + 1e-12).all().all()
    pf = rows.loc["PixelFlipping"]  # lower is better, B234 lower: drawn on the right
    assert pf["difference"] < 0 and pf["scaled"] > 0 and pf["scaled_low"] <= pf["scaled"] <= pf["scaled_high"]
    rma = rows.loc["RelevanceMassAccuracy"]
    assert rma["scaled"] == pytest.approx(rma["difference"] / max(abs(rma["ci_low"]), abs(rma["ci_high"]),
                                                                 abs(rma["difference"])))


def test_forest_figure_has_a_line_per_row_and_a_header_per_category(compared):
    agg, cmp = compared
    rows = forest.forest_rows(cmp, agg, "shapes", methods=["margin", "kmeans", "probe"],
                              failed={"shapes": {"PointingGame"}})
    fig = forest.forest_figure(rows, "shapes")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == len(rows) + rows["category"].nunique()
    grey = [t.get_text() for t in ax.get_yticklabels() if t.get_color() == forest.GREY]
    assert grey == ["PointingGame  (fails its control)"]
    empty = forest.forest_figure(rows.iloc[:0], "digits")
    assert "no paired comparisons" in empty.axes[0].texts[0].get_text()
