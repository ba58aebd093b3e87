"""A ranking of distinct maps and metrics (docs/METHOD.md, section 6): same-map groups from the maps
files, aliases from the metric specs, one rank per category."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kmx_eval import io, paths
from kmx_eval.metrics import tidy
from kmx_eval.metrics.quantus import QUANTUS_METRICS
from kmx_eval.metrics.quantus.spec import metric_aliases
from kmx_eval.report import duplicates, stats, tables


def _maps(n=5, size=8, seed=0):
    rng = np.random.default_rng(seed)
    margin = rng.normal(size=(n, size, size)).astype(np.float32)
    return {
        "margin": margin,
        "margin_centred": margin - margin.mean(axis=(1, 2), keepdims=True),  # a per-image shift
        "distance": rng.normal(size=(n, size, size)).astype(np.float32),
        "random": margin * 3.0 + 1.0,  # a control never stands in for an explainer
    }


def test_same_map_groups_follow_the_rule_on_every_image():
    maps = _maps()
    rho = duplicates.pairwise_min_spearman(maps)
    assert rho[("margin", "margin_centred")] == pytest.approx(1.0)
    assert abs(rho[("margin", "distance")]) < 0.9
    groups = duplicates.same_map_groups(rho, ["distance", "margin", "margin_centred"])
    assert groups == {"margin_centred": "margin"}
    # one image below the threshold is enough to keep two maps apart
    near = dict(maps)
    near["margin_centred"] = near["margin_centred"].copy()
    near["margin_centred"][2] = -near["margin_centred"][2]
    assert duplicates.same_map_groups(duplicates.pairwise_min_spearman(near), list(near)) == {"random": "margin"}
    # transitive: a ~ b and b ~ c put c under a, the first in order
    assert duplicates.same_map_groups({("a", "b"): 0.995, ("b", "c"): 0.999, ("a", "c"): 0.98},
                                      ["a", "b", "c"]) == {"b": "a", "c": "a"}


def test_map_duplicates_read_every_seed_and_leave_controls_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for seed in (0, 1):
        arrays = {**_maps(seed=seed), "indices": np.arange(5), "targets": np.zeros(5, np.int64)}
        io.save_npz(paths.maps_file("d", "B4", seed), arrays)
    frame = duplicates.map_duplicates(["d"], ["B4", "B234"], [0, 1], excluded=stats.CONTROLS)
    assert list(frame.columns) == duplicates.DUPLICATE_COLUMNS
    assert frame[["combination", "method", "same_as"]].values.tolist() == [["B4", "margin_centred", "margin"]]
    assert frame["min_spearman"].iloc[0] == pytest.approx(1.0)
    assert duplicates.same_as_mapping(frame) == {("d", "B4", "margin_centred"): "margin"}


def _agg(values: dict[tuple[str, str], dict[str, float]]):
    """Aggregated rows of dataset d: ``{(combination, method): {metric: value}}``."""
    rows = []
    for (comb, method), by_metric in values.items():
        for metric, value in by_metric.items():
            spec = QUANTUS_METRICS.get(metric)
            rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="explainer", method=method,
                                 category=spec.category.value, metric=metric, value=value,
                                 higher_is_better=spec.higher_is_better))
    return stats.aggregate_seeds(tidy.frame(rows))


def test_two_identical_maps_count_once_and_an_aliased_metric_counts_once():
    # margin and margin_centred are one map; counted twice they would push B234's cam to rank 3.
    loc = {("B4", "margin"): 0.9, ("B4", "margin_centred"): 0.9, ("B4", "cam"): 0.5, ("B234", "cam"): 0.7}
    values = {k: {"RelevanceMassAccuracy": v, "AttributionLocalisation": v, "PointingGame": v,
                  "MPRT": 1.0 - v} for k, v in loc.items()}
    agg = _agg(values)
    same = {("d", "B4", "margin_centred"): "margin"}
    ranking, agreement = stats.metric_ranking(agg, same_as=same, aliases=metric_aliases())
    assert metric_aliases()["AttributionLocalisation"] == "RelevanceMassAccuracy"
    local = ranking[ranking["category"] == "localisation"].set_index(["combination", "method"])
    assert ("B4", "margin_centred") not in local.index and len(local) == 3
    assert local.loc[("B4", "margin"), "same_as"] == "margin_centred"
    assert local.loc[("B234", "cam"), "median_rank"] == 2.0
    assert local.loc[("B4", "margin"), "n_metrics"] == 2  # RelevanceMassAccuracy and PointingGame, not the alias
    assert "AttributionLocalisation" not in ranking.columns or ranking["AttributionLocalisation"].isna().all()
    # categories are ranked apart: MPRT (lower is better) has its own rows
    sanity = ranking[ranking["category"] == "randomisation"].set_index(["combination", "method"])
    assert sanity.loc[("B4", "margin"), "median_rank"] == 1.0 and len(sanity) == 3  # 1 - 0.9, the lowest
    assert set(agreement["category"]) <= {"localisation"}
    # without the groups and aliases, the duplicate and the alias count
    ranking2, _ = stats.metric_ranking(agg)
    local2 = ranking2[ranking2["category"] == "localisation"].set_index(["combination", "method"])
    assert len(local2) == 4 and local2.loc[("B234", "cam"), "median_rank"] == 3.0
    assert local2.loc[("B4", "margin"), "n_metrics"] == 3
    table = tables.ranking_table(ranking, agreement)
    assert table.cells.loc[("d", "localisation", "B4", "margin"), "counted with"] == "margin_centred"


def test_ranking_keeps_an_alias_when_its_original_is_not_scored():
    agg = _agg({("B4", "margin"): {"AttributionLocalisation": 0.9}, ("B4", "cam"): {"AttributionLocalisation": 0.2}})
    ranking, _ = stats.metric_ranking(agg, aliases=metric_aliases())
    assert ranking.set_index("method").loc["margin", "median_rank"] == 1.0


def test_ranking_leaves_out_categories_that_fail_their_control():
    agg = _agg({("B4", "margin"): {"RelevanceMassAccuracy": 0.9, "MPRT": 0.2},
                ("B4", "cam"): {"RelevanceMassAccuracy": 0.2, "MPRT": 0.4}})
    ranking, _ = stats.metric_ranking(agg, {"d": {"RelevanceMassAccuracy"}})
    assert set(ranking["category"]) == {"randomisation"}
    empty, agreement = stats.metric_ranking(agg, {"d": {"RelevanceMassAccuracy", "MPRT"}})
    assert empty.empty and list(empty.columns) == stats.RANKING_COLUMNS and agreement.empty
