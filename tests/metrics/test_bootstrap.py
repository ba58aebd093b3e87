"""Percentile bootstrap: coverage of the mean, shrinking with n, seeded, exact paired zero."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmx_eval.metrics.bootstrap import bootstrap_ci, paired_bootstrap


def test_interval_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.normal(size=20)
    large = rng.normal(size=2000)
    m1, lo1, hi1 = bootstrap_ci(small, n_resamples=500, seed=0)
    m2, lo2, hi2 = bootstrap_ci(large, n_resamples=500, seed=0)
    assert lo1 <= m1 <= hi1 and lo2 <= m2 <= hi2
    assert (hi2 - lo2) < (hi1 - lo1) / 4  # width ~ 1/sqrt(n): 10x the samples, ~1/3.2 the width
    # the 95% interval of a standard normal mean over 2000 samples is about +-0.044
    assert hi2 - lo2 == pytest.approx(2 * 1.96 / np.sqrt(2000), rel=0.25)


def test_same_seed_same_interval_other_seed_other_interval():
    v = np.random.default_rng(1).random(50)
    assert bootstrap_ci(v, 300, 0.95, seed=3) == bootstrap_ci(v, 300, 0.95, seed=3)
    assert bootstrap_ci(v, 300, 0.95, seed=3) != bootstrap_ci(v, 300, 0.95, seed=4)


def test_nan_is_ignored_and_empty_is_nan():
    m, lo, hi = bootstrap_ci([1.0, np.nan, 3.0], n_resamples=100, seed=0)
    assert m == 2.0 and 1.0 <= lo <= hi <= 3.0
    assert all(np.isnan(bootstrap_ci([np.nan, np.nan], 100)))
    assert bootstrap_ci([0.7], 100) == (0.7, 0.7, 0.7)


def test_paired_difference_of_identical_vectors_is_exactly_zero():
    v = np.random.default_rng(2).random(40)
    assert paired_bootstrap(v, v.copy(), n_resamples=200, seed=0) == (0.0, 0.0, 0.0)


def test_paired_uses_only_samples_present_in_both():
    a = np.array([1.0, 2.0, np.nan, 4.0])
    b = np.array([0.0, np.nan, 1.0, 1.0])
    m, lo, hi = paired_bootstrap(a, b, n_resamples=100, seed=0)
    assert m == pytest.approx(2.0)  # (1-0) and (4-1)
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap(a, b[:3])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=60), st.floats(0.5, 0.99))
def test_interval_brackets_the_mean_and_lies_in_the_data_range(values, confidence):
    v = np.array(values)
    m, lo, hi = bootstrap_ci(v, n_resamples=100, confidence=confidence, seed=0)
    eps = 1e-9 * (1 + np.abs(v).max())
    assert v.min() - eps <= lo <= hi <= v.max() + eps
    assert m == pytest.approx(v.mean())
