"""The prototype table and figure: both diversities, KMEx's reference row, no cross-space comparison."""

from __future__ import annotations

import pytest

from kmx_eval.metrics import tidy
from kmx_eval.metrics.evaluation import PROTOTYPE_METRICS
from kmx_eval.report import figures, stats, tables

ROWS = [("B4", "kmeans", 0.9, 0.011), ("B4", "kmeans_kmex", 0.7, 0.013), ("B34", "kmeans", 0.8, 0.020)]


def _agg():
    rows = []
    for comb, method, scaled, kmex in ROWS:
        values = {"proximity": 0.8, "separation": 0.5, "purity": 0.9, "decision_agreement": 1.0, "diversity_scaled": scaled,
                  "diversity_kmex": kmex}
        for metric, value in values.items():
            rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="prototypes", method=method,
                                 category="prototype_fidelity", metric=metric, value=value,
                                 ci_low=value - 0.01, ci_high=value + 0.01, n=10,
                                 higher_is_better=PROTOTYPE_METRICS[metric]))
        rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="head", method=method,
                             category="accuracy", metric="accuracy", value=0.9, ci_low=0.8, ci_high=0.95,
                             n=30, higher_is_better=True))
    return stats.aggregate_seeds(tidy.frame(rows))


def test_prototype_table_has_both_diversities_and_kmex_row_beside_the_default():
    by_name = {t.name: t for t in tables.report_tables(_agg(), datasets=["d"], combinations=["B4", "B34"])}
    proto = by_name["prototype_fidelity"]
    assert list(proto.cells.columns) == ["proximity", "separation", "purity", "decision_agreement",
                                         "diversity_scaled", "diversity_kmex"]
    assert list(proto.cells.index) == [("d", "B4", "kmeans"), ("d", "B4", "kmeans_kmex"), ("d", "B34", "kmeans")]
    assert "diversity_kmex is KMEx's formula" in proto.caption and "kmeans_kmex is KMEx's own head" in proto.caption
    # Heads in different spaces: the scale-free diversity competes, KMEx's does not.
    assert proto.best["diversity_scaled"][("d", "B4", "kmeans")]
    assert not proto.best["diversity_kmex"].any()
    acc = by_name["accuracy"]
    assert [m for _, c, m in acc.cells.index if c == "B4"] == ["kmeans", "kmeans_kmex"]


def test_prototype_figure_draws_only_the_scale_free_diversity():
    fig = figures.prototype_fidelity_figure(_agg(), "d", ["B4", "B34"])
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("diversity_scaled") for t in titles)
    assert not any("diversity_kmex" in t for t in titles)


@pytest.mark.parametrize("metric", sorted(PROTOTYPE_METRICS))
def test_every_prototype_metric_is_a_column(metric):
    proto = {t.name: t for t in tables.report_tables(_agg())}["prototype_fidelity"]
    assert metric in proto.cells.columns
