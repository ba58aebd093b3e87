"""Tables: seed aggregation, best-value marking, formats, paired comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kmx_eval.errors import DataError
from kmx_eval.metrics import tidy
from kmx_eval.metrics.bootstrap import paired_bootstrap
from kmx_eval.report import tables
from kmx_eval.report.tables import fmt

from report_fixtures import COMBINATIONS, DATASETS, SEEDS


def _row(**kw):
    base = dict(dataset="d", seed=0, combination="B4", kind="explainer", method="margin",
                category="localisation", metric="M", value=0.5, ci_low=0.4, ci_high=0.6, n=10,
                higher_is_better=True)
    base.update(kw)
    return tidy.row(**base)


def test_fmt_is_four_significant_digits_and_marks_missing():
    assert fmt(0.412345) == "0.4123"
    assert fmt(97.126) == "97.13"
    assert fmt(1.0) == "1"
    assert fmt(-0.0) == "0"
    assert fmt(float("nan")) == fmt(None) == "n/a"
    assert tables.format_cell(0.5, 0.4, 0.6) == "0.5 [0.4, 0.6]"
    assert tables.format_cell(0.5, 0.4, 0.6, 0.01) == "0.5 [0.4, 0.6] ± 0.01"
    assert tables.format_cell(np.nan, 0.4, 0.6) == "n/a"


def test_aggregate_seeds_implements_mean_bounds_and_sd():
    rows = [_row(seed=0, value=0.2, ci_low=0.1, ci_high=0.3, chance=0.1),
            _row(seed=1, value=0.6, ci_low=0.5, ci_high=0.8, chance=0.3),
            _row(seed=2, value=None, ci_low=None, ci_high=None, note="constant map")]
    agg = tables.aggregate_seeds(tidy.frame(rows))
    assert len(agg) == 1
    r = agg.iloc[0]
    assert r["value"] == pytest.approx(0.4)
    assert r["ci_low"] == pytest.approx(0.3) and r["ci_high"] == pytest.approx(0.55)
    assert r["seed_sd"] == pytest.approx(np.std([0.2, 0.6], ddof=1))
    assert r["n_seeds"] == 2  # the seed without a value does not count
    assert r["chance"] == pytest.approx(0.2)
    assert r["note"] == "constant map"
    assert r["higher_is_better"] is True


def test_aggregate_single_seed_has_no_spread_and_keeps_order(frames):
    metrics, _, _ = frames
    one = tables.aggregate_seeds(metrics[metrics["seed"] == SEEDS[0]])
    assert one["seed_sd"].isna().all()
    assert set(one["n_seeds"]) <= {0, 1}
    both = tables.aggregate_seeds(metrics)
    assert both["n_seeds"].max() == len(SEEDS)
    # Same keys whatever the number of seeds.
    assert len(one) == len(both)


def test_aggregate_refuses_contradictory_directions():
    rows = [_row(seed=0, higher_is_better=True), _row(seed=1, higher_is_better=False)]
    with pytest.raises(DataError, match="both higher- and lower-is-better"):
        tables.aggregate_seeds(tidy.frame(rows))


def test_missing_column_is_named():
    with pytest.raises(DataError, match="higher_is_better"):
        tables.aggregate_seeds(tidy.frame([_row()]).drop(columns=["higher_is_better"]))


@pytest.mark.parametrize("higher", [True, False])
def test_best_marking_respects_direction_per_dataset(higher):
    rows = []
    for ds, values in (("d1", (0.2, 0.5, 0.9)), ("d2", (0.7, 0.3, 0.3))):
        for comb, v in zip(COMBINATIONS, values):
            rows.append(_row(dataset=ds, combination=comb, value=v, higher_is_better=higher))
    agg = tables.aggregate_seeds(tidy.frame(rows))
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
    agg = tables.aggregate_seeds(tidy.frame([_row(dataset="d1")]))
    t = tables.metric_table(agg, name="t", title="t", caption="", categories=["localisation"])
    assert not t.best.to_numpy().any()
    agg["higher_is_better"] = pd.Series([None] * len(agg), index=agg.index, dtype=object)
    two = pd.concat([agg, agg.assign(combination="B34", value=0.9)])
    t = tables.metric_table(two, name="t", title="t", caption="", categories=["localisation"])
    assert not t.best.to_numpy().any()


def test_report_tables_hold_every_dataset_and_combination(frames):
    metrics, _, _ = frames
    agg = tables.aggregate_seeds(metrics)
    combos = list(COMBINATIONS) + ["cnn"]
    by_name = {t.name: t for t in tables.report_tables(agg, DATASETS, combos)}
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
    agg = tables.aggregate_seeds(metrics)
    t = tables.report_tables(agg, DATASETS, list(COMBINATIONS) + ["cnn"])[2]  # localisation
    md = tables.to_markdown(t)
    tex = tables.to_latex(t)
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


def test_paired_comparisons_match_a_direct_paired_bootstrap(frames):
    _, samples, _ = frames
    out = tables.paired_comparisons(samples, [("B4", "B234")], n_resamples=200, confidence=0.9, seed=3)
    row = out[(out["dataset"] == "shapes") & (out["method"] == "margin")
              & (out["metric"] == "RelevanceMassAccuracy")].iloc[0]
    sel = samples[(samples["dataset"] == "shapes") & (samples["method"] == "margin")
                  & (samples["metric"] == "RelevanceMassAccuracy")]
    a = sel[sel["combination"] == "B4"].sort_values(["seed", "sample"])["value"].to_numpy()
    b = sel[sel["combination"] == "B234"].sort_values(["seed", "sample"])["value"].to_numpy()
    diff, low, high = paired_bootstrap(b, a, n_resamples=200, confidence=0.9, seed=3)
    assert row["difference"] == pytest.approx(np.mean(b - a), rel=1e-9)
    assert row["difference"] == pytest.approx(diff, rel=1e-9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert row["n"] == len(a) == len(SEEDS) * 6 and row["n_seeds"] == len(SEEDS)
    assert row["difference"] > 0  # the fixture's B234 localises better
    # Missing per-sample values (no masks) give no comparison rather than a fake one.
    assert out[(out["dataset"] == "digits") & (out["metric"] == "RelevanceMassAccuracy")].empty
    # Display: bold exactly where the interval excludes zero; direction-aware "favours".
    t = tables.comparison_table(out, tables.aggregate_seeds(frames[0]))
    excl = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    assert int(t.best["B − A"].sum()) == int(excl.sum())
    pf = t.cells.loc[("shapes", "B234 − B4", "margin", "PixelFlipping")]
    assert pf["favours"] == "B234"  # lower PixelFlipping AUC is better and B234's is lower


def test_paired_comparisons_are_deterministic(frames):
    _, samples, _ = frames
    one = tables.paired_comparisons(samples, [("B4", "B34")], 100, 0.95, seed=0)
    two = tables.paired_comparisons(samples, [("B4", "B34")], 100, 0.95, seed=0)
    pd.testing.assert_frame_equal(one, two)


def test_variance_share_table_shows_each_blocks_share_per_combination():
    fits = {("d", "B34"): {"seed0": {"kmeans_accuracy": 0.9, "variance_share_B3": 0.3, "variance_share_B4": 0.7},
                           "seed1": {"variance_share_B3": 0.32, "variance_share_B4": 0.68}},
            ("d", "B34_balanced"): {"seed0": {"variance_share_B3": 0.49, "variance_share_B4": 0.51}}}
    t = tables.variance_share_table(fits, ["d"], ["B34", "B34_balanced"])
    assert list(t.cells.columns) == ["B3", "B4"]
    assert t.sort_keys.loc[("d", "B34", "F_S"), "B4"] == pytest.approx(0.69)
    assert t.sort_keys.loc[("d", "B34_balanced", "F_S"), "B3"] == pytest.approx(0.49)
    assert tables.variance_share_table({}, ["d"], ["B4"]).cells.empty


def test_controls_flag_a_metric_that_cannot_tell_oracle_from_random_and_ranking_skips_it():
    import pandas as pd

    from kmx_eval.metrics import tidy as td
    from kmx_eval.report import tables as tb

    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        for method, good, flat in (("random", 0.2, 0.5), ("oracle", 0.9, 0.5)):
            rows.append(dict(dataset="d", seed=0, combination="B4", method=method, metric="Good", sample=i,
                             value=good + 0.05 * rng.normal(), reason=""))
            rows.append(dict(dataset="d", seed=0, combination="B4", method=method, metric="Flat", sample=i,
                             value=flat + 0.05 * rng.normal(), reason=""))
    controls = tb.control_differences(pd.DataFrame(rows), ["Good", "Flat"], 200, 0.95, seed=0)
    flags = controls.set_index("metric")["informative"]
    assert bool(flags["Good"]) and not bool(flags["Flat"])
    assert tb.uninformative(controls) == {"d": {"Flat"}}
    assert tb.controls_table(controls).cells.shape == (2, 4)

    agg_rows = []
    for comb, method, good, flat, pf in (("B4", "margin", 0.6, 0.1, 0.3), ("B234", "margin", 0.8, 0.9, 0.2),
                                         ("B4", "random", 0.99, 0.99, 0.01)):
        for metric, value, cat, hib in (("Good", good, "localisation", True), ("Flat", flat, "localisation", True),
                                        ("PixelFlipping", pf, "faithfulness", False)):
            agg_rows.append(td.row(dataset="d", seed=0, combination=comb, kind="explainer", method=method,
                                   category=cat, metric=metric, value=value, higher_is_better=hib))
    agg = tb.aggregate_seeds(td.frame(agg_rows))
    ranking, agreement = tb.metric_ranking(agg, tb.uninformative(controls))
    assert "random" not in set(ranking["method"])  # controls are floors, never ranked
    assert "Flat" not in ranking.columns and ranking.iloc[0]["combination"] == "B234"
    assert ranking.set_index("combination").loc["B234", "median_rank"] == 1.0
    assert list(agreement.columns) == ["dataset", "metric_a", "metric_b", "tau", "n"]
    # Bold never goes to a control row, even when it has the best value
    table = tb.metric_table(agg, name="t", title="t", caption="", categories=["localisation"], kinds=["explainer"])
    assert not table.best.loc[("d", "B4", "random")].any()
