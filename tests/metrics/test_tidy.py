"""Tidy rows: fixed columns, sorted, byte-stable files, no silent blanks."""

import random

import numpy as np
import pytest

from kmx_eval import io
from kmx_eval.metrics import tidy

KEYS = dict(dataset="shapes", seed=0, combination="B4", kind="explainer", category="localisation",
            higher_is_better=True)


def _rows():
    rows = []
    for method in ("margin", "cam", "random"):
        for metric in ("PointingGame", "AUC"):
            rows.append(tidy.row(method=method, metric=metric, value=0.5, ci_low=0.4, ci_high=0.6,
                                 n=10, chance=0.2, **KEYS))
    return rows


def test_columns_match_the_architecture_contract():
    assert tidy.TIDY_COLUMNS == (
        "dataset", "seed", "combination", "kind", "method", "category", "metric", "value",
        "ci_low", "ci_high", "n", "n_missing", "chance", "higher_is_better", "note")
    assert list(tidy.frame(_rows()).columns) == list(tidy.TIDY_COLUMNS)


def test_frame_is_sorted_and_byte_stable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = _rows()
    io.write_csv("metrics/a.csv", tidy.frame(rows))
    random.Random(1).shuffle(rows)
    io.write_csv("metrics/b.csv", tidy.frame(rows))
    a, b = (tmp_path / "metrics/a.csv").read_bytes(), (tmp_path / "metrics/b.csv").read_bytes()
    assert a == b
    df = tidy.frame(rows)
    assert list(df["method"]) == sorted(df["method"])


def test_missing_value_needs_a_note_and_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="needs a note"):
        tidy.row(method="m", metric="AUC", value=None, **KEYS)
    r = tidy.row(method="m", metric="AUC", value=None, note="not applicable: dataset has no masks", **KEYS)
    assert np.isnan(r["value"]) and r["note"].startswith("not applicable")
    with pytest.raises(ValueError, match="kind"):
        tidy.row(**{**KEYS, "kind": "model"}, method="m", metric="AUC", value=1.0)
    with pytest.raises(ValueError, match="category"):
        tidy.row(**{**KEYS, "category": "speed"}, method="m", metric="AUC", value=1.0)


def test_duplicate_keys_are_refused():
    rows = _rows()
    with pytest.raises(ValueError, match="share the key"):
        tidy.frame(rows + rows[:1])


def test_summary_row_counts_missing_samples_and_their_reasons():
    values = np.array([1.0, 0.0, np.nan, 1.0, np.nan])
    reasons = [None, None, "empty mask", None, "constant map"]
    r = tidy.summary_row(values, reasons=reasons, n_resamples=200, confidence=0.9, bootstrap_seed=0,
                         method="cam", metric="PointingGame", **KEYS)
    assert r["value"] == pytest.approx(2 / 3)
    assert r["n"] == 3 and r["n_missing"] == 2
    assert r["ci_low"] <= r["value"] <= r["ci_high"]
    assert r["note"] == "2 missing: constant map (1), empty mask (1)"


def test_samples_and_curves_frames_have_their_columns():
    s = tidy.samples_frame(tidy.sample_rows([0.5, np.nan], [None, "empty mask"], np.array([7, 3]),
                                            dataset="d", seed=0, combination="B4", method="m", metric="AUC"))
    assert list(s.columns) == list(tidy.SAMPLE_COLUMNS)
    assert list(s["sample"]) == [3, 7] and list(s["reason"]) == ["empty mask", ""]
    c = tidy.curves_frame(tidy.curve_rows([0.0, 0.5, 1.0], [3.0, 2.0, 1.0], dataset="d", seed=0,
                                          combination="B4", method="m"))
    assert list(c.columns) == list(tidy.CURVE_COLUMNS) and len(c) == 3


# ------------------------------------------------------------------ intervals of proportions (issue 12)
BOOT = dict(n_resamples=200, confidence=0.95, bootstrap_seed=3)
HEAD = dict(dataset="d", seed=3, combination="B4", kind="head", method="kmeans", category="accuracy",
            metric="accuracy")


def test_a_proportion_at_100_percent_gets_a_wilson_interval_below_1():
    from kmx_eval.metrics.bootstrap import bootstrap_ci, wilson_interval

    ones = np.ones(48)
    old = tidy.summary_row(ones, **BOOT, **HEAD)
    assert (old["ci_low"], old["ci_high"]) == (1.0, 1.0)  # the percentile bootstrap collapses
    r = tidy.summary_row(ones, **BOOT, **HEAD, proportion=True)
    assert r["value"] == 1.0 and r["ci_high"] == 1.0
    assert r["ci_low"] == pytest.approx(0.9259, abs=1e-4) and r["ci_low"] < 1
    # Wilson at n = the non-missing values; the value is the same mean as before.
    v = np.r_[np.ones(30), np.zeros(10), np.full(5, np.nan)]
    r = tidy.summary_row(v, **BOOT, **HEAD, proportion=True)
    assert (r["ci_low"], r["ci_high"]) == wilson_interval(30, 40, 0.95)
    assert r["value"] == bootstrap_ci(v, seed=3)[0] and r["n"] == 40 and r["n_missing"] == 5
    # A share per prototype (purity k_j / m): Wilson at the number of prototypes.
    purity = np.array([1.0, 0.8, 0.6, 1.0])
    r = tidy.summary_row(purity, **BOOT, **HEAD, proportion=True)
    assert (r["ci_low"], r["ci_high"]) == wilson_interval(purity.mean() * 4, 4, 0.95)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tidy.summary_row(np.array([0.5, 2.0]), **BOOT, **HEAD, proportion=True)
    nothing = tidy.summary_row(np.full(3, np.nan), **BOOT, **HEAD, proportion=True)
    assert np.isnan(nothing["value"]) and np.isnan(nothing["ci_low"]) and nothing["note"] == "3 missing"


def test_a_real_valued_row_keeps_its_percentile_bootstrap():
    from kmx_eval.metrics.bootstrap import bootstrap_ci

    v = np.random.default_rng(0).random(30)
    r = tidy.summary_row(v, **BOOT, **HEAD)
    assert (r["value"], r["ci_low"], r["ci_high"]) == bootstrap_ci(v, 200, 0.95, seed=3)
