"""The prototype table and the prototype claim of a study with several seeds (docs/METHOD.md, section 6;
issue 23): matched-capacity rows, the class-mean reference, intervals over seeds then prototypes, and a
verdict per head that follows from the interval of the difference."""

from __future__ import annotations

import numpy as np
import pytest

from kmx_eval.metrics import tidy
from kmx_eval.metrics.evaluation import CLASS_MEANS, PROTOTYPE_METRICS
from kmx_eval.report import stats, summary, tables

SEEDS = (0, 1, 2)
#: (combination, method, number of prototypes): the CNN's fc in the raw deepest-block space beside its
#: class means; the B4 probe and the k-means head (H = 3 per class) beside the class means of z_S.
SETS = [("cnn", "linear", 4), ("cnn", "linear_canonical", 4), ("cnn", "class_means", 4),
        ("B4", "kmeans", 12), ("B4", "probe", 4), ("B4", "probe_canonical", 4), ("B4", "class_means", 4)]


def _study(levels: dict[tuple[str, str], tuple[float, ...]], within: float = 0.02):
    """Tidy rows and per-prototype samples: separation of each set at ``levels[(comb, method)][seed]``
    (default 1.0) plus noise of size ``within`` between the prototypes of a seed."""
    rng = np.random.default_rng(0)
    rows, samples = [], []
    for seed in SEEDS:
        for comb, method, n in SETS:
            level = levels.get((comb, method), (1.0,) * len(SEEDS))[seed]
            values = level + within * rng.normal(size=n)
            keys = dict(dataset="d", seed=seed, combination=comb)
            rows.append(tidy.summary_row(values, n_resamples=200, confidence=0.95, bootstrap_seed=seed,
                                         kind="prototypes", method=method, category="prototype_fidelity",
                                         metric="separation", higher_is_better=False, **keys))
            samples += tidy.sample_rows(values, [None] * n, np.arange(n), method=method, metric="separation",
                                        **keys)
    return tidy.frame(rows), tidy.samples_frame(samples)


def _agg(metrics, samples):
    return stats.aggregate_seeds(metrics, samples, n_resamples=400, confidence=0.95)


def test_prototype_table_has_matched_capacity_rows_and_intervals_no_narrower_than_the_seed_spread():
    # the case: a probe whose seeds disagree (2.08 / 0.47 / 2.10), tight within each seed
    metrics, samples = _study({("B4", "probe_canonical"): (2.08, 0.47, 2.10)})
    agg = _agg(metrics, samples)
    proto = {t.name: t for t in tables.report_tables(agg, datasets=["d"], combinations=["B4", "cnn"])}[
        "prototype_fidelity"]
    assert {("d", "B4", "class_means"), ("d", "cnn", "class_means"), ("d", "B4", "probe_canonical"),
            ("d", "cnn", "linear_canonical"), ("d", "B4", "kmeans")} <= set(proto.cells.index)
    assert "separation" in proto.cells.columns and "class_means" in proto.caption
    assert "resamples the training seeds, then the evaluation images (prototypes, for per-prototype" in proto.caption
    rows = agg[agg.metric == "separation"]
    assert set(rows["interval"]) == {"hierarchical_bootstrap"}
    per_seed = metrics.groupby(["combination", "method"])["value"]
    for _, r in rows.iterrows():
        means = per_seed.get_group((r["combination"], r["method"])).to_numpy()
        # three seeds at 95%: the seed level alone spans [min, max] of the per-seed means
        assert r["ci_low"] <= means.min() + 1e-9 and r["ci_high"] >= means.max() - 1e-9
    probe = rows.set_index("method").loc["probe_canonical"]
    assert probe["ci_low"] < 0.5 and probe["ci_high"] > 2.0  # the mean of per-seed bounds was ~[1.55, 1.57]
    assert probe["seed_sd"] == pytest.approx(np.std(per_seed.get_group(("B4", "probe_canonical")), ddof=1),
                                             rel=1e-3)


@pytest.mark.parametrize("levels, verdict, clause", [
    ({("cnn", "linear_canonical"): (2.0, 2.1, 1.9), ("B4", "probe_canonical"): (1.8, 1.7, 1.9)},
     "holds for every linear head", "the B4 probe (canonical reading)"),
    ({("cnn", "linear_canonical"): (0.5, 0.6, 0.4), ("B4", "probe_canonical"): (0.5, 0.5, 0.6)},
     "fails for every linear head", "the CNN's fc (canonical reading)"),
    ({("cnn", "linear_canonical"): (2.0, 2.1, 1.9), ("B4", "probe_canonical"): (2.08, 0.47, 2.10)},
     "holds for 1 of 2 linear heads, fails for 0 and is within the noise for 1", "within the noise"),
])
def test_prototype_claim_follows_the_interval_of_the_difference(levels, verdict, clause):
    metrics, samples = _study(levels)
    text = summary.prototype_claim(_agg(metrics, samples), "d", ["B4"], samples=samples, n_resamples=400)
    assert text.startswith("d: the claim that linear prototypes do not represent the data " + verdict), text
    assert clause in text and "over 3 seeds" in text and "class means" in text


def test_prototype_claim_uses_the_stored_rows_where_the_canonical_reading_is_undefined():
    metrics, samples = _study({("B4", "probe"): (3.0, 3.1, 2.9)})
    metrics.loc[metrics.method == "probe_canonical", "value"] = np.nan
    samples = samples[samples.method != "probe_canonical"]
    text = summary.prototype_claim(_agg(metrics, samples), "d", ["B4"], samples=samples, n_resamples=400)
    assert "the B4 probe (rows as stored)" in text and "the CNN's fc (canonical reading)" in text


def test_prototype_claim_without_per_prototype_values_says_it_was_not_tested():
    metrics, _ = _study({})
    assert "not tested" in summary.prototype_claim(_agg(metrics, None), "d", ["B4"], samples=None)


def test_one_seed_keeps_the_seeds_own_interval():
    metrics, samples = _study({})
    one = metrics[metrics.seed == 0]
    agg = _agg(one, samples[samples.seed == 0])
    row = agg[(agg.method == "probe") & (agg.metric == "separation")].iloc[0]
    own = one[(one.method == "probe")].iloc[0]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((own["ci_low"], own["ci_high"]), rel=1e-5)
    assert row["interval"] == "mean_of_seed_bounds"


def test_the_report_names_the_evaluate_stages_reference_rows():
    assert summary.CLASS_MEANS == CLASS_MEANS and summary.CLAIM_METRIC in PROTOTYPE_METRICS
    assert not PROTOTYPE_METRICS[summary.CLAIM_METRIC]  # lower is closer to the data


def test_purity_at_100_percent_over_seeds_does_not_collapse():
    """Shares that are all 1: the hierarchical bootstrap alone gives [1, 1]; the per-seed Wilson bounds
    keep the interval open."""
    rows, samples = [], []
    for seed in SEEDS:
        keys = dict(dataset="d", seed=seed, combination="B4", method="probe", metric="purity")
        rows.append(tidy.summary_row(np.ones(4), n_resamples=200, confidence=0.95, bootstrap_seed=seed,
                                     proportion=True, kind="prototypes", category="prototype_fidelity",
                                     higher_is_better=True, **keys))
        samples += tidy.sample_rows(np.ones(4), [None] * 4, np.arange(4), **keys)
    row = _agg(tidy.frame(rows), tidy.samples_frame(samples)).iloc[0]
    assert row["interval"] == "hierarchical_bootstrap" and row["value"] == 1.0
    assert row["ci_low"] < 0.6 and row["ci_high"] == 1.0
