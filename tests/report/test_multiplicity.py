"""Multiplicity control over the comparisons table (kmx_eval/report/multiplicity.py, issue 22)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control

from kmx_eval.report import multiplicity, tables


def _comparisons(rows):
    base = dict(dataset="d", a="B4", b="B234", n=10, n_seeds=3, mean_a=0.5, mean_b=0.6)
    return pd.DataFrame([{**base, **r} for r in rows])


def _row(method, metric, p, low, high, difference=0.1):
    return dict(method=method, metric=metric, p_value=p, ci_low=low, ci_high=high, difference=difference)


def test_secondary_rows_are_benjamini_hochberg_and_primary_rows_keep_their_p_value():
    rng = np.random.default_rng(0)
    p = np.concatenate([[0.002, 0.004, 0.03], rng.uniform(0.05, 1.0, size=40)])
    rows = [_row("margin", f"M{i}", x, 0.01, 0.2) for i, x in enumerate(p)]
    rows.append(_row("margin", "Primary", 0.03, 0.01, 0.2))
    out = multiplicity.adjust(_comparisons(rows), primary=[("margin", "Primary")], confidence=0.95)
    secondary = ~out["primary"]
    assert out.loc[secondary, "p_adjusted"].to_numpy() == pytest.approx(false_discovery_control(p, method="bh"))
    assert multiplicity.family_size(out) == len(p)
    prim = out[out["primary"]].iloc[0]
    assert prim["p_adjusted"] == 0.03 and prim["differs"]  # decided by its interval, unadjusted
    # A secondary row at the same unadjusted p = 0.03 with the same interval is within the noise after BH.
    same = out[out["metric"] == "M2"].iloc[0]
    assert same["p_adjusted"] > 0.05 and not same["differs"]
    # The two smallest survive BH among 43 rows only where k q / m allows: 0.002 * 43 / 1 > 0.05.
    assert out["differs"].sum() == 1 + int((out.loc[secondary, "p_adjusted"] < 0.05).sum())


def test_an_interval_that_includes_zero_is_never_declared():
    out = multiplicity.adjust(_comparisons([_row("margin", "A", 0.002, -0.01, 0.3),
                                            _row("margin", "B", 0.002, np.nan, np.nan),
                                            _row("kmeans", "accuracy", 0.002, -0.2, 0.1)]),
                              primary=[("kmeans", "accuracy")])
    assert not out["differs"].any()
    assert np.isnan(multiplicity.adjust(_comparisons([_row("m", "X", np.nan, 0.1, 0.2)]))["p_adjusted"].iloc[0])


def test_the_table_shows_adjusted_p_values_and_within_the_noise_follows_the_adjusted_decision():
    rows = [_row("margin", "RelevanceMassAccuracy", 0.01, 0.05, 0.2),  # primary: declared
            _row("margin", "PointingGame", 0.01, 0.05, 0.2)]  # secondary: BH over 1 + 40 rows
    rows += [_row("margin", f"Other{i}", 0.9, -0.1, 0.1) for i in range(40)]
    cmp = multiplicity.adjust(_comparisons(rows), primary=multiplicity.primary_endpoints(
        explainer="margin", fidelity_metric="RelevanceMassAccuracy"))
    t = tables.comparison_table(cmp)
    cells = t.cells
    assert cells.loc[("d", "B234 − B4", "margin", "RelevanceMassAccuracy"), "favours"].startswith("B234")
    assert cells.loc[("d", "B234 − B4", "margin", "RelevanceMassAccuracy"), "endpoint"] == "primary"
    assert cells.loc[("d", "B234 − B4", "margin", "PointingGame"), "favours"] == "within the noise"
    assert cells.loc[("d", "B234 − B4", "margin", "PointingGame"), "endpoint"] == "secondary"
    assert int(t.best["B − A"].sum()) == 1
    assert "Benjamini-Hochberg over the 41 secondary rows" in t.caption


def test_primary_endpoints_are_the_headline_claims():
    assert multiplicity.primary_endpoints(explainer="margin", fidelity_metric="M") == [("margin", "M"),
                                                                                        ("kmeans", "accuracy")]
    assert multiplicity.primary_endpoints(explainer="margin", fidelity_metric="M", faithfulness="F")[-1] == (
        "margin", "F")
    assert multiplicity.primary_endpoints(explainer="margin", fidelity_metric="M",
                                          declared=[["distance", "X"]]) == [("distance", "X")]
