"""Statistics across seeds (kmx_eval/report/stats.py): seed aggregation, intervals from the per-sample
scores, paired comparisons, controls and the ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kmx_eval.errors import DataError
from kmx_eval.metrics import tidy
from kmx_eval.metrics.bootstrap import (cluster_bootstrap_ci, hierarchical_matrix_test, paired_bootstrap,
                                        paired_hierarchical_test, proportion_ci, seed_spread)
from kmx_eval.report import multiplicity, numbers, stats, tables

from report_fixtures import SEEDS, tidy_row



def test_aggregate_seeds_implements_mean_bounds_and_sd():
    rows = [tidy_row(seed=0, value=0.2, ci_low=0.1, ci_high=0.3, chance=0.1),
            tidy_row(seed=1, value=0.6, ci_low=0.5, ci_high=0.8, chance=0.3),
            tidy_row(seed=2, value=None, ci_low=None, ci_high=None, note="constant map")]
    agg = stats.aggregate_seeds(tidy.frame(rows))
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
    one = stats.aggregate_seeds(metrics[metrics["seed"] == SEEDS[0]])
    assert one["seed_sd"].isna().all()
    assert set(one["n_seeds"]) <= {0, 1}
    both = stats.aggregate_seeds(metrics)
    assert both["n_seeds"].max() == len(SEEDS)
    # Same keys whatever the number of seeds.
    assert len(one) == len(both)


def test_aggregate_refuses_contradictory_directions():
    rows = [tidy_row(seed=0, higher_is_better=True), tidy_row(seed=1, higher_is_better=False)]
    with pytest.raises(DataError, match="both higher- and lower-is-better"):
        stats.aggregate_seeds(tidy.frame(rows))


def test_missing_column_is_named():
    with pytest.raises(DataError, match="higher_is_better"):
        stats.aggregate_seeds(tidy.frame([tidy_row()]).drop(columns=["higher_is_better"]))


def test_paired_comparisons_match_a_direct_paired_bootstrap(frames):
    _, samples, _ = frames
    out = stats.paired_comparisons(samples, [("B4", "B234")], n_resamples=200, confidence=0.9, seed=3)
    row = out[(out["dataset"] == "shapes") & (out["method"] == "margin")
              & (out["metric"] == "RelevanceMassAccuracy")].iloc[0]
    sel = samples[(samples["dataset"] == "shapes") & (samples["method"] == "margin")
                  & (samples["metric"] == "RelevanceMassAccuracy")]
    # Seeds, then images within each: (seed x image) matrices, paired_hierarchical_test (issue 22).
    a = sel[sel["combination"] == "B4"].pivot(index="seed", columns="sample", values="value").to_numpy()
    b = sel[sel["combination"] == "B234"].pivot(index="seed", columns="sample", values="value").to_numpy()
    assert a.shape == (len(SEEDS), 6)
    diff, low, high, p = paired_hierarchical_test(b, a, n_resamples=200, confidence=0.9, seed=3)
    assert row["p_value"] == pytest.approx(p, rel=1e-9)
    assert row["difference"] == pytest.approx(np.mean(b - a), rel=1e-9)
    assert row["difference"] == pytest.approx(diff, rel=1e-9)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert row["n"] == a.size == len(SEEDS) * 6 and row["n_seeds"] == len(SEEDS)
    assert row["difference"] > 0  # the fixture's B234 localises better
    # Missing per-sample values (no masks) give no comparison rather than a fake one.
    assert out[(out["dataset"] == "digits") & (out["metric"] == "RelevanceMassAccuracy")].empty
    # Display: bold exactly where the adjusted decision declares a difference; direction-aware "favours".
    t = tables.comparison_table(out, stats.aggregate_seeds(frames[0]))
    declared = multiplicity.adjust(out)["differs"]
    assert int(t.best["B − A"].sum()) == int(declared.sum())
    pf = t.cells.loc[("shapes", "B234 − B4", "margin", "PixelFlipping")]
    assert pf["favours"] == "B234"  # lower PixelFlipping AUC is better and B234's is lower


def test_paired_comparisons_are_deterministic(frames):
    _, samples, _ = frames
    one = stats.paired_comparisons(samples, [("B4", "B34")], n_resamples=100, confidence=0.95, seed=0)
    two = stats.paired_comparisons(samples, [("B4", "B34")], n_resamples=100, confidence=0.95, seed=0)
    pd.testing.assert_frame_equal(one, two)


def test_controls_flag_a_metric_that_cannot_tell_oracle_from_random_and_ranking_skips_it():
    import pandas as pd

    from kmx_eval.metrics import tidy as td
    
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        for method, good, flat in (("random", 0.2, 0.5), ("oracle", 0.9, 0.5)):
            rows.append(dict(dataset="d", seed=0, combination="B4", method=method, metric="Good", sample=i,
                             value=good + 0.05 * rng.normal(), reason=""))
            rows.append(dict(dataset="d", seed=0, combination="B4", method=method, metric="Flat", sample=i,
                             value=flat + 0.05 * rng.normal(), reason=""))
    controls = stats.control_differences(pd.DataFrame(rows), ["Good", "Flat"], n_resamples=200, confidence=0.95,
                                         seed=0)
    flags = controls.set_index("metric")["informative"]
    assert bool(flags["Good"]) and not bool(flags["Flat"])
    assert stats.uninformative(controls) == {"d": {"Flat"}}
    assert tables.controls_table(controls).cells.shape == (2, 4)

    agg_rows = []
    for comb, method, good, flat, pf in (("B4", "margin", 0.6, 0.1, 0.3), ("B234", "margin", 0.8, 0.9, 0.2),
                                         ("B4", "random", 0.99, 0.99, 0.01)):
        for metric, value, cat, hib in (("Good", good, "localisation", True), ("Flat", flat, "localisation", True),
                                        ("PixelFlipping", pf, "faithfulness", False)):
            agg_rows.append(td.row(dataset="d", seed=0, combination=comb, kind="explainer", method=method,
                                   category=cat, metric=metric, value=value, higher_is_better=hib))
    agg = stats.aggregate_seeds(td.frame(agg_rows))
    ranking, agreement = stats.metric_ranking(agg, stats.uninformative(controls))
    assert "random" not in set(ranking["method"])  # controls are floors, never ranked
    assert "Flat" not in ranking.columns and ranking.iloc[0]["combination"] == "B234"
    local = ranking[ranking["category"] == "localisation"]
    assert local.set_index("combination").loc["B234", "median_rank"] == 1.0
    assert list(agreement.columns) == ["dataset", "category", "metric_a", "metric_b", "tau", "n"]
    # Bold never goes to a control row, even when it has the best value
    table = tables.metric_table(agg, name="t", title="t", caption="", categories=["localisation"], kinds=["explainer"])
    assert not table.best.loc[("d", "B4", "random")].any()


# ------------------------------------------------------------------ intervals across seeds (issue 12)
def _study(per_seed: dict, metric="M", kind="explainer", category="localisation", method="margin",
           proportion=False, n_resamples=200, confidence=0.95, ids=None):
    """Per-seed rows (as the evaluate stage writes them: bootstrap seeded by the training seed) and
    samples of one key, ``per_seed = {seed: values}``."""
    rows, samples = [], []
    for seed, v in per_seed.items():
        keys = dict(dataset="d", seed=seed, combination="B4", method=method, metric=metric)
        rows.append(tidy.summary_row(v, n_resamples=n_resamples, confidence=confidence, bootstrap_seed=seed,
                                     proportion=proportion, kind=kind, category=category,
                                     higher_is_better=True, **keys))
        sid = np.arange(len(v)) * 3 if ids is None else ids
        samples += tidy.sample_rows(v, [None if np.isfinite(x) else "constant map" for x in v], sid, **keys)
    return tidy.frame(rows), tidy.samples_frame(samples)


def _csv(frame):
    """``frame`` written and read back as the pipeline does (10 significant digits)."""
    import io

    return pd.read_csv(io.StringIO(frame.to_csv(index=False, float_format="%.10g")))


def test_100_percent_accuracy_keeps_an_interval_below_1_across_seeds():
    metrics, samples = _study({0: np.ones(48), 1: np.ones(48)}, metric="accuracy", kind="head",
                              category="accuracy", method="kmeans", proportion=True)
    assert (metrics["ci_low"] < 1).all()  # per seed: Wilson
    r = stats.aggregate_seeds(metrics, samples).iloc[0]
    assert r["value"] == 1.0 and r["ci_high"] == 1.0 and r["ci_low"] < 1
    # Two seeds: Wilson joined with the hierarchical interval (here the bootstrap's is [1, 1]).
    assert r["ci_low"] == pytest.approx(proportion_ci(np.ones((2, 48)))[1], rel=1e-9)
    assert r["interval"] == "hierarchical_wilson" and r["seed_sd"] == 0.0


def test_aggregated_interval_of_a_real_metric_is_the_hierarchical_bootstrap_of_the_seed_matrix():
    rng = np.random.default_rng(1)
    v0, v1 = rng.random(20), rng.random(20)
    v1[[2, 5]] = np.nan  # an image missing under one seed counts for the other
    metrics, samples = _study({0: v0, 1: v1})
    r = stats.aggregate_seeds(metrics, samples, n_resamples=200, confidence=0.95).iloc[0]
    matrix = np.vstack([v0, v1])
    _, low, high, _ = hierarchical_matrix_test(matrix, n_resamples=200, confidence=0.95, seed=0)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert r["seed_sd"] == pytest.approx(seed_spread(matrix)[0], rel=1e-9)
    assert r["value"] == pytest.approx((np.mean(v0) + np.nanmean(v1)) / 2, rel=1e-9)
    assert r["interval"] == "hierarchical_bootstrap" and r["n_seeds"] == 2
    # A bootstrap seed can be given; the seeds' order in the frame does not matter.
    shuffled = stats.aggregate_seeds(metrics.iloc[::-1], samples.iloc[::-1], n_resamples=200).iloc[0]
    assert (shuffled["ci_low"], shuffled["ci_high"]) == (r["ci_low"], r["ci_high"])
    other = stats.aggregate_seeds(metrics, samples, n_resamples=200, bootstrap_seed=5).iloc[0]
    assert (other["ci_low"], other["ci_high"]) == pytest.approx(
        hierarchical_matrix_test(matrix, n_resamples=200, confidence=0.95, seed=5)[1:3], rel=1e-9)


@pytest.mark.parametrize("proportion", [False, True])
def test_one_seed_reproduces_the_per_seed_row(proportion):
    rng = np.random.default_rng(2)
    v = (rng.random(30) < 0.8).astype(float) if proportion else rng.normal(size=30)
    v[4] = np.nan
    kw = dict(metric="accuracy", kind="head", category="accuracy", method="kmeans") if proportion else {}
    metrics, samples = _study({7: v}, proportion=proportion, n_resamples=300, confidence=0.9, **kw)
    row = metrics.iloc[0]
    # The interval of the (1 x n) seed matrix is the per-seed row's, exactly.
    matrix = stats.seed_matrix(samples)
    assert matrix.shape == (1, 30)
    across = (proportion_ci(matrix, 0.9) if proportion
              else tuple(hierarchical_matrix_test(matrix, n_resamples=300, confidence=0.9, seed=7)[:3]))
    assert across == (row["value"], row["ci_low"], row["ci_high"])
    # And so is the aggregated row, also from the files (samples.csv keeps 10 significant digits).
    for m, smp in ((metrics, samples), (_csv(metrics), _csv(samples))):
        r = stats.aggregate_seeds(m, smp, n_resamples=300, confidence=0.9).iloc[0]
        assert r["interval"] == ("wilson" if proportion else "hierarchical_bootstrap")
        for col in ("value", "ci_low", "ci_high"):
            assert r[col] == numbers.round_significant(row[col])
    # Without samples the same bounds, as the mean of one seed's bounds.
    plain = stats.aggregate_seeds(metrics).iloc[0]
    assert (plain["ci_low"], plain["ci_high"]) == (r["ci_low"], r["ci_high"])
    assert plain["interval"] == "mean_of_seed_bounds"


def test_keys_without_samples_keep_the_mean_of_per_seed_bounds(frames):
    metrics, samples, _ = frames
    agg = stats.aggregate_seeds(metrics, samples, n_resamples=50)
    plain = stats.aggregate_seeds(metrics)
    assert list(agg.columns) == stats.AGGREGATED_COLUMNS and set(agg["interval"]) <= {*stats.INTERVALS, ""}
    kinds = agg["kind"] == "prototypes"
    proto = (kinds & (agg["metric"] != "separation")).to_numpy()  # per-prototype keys without samples
    pd.testing.assert_frame_equal(agg[proto], plain[proto])
    assert set(agg.loc[proto, "interval"]) == {"mean_of_seed_bounds"}
    # With per-prototype values over several seeds: seeds, then prototypes, are resampled.
    assert set(agg.loc[(kinds & (agg["metric"] == "separation")).to_numpy(), "interval"]) == {"hierarchical_bootstrap"}
    # Per-sample keys: the value is unchanged, the interval comes from the samples.
    assert (agg["value"].fillna(-1) == plain["value"].fillna(-1)).all()
    acc = agg[(agg["metric"] == "accuracy") & (agg["combination"] != "cnn")]
    assert set(acc["interval"]) == {"hierarchical_wilson"}  # two seeds
    pg = agg[(agg["metric"] == "PointingGame") & (agg["dataset"] == "shapes")]
    assert set(pg["interval"]) == {"hierarchical_wilson"}


def test_a_proportion_whose_samples_are_not_0_1_is_refused():
    metrics, samples = _study({0: np.array([0.2, 0.9, 1.0])}, metric="accuracy", kind="head",
                              category="accuracy", method="kmeans")
    with pytest.raises(DataError, match="not 0/1"):
        stats.aggregate_seeds(metrics, samples)


def _pairs(seeds, n=12, methods=("margin",), combos=("B4", "B234"), metric="M"):
    rng = np.random.default_rng(4)
    rows = []
    for seed in seeds:
        for comb in combos:
            for method in methods:
                for i in range(n):
                    rows.append(dict(dataset="d", seed=seed, combination=comb, method=method, metric=metric,
                                     sample=2 * i, value=rng.random() + 0.2 * (comb == "B234"), reason=""))
    return pd.DataFrame(rows, columns=list(tidy.SAMPLE_COLUMNS))


def _old_pooled(samples, a_filter, b_filter, seed, n_resamples=150, confidence=0.9):
    """The numbers before issue 12: paired_bootstrap of the (seed, sample) pairs, sorted."""
    left, right = samples[a_filter], samples[b_filter]
    joined = left.merge(right, on=["seed", "sample"], suffixes=("_a", "_b")).sort_values(["seed", "sample"])
    va, vb = joined["value_a"].to_numpy(float), joined["value_b"].to_numpy(float)
    return va.mean(), vb.mean(), paired_bootstrap(vb, va, n_resamples=n_resamples, confidence=confidence,
                                                   seed=seed)


def test_paired_comparison_with_one_seed_equals_the_old_pooled_numbers():
    samples = _pairs([3])
    samples.loc[5, "value"] = np.nan  # a missing score drops its pair
    out = stats.paired_comparisons(samples, [("B4", "B234")], n_resamples=150, confidence=0.9, seed=3).iloc[0]
    ok = np.isfinite(samples["value"])
    mean_a, mean_b, (diff, low, high) = _old_pooled(
        samples[ok], samples[ok]["combination"] == "B4", samples[ok]["combination"] == "B234", seed=3)
    got = (out["mean_a"], out["mean_b"], out["difference"], out["ci_low"], out["ci_high"])
    assert got == tuple(numbers.round_significant(x) for x in (mean_a, mean_b, diff, low, high))
    assert out["n"] == 11


def test_paired_comparison_with_two_seeds_resamples_seeds_then_images():
    samples = _pairs([0, 1])
    out = stats.paired_comparisons(samples, [("B4", "B234")], n_resamples=150, confidence=0.9, seed=0).iloc[0]
    wide = {c: samples[samples["combination"] == c].pivot(index="seed", columns="sample", values="value")
            .to_numpy() for c in ("B4", "B234")}
    diff, low, high, _ = paired_hierarchical_test(wide["B234"], wide["B4"], n_resamples=150, confidence=0.9, seed=0)
    assert (out["difference"], out["ci_low"], out["ci_high"]) == pytest.approx((diff, low, high), rel=1e-9)
    per_seed = (wide["B234"] - wide["B4"]).mean(axis=1)  # the seeds' spread is inside the interval
    assert out["ci_low"] <= per_seed.min() + 1e-9 and out["ci_high"] >= per_seed.max() - 1e-9
    assert out["n"] == 24 and out["n_seeds"] == 2
    _, _, pooled = _old_pooled(samples, samples["combination"] == "B4", samples["combination"] == "B234", 0)
    assert (out["ci_low"], out["ci_high"]) != pytest.approx(pooled[1:], rel=1e-6)  # no longer pooled


def test_control_differences_resample_seeds_then_images_and_equal_the_old_numbers_for_one_seed():
    for seeds in ([2], [0, 1]):
        samples = _pairs(seeds, methods=("random", "oracle"), combos=("B4",), metric="Good")
        out = stats.control_differences(samples, ["Good"], n_resamples=150, confidence=0.9, seed=seeds[0]).iloc[0]
        wide = {m: samples[samples["method"] == m].pivot(index="seed", columns="sample", values="value")
                .to_numpy() for m in ("random", "oracle")}
        diff, low, high, _ = paired_hierarchical_test(wide["oracle"], wide["random"], n_resamples=150,
                                                      confidence=0.9, seed=seeds[0])
        assert (out["difference"], out["ci_low"], out["ci_high"]) == pytest.approx((diff, low, high), rel=1e-12)
        if len(seeds) == 1:
            mean_r, mean_o, old = _old_pooled(samples, samples["method"] == "random",
                                              samples["method"] == "oracle", seed=seeds[0])
            assert (out["random"], out["oracle"], out["difference"], out["ci_low"], out["ci_high"]) == \
                (mean_r, mean_o, *old)


def test_seed_matrix_aligns_seeds_and_samples_as_a_pivot_and_refuses_duplicates():
    """Rows: seeds in increasing order; columns: sample ids in increasing order; NaN where a seed
    lacks an image (the pandas pivot it replaced, on shuffled rows with gaps and a seed filter)."""
    rng = np.random.default_rng(3)
    rows = [(s, i, rng.normal()) for s in (2, 0, 1) for i in rng.permutation(12) if rng.random() > 0.2]
    frame = pd.DataFrame(rows, columns=["seed", "sample", "value"]).sample(frac=1.0, random_state=0)
    expected = frame.pivot(index="seed", columns="sample", values="value").sort_index().sort_index(axis=1)
    assert np.array_equal(stats.seed_matrix(frame), expected.to_numpy(), equal_nan=True)
    kept = expected.loc[[0, 2]].dropna(axis=1, how="all")
    assert np.array_equal(stats.seed_matrix(frame, seeds=[2, 0]), kept.to_numpy(), equal_nan=True)
    assert stats.seed_matrix(frame, seeds=[7]).shape == (0, 0)
    with pytest.raises(ValueError, match="two scores for one sample"):
        stats.seed_matrix(pd.concat([frame, frame.iloc[:1]]))


def test_the_pointing_game_at_part_locations_passes_the_localisation_control_where_it_is_scored():
    from kmx_eval.report.build import controlled_localisation

    samples = pd.DataFrame({"metric": ["PointingGame", "keypoint_pointing"]})
    metrics = ["PointingGame", "ROAD", "AUC"]
    assert controlled_localisation(metrics, samples) == ["PointingGame", "AUC", "keypoint_pointing"]
    assert controlled_localisation(metrics, samples[samples.metric != "keypoint_pointing"]) == ["PointingGame", "AUC"]
    # an oracle that points no better than random makes it uninformative, like any localisation metric
    rows = [dict(dataset="d", seed=0, combination="B4", method=m, metric="keypoint_pointing", sample=i,
                 value=float(i % 2), reason=None) for m in ("random", "oracle") for i in range(20)]
    controls = stats.control_differences(pd.DataFrame(rows), ["keypoint_pointing"], n_resamples=200,
                                         confidence=0.95, seed=0)
    assert stats.uninformative(controls) == {"d": {"keypoint_pointing"}}
