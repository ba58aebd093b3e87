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


# ------------------------------------------------------------------ seeds as clusters, proportions
from scipy.stats import binomtest  # noqa: E402

from kmx_eval.metrics.bootstrap import (  # noqa: E402
    cluster_bootstrap_ci,
    effective_images,
    paired_cluster_bootstrap,
    proportion_ci,
    seed_spread,
    summarise,
    wilson_interval,
)


def test_one_seed_cluster_bootstrap_is_the_plain_bootstrap():
    v = np.random.default_rng(3).normal(size=57)
    assert cluster_bootstrap_ci(v, 400, 0.9, seed=5) == bootstrap_ci(v, 400, 0.9, seed=5)
    assert cluster_bootstrap_ci(v[None, :], 400, 0.9, seed=5) == bootstrap_ci(v, 400, 0.9, seed=5)


def test_images_are_clusters_across_seeds():
    # Two seeds that agree on every image: the image-level spread is all there is, so the
    # interval must be as wide as one seed's (treating the 2n values as independent would
    # shrink it by about 1/sqrt(2)).
    rng = np.random.default_rng(4)
    image_effect = rng.normal(size=200)
    same = np.stack([image_effect, image_effect])
    _, lo1, hi1 = cluster_bootstrap_ci(image_effect, 1000, seed=0)
    _, lo2, hi2 = cluster_bootstrap_ci(same, 1000, seed=0)
    assert (hi2 - lo2) == pytest.approx(hi1 - lo1, rel=1e-12)
    pooled = bootstrap_ci(same.ravel(), 1000, seed=0)
    assert (pooled[2] - pooled[1]) < 0.8 * (hi2 - lo2)
    # Seeds that disagree independently on every image: averaging over seeds narrows the interval.
    noisy = image_effect[None, :] * 0 + rng.normal(size=(4, 200))
    _, lo4, hi4 = cluster_bootstrap_ci(noisy, 1000, seed=0)
    assert (hi4 - lo4) < 0.7 * (hi1 - lo1)


def test_missing_values_count_for_the_seeds_that_have_them():
    v = np.array([[1.0, 2.0, np.nan, 4.0], [np.nan, 2.0, 3.0, np.nan]])
    m, lo, hi = cluster_bootstrap_ci(v, 300, seed=0)
    assert m == pytest.approx((7 / 3 + 5 / 2) / 2)
    assert lo <= m <= hi
    assert all(np.isnan(cluster_bootstrap_ci(np.full((2, 3), np.nan), 100)))


def test_seed_spread_is_the_sd_of_per_seed_means():
    v = np.array([[1.0, 3.0], [2.0, 6.0], [0.0, np.nan]])
    sd, n = seed_spread(v)
    assert n == 3 and sd == pytest.approx(np.std([2.0, 4.0, 0.0], ddof=1))
    assert np.isnan(seed_spread([1.0, 2.0])[0]) and seed_spread([1.0, 2.0])[1] == 1


def test_paired_cluster_difference_of_identical_arrays_is_exactly_zero():
    a = np.random.default_rng(5).random((3, 30))
    assert paired_cluster_bootstrap(a, a.copy(), 200) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="aligned"):
        paired_cluster_bootstrap(a, a[:2])


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (48, 48), (47, 48), (1, 1), (150, 300)])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_wilson_matches_scipy(k, n, confidence):
    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence)
    assert low == pytest.approx(ref.low, abs=1e-12) and high == pytest.approx(ref.high, abs=1e-12)


def test_proportion_at_100_percent_does_not_collapse():
    p, lo, hi = proportion_ci(np.ones(48))
    assert p == 1.0 and hi == 1.0 and lo == pytest.approx(0.9259, abs=1e-4)
    assert bootstrap_ci(np.ones(48)) == (1.0, 1.0, 1.0)  # what the percentile bootstrap gives
    with pytest.raises(ValueError, match="0/1"):
        proportion_ci([0.5, 1.0])


def test_effective_images_spans_clusters_to_independent_seeds():
    rng = np.random.default_rng(6)
    hits = (rng.random(400) < 0.7).astype(float)
    assert effective_images(np.stack([hits, hits, hits])) == pytest.approx(400)  # seeds add nothing
    independent = (rng.random((3, 400)) < 0.7).astype(float)
    assert 800 < effective_images(independent) <= 1200
    assert effective_images(np.ones((3, 50))) == 50  # no variance: the conservative end
    # More seeds that agree do not make a proportion more certain than its images allow.
    one = proportion_ci(hits)
    three = proportion_ci(np.stack([hits, hits, hits]))
    assert three == pytest.approx(one, abs=1e-12)


def test_summarise_reports_the_method_and_seed_spread():
    acc = np.array([[1, 1, 0, 1], [1, 0, 0, 1.0]])
    s = summarise(acc, proportion=True)
    # Two seeds: the Wilson interval joined with the hierarchical one (issue 22).
    assert s.method == "hierarchical_wilson" and s.n == 4 and s.n_seeds == 2
    assert s.mean == pytest.approx(0.625) and s.seed_sd == pytest.approx(np.std([0.75, 0.5], ddof=1))
    wilson = proportion_ci(acc)
    assert s.low <= wilson[1] and s.high >= wilson[2]
    assert summarise(acc[:1], proportion=True).method == "wilson"
    assert summarise(acc[:1], proportion=True)[:3] == proportion_ci(acc[:1])
    r = summarise(acc * 2.5, proportion=False, n_resamples=200)
    assert r.method == "hierarchical_bootstrap" and r.low <= r.mean <= r.high


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(2, 30), st.floats(-50, 50), st.integers(0, 2**31 - 1))
def test_cluster_bootstrap_invariances(n_seeds, n_images, shift, data_seed):
    v = np.random.default_rng(data_seed).normal(size=(n_seeds, n_images))
    m, lo, hi = cluster_bootstrap_ci(v, 100, seed=1)
    assert lo - 1e-9 <= m <= hi + 1e-9
    # Equivariant under a shift of every value.
    ms, los, his = cluster_bootstrap_ci(v + shift, 100, seed=1)
    assert (ms, los, his) == pytest.approx((m + shift, lo + shift, hi + shift), abs=1e-9)
    # The point estimate ignores the order of images and of seeds.
    perm = v[::-1, np.random.default_rng(data_seed + 1).permutation(n_images)]
    assert cluster_bootstrap_ci(perm, 100, seed=1)[0] == pytest.approx(m, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 500), st.data(), st.floats(0.5, 0.99))
def test_wilson_is_a_mirror_image_under_complement(n, data, confidence):
    k = data.draw(st.integers(0, n))
    low, high = wilson_interval(k, n, confidence)
    clow, chigh = wilson_interval(n - k, n, confidence)
    assert 0.0 <= low <= k / n <= high <= 1.0
    assert low == pytest.approx(1.0 - chigh, abs=1e-12) and high == pytest.approx(1.0 - clow, abs=1e-12)


def test_seed_mean_is_the_cluster_bootstrap_point_estimate():
    from kmx_eval.metrics import bootstrap

    v = np.array([[1.0, 2.0, np.nan, 4.0], [0.0, np.nan, np.nan, 2.0], [np.nan] * 4])
    # Seed 0: 7/3, seed 1: 1, seed 2: no value (left out).
    assert bootstrap.seed_mean(v) == pytest.approx((7 / 3 + 1.0) / 2)
    assert bootstrap.seed_mean(v) == bootstrap.cluster_bootstrap_ci(v, n_resamples=50)[0]
    assert np.isnan(bootstrap.seed_mean(np.full((2, 3), np.nan)))


# ------------------------------------------------------------------ hierarchical (seeds, then prototypes)
from kmx_eval.metrics.bootstrap import hierarchical_bootstrap_ci, hierarchical_difference_ci  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=30), st.integers(0, 1000))
def test_hierarchical_bootstrap_with_one_seed_is_the_ordinary_bootstrap(values, seed):
    assert hierarchical_bootstrap_ci([values], n_resamples=300, seed=seed) == bootstrap_ci(
        values, n_resamples=300, seed=seed)


@settings(max_examples=40, deadline=None)
@given(n_seeds=st.integers(2, 5), sizes=st.lists(st.integers(1, 12), min_size=5, max_size=5),
       spread=st.floats(0.0, 10.0), data_seed=st.integers(0, 10_000), confidence=st.sampled_from([0.8, 0.95]))
def test_hierarchical_interval_is_never_narrower_than_the_seed_spread_allows(n_seeds, sizes, spread, data_seed,
                                                                             confidence):
    """The interval contains the percentile interval of the per-seed means resampled as seeds; with 2 or 3
    seeds at 95% that is [min, max] of the per-seed means (the case the issue found hidden by a narrow
    mean of per-seed intervals)."""
    rng = np.random.default_rng(data_seed)
    groups = [rng.normal(loc=rng.normal() * spread, size=sizes[s]) for s in range(n_seeds)]
    mean, low, high = hierarchical_bootstrap_ci(groups, n_resamples=400, confidence=confidence, seed=3)
    seed_means = np.array([g.mean() for g in groups])
    assert mean == pytest.approx(seed_means.mean())
    assert low <= mean <= high
    gen = np.random.default_rng(3)
    drawn = gen.integers(0, n_seeds, size=(400, n_seeds))
    a = (1 - confidence) / 2
    seed_low, seed_high = np.quantile(seed_means[drawn].mean(axis=1), [a, 1 - a])
    assert low <= seed_low + 1e-12 and high >= seed_high - 1e-12
    if n_seeds <= 3 and confidence == 0.95:
        assert low <= seed_means.min() + 1e-12 and high >= seed_means.max() - 1e-12


def test_hierarchical_interval_includes_the_seed_spread_the_mean_of_per_seed_bounds_hides():
    """The issue's case: three seeds at 2.08 / 0.47 / 2.10 with tight prototypes within each seed."""
    rng = np.random.default_rng(0)
    groups = [m + 0.01 * rng.normal(size=10) for m in (2.08, 0.47, 2.10)]
    per_seed = [bootstrap_ci(g, n_resamples=500, seed=0) for g in groups]
    mean_of_bounds = (np.mean([p[1] for p in per_seed]), np.mean([p[2] for p in per_seed]))
    _, low, high = hierarchical_bootstrap_ci(groups, n_resamples=500, seed=0)
    assert high - low > 1.5 > 10 * (mean_of_bounds[1] - mean_of_bounds[0])
    assert low < 0.5 and high > 2.0


def test_hierarchical_difference_pairs_seeds_and_drops_missing_ones():
    a = [np.array([3.0, 3.2, np.nan]), np.array([np.nan]), np.array([2.9, 3.1])]
    b = [np.array([1.0, 1.1]), np.array([1.0]), np.array([0.9, 1.0, 1.1])]
    mean, low, high = hierarchical_difference_ci(a, b, n_resamples=300, seed=1)
    assert mean == pytest.approx(((3.1 - 1.05) + (3.0 - 1.0)) / 2)
    assert 0 < low <= mean <= high
    same = hierarchical_difference_ci(b, b, n_resamples=300, seed=1)
    assert same[0] == 0.0 and same[1] < 0 < same[2]  # two independent resamples of the same prototypes
    assert np.isnan(hierarchical_difference_ci([[np.nan]], [[1.0]])[0])
    with pytest.raises(ValueError, match="same seeds"):
        hierarchical_difference_ci(a, b[:2])


# ------------------------------------------------------- seeds in the interval of per-image scores (issue 22)
from kmx_eval.metrics.bootstrap import (bootstrap_p_value, hierarchical_matrix_test,  # noqa: E402
                                        paired_hierarchical_test)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=30), st.integers(0, 1000))
def test_one_seed_hierarchical_matrix_is_the_image_bootstrap(values, seed):
    """With one training seed the seeds-then-images bootstrap is the image bootstrap, also under NaN."""
    row = np.array(values + [np.nan])
    test = hierarchical_matrix_test(row[None, :], n_resamples=300, seed=seed)
    assert tuple(test[:3]) == bootstrap_ci(row, n_resamples=300, seed=seed)
    assert tuple(test[:3]) == cluster_bootstrap_ci(np.array(values)[None, :], n_resamples=300, seed=seed)
    assert 0.0 < test.p_value <= 1.0


@settings(max_examples=40, deadline=None)
@given(n_seeds=st.integers(2, 3), n_images=st.integers(2, 30), offsets=st.lists(st.floats(-100, 100), min_size=3,
       max_size=3), data_seed=st.integers(0, 10_000))
def test_per_image_interval_is_never_narrower_than_the_spread_of_the_per_seed_means(n_seeds, n_images, offsets,
                                                                                     data_seed):
    """Seeds whose means differ a lot: the interval over seeds and images contains [min, max] of the
    per-seed means (2 or 3 seeds at 95%), which the cluster bootstrap over fixed seeds does not."""
    rng = np.random.default_rng(data_seed)
    v = rng.normal(size=(n_seeds, n_images)) * 0.01 + np.array(offsets[:n_seeds])[:, None]
    mean, low, high, p = hierarchical_matrix_test(v, n_resamples=400, seed=2)
    seed_means = v.mean(axis=1)
    assert mean == pytest.approx(seed_means.mean())
    assert low <= seed_means.min() + 1e-9 and high >= seed_means.max() - 1e-9
    if seed_means.min() < 0 < seed_means.max():  # the seeds disagree on the sign: no evidence
        assert p > 0.05


def test_cluster_bootstrap_hides_the_seeds_that_the_hierarchical_interval_shows():
    rng = np.random.default_rng(0)
    v = np.array([[0.2], [0.5], [0.8]]) + 0.01 * rng.normal(size=(3, 40))
    _, c_low, c_high = cluster_bootstrap_ci(v, n_resamples=500, seed=0)
    _, h_low, h_high, _ = hierarchical_matrix_test(v, n_resamples=500, seed=0)
    assert c_high - c_low < 0.02 and h_low <= 0.21 and h_high >= 0.79


def test_paired_hierarchical_difference_and_its_p_value():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 50))
    same = paired_hierarchical_test(a, a, n_resamples=200)
    assert tuple(same) == (0.0, 0.0, 0.0, 1.0)
    shifted = paired_hierarchical_test(a + 1.0, a, n_resamples=200)
    assert shifted.mean == pytest.approx(1.0) and shifted.p_value == pytest.approx(2 / 201)
    with pytest.raises(ValueError, match="aligned"):
        paired_hierarchical_test(a, a[:2])


def test_bootstrap_p_value_inverts_the_percentile_interval():
    stats = np.arange(-100, 900) / 100.0  # 101 values at or below 0, 900 at or above
    assert bootstrap_p_value(stats) == pytest.approx(2 * 102 / 1001)
    assert bootstrap_p_value(-stats) == bootstrap_p_value(stats)
    assert bootstrap_p_value(np.zeros(10)) == 1.0 and np.isnan(bootstrap_p_value([np.nan]))
