"""Prototype fidelity on constructed embeddings: on-data vs off-data, pure vs mixed, spread vs collapsed."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmx_eval.metrics import prototype_fidelity as pf


def _blobs(n_per_class=40, n_classes=3, dim=16, sep=20.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * sep
    x = np.concatenate([c + rng.normal(size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(n_classes), n_per_class)
    return x, y, centres


def test_prototypes_on_training_points_have_ratio_at_most_one():
    x, _, _ = _blobs()
    protos = x[[0, 50, 100]]
    assert pf.proximity_ratio(protos, x) <= 1.0
    assert pf.proximity_ratio(protos, x) == pytest.approx(0.0, abs=1e-6)
    assert pf.proximity_ratio(protos, x, metric="cosine") <= 1.0


def test_far_prototypes_have_ratio_far_above_one_and_class_means_sit_among_the_data():
    x, y, _ = _blobs()
    far = x[:3] * 50.0
    assert pf.proximity_ratio(far, x) > 20.0
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    assert pf.proximity_ratio(means, x) < 1.5


def test_cosine_proximity_ignores_the_scale_of_prototypes():
    x, _, _ = _blobs()
    protos = x[[3, 60]]
    assert pf.proximity_ratio(protos * 100.0, x, metric="cosine") == pytest.approx(
        pf.proximity_ratio(protos, x, metric="cosine"), abs=1e-9)
    assert pf.proximity_ratio(protos * 100.0, x) > 10.0


def test_purity_of_class_means_on_separated_blobs_is_one_and_mixed_is_lower():
    x, y, _ = _blobs()
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    assert pf.class_purity(means, [0, 1, 2], x, y, m=10) == 1.0
    assert pf.class_purity(means, [1, 2, 0], x, y, m=10) == 0.0
    with pytest.raises(ValueError, match="m=500"):
        pf.class_purity(means, [0, 1, 2], x, y, m=500)


def test_nearest_neighbours_in_blocks_equal_brute_force(monkeypatch):
    monkeypatch.setattr(pf, "_BLOCK_ROWS", 7)  # force several blocks and self-exclusion across them
    x, _, _ = _blobs(n_per_class=10, sep=1.0)
    d, i = pf.nearest_neighbours(x, x, k=2, exclude_self=True)
    full = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(full, np.inf)
    assert np.array_equal(i[:, 0], full.argmin(1))
    assert np.allclose(d[:, 0], full.min(1))
    assert np.all(i[:, 0] != np.arange(len(x)))


def test_distances_are_exact_differences_not_a_cancelling_product():
    # Points 1e-3 apart, 1e6 from the origin, in 64 dimensions: ||a||^2 - 2<a, b> + ||b||^2 (the
    # BLAS product path) loses every digit to cancellation, and a multi-threaded product may sum in
    # another order on the next run. The difference form gives the exact distance, the same bits on
    # every call and with any number of threads.
    import torch

    rng = np.random.default_rng(0)
    base = np.full((1, 64), 1e6)
    reference = base + rng.normal(scale=1e-3, size=(300, 64))
    queries = base + rng.normal(scale=1e-3, size=(40, 64))
    exact = np.sqrt(((queries[:, None, :] - reference[None, :, :]) ** 2).sum(-1))
    dist, idx = pf.nearest_neighbours(queries, reference, k=3)
    np.testing.assert_array_equal(idx[:, 0], exact.argmin(1))
    np.testing.assert_allclose(dist, np.sort(exact, axis=1)[:, :3], rtol=1e-9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        again = pf.nearest_neighbours(queries, reference, k=3)[0]
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(dist, again)


def test_decision_agreement_detects_decisions_that_need_offsets():
    x, y, _ = _blobs()
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    nearest = pf.nearest_prototype_decisions(x, means, [0, 1, 2])
    assert pf.decision_agreement(x, means, [0, 1, 2], nearest).mean() == 1.0
    # a head whose offsets flip every class-0 decision to class 1
    biased = np.where(nearest == 0, 1, nearest)
    assert pf.decision_agreement(x, means, [0, 1, 2], biased).mean() == pytest.approx(2 / 3)


def test_diversity_is_one_for_a_simplex_and_zero_when_collapsed():
    simplex = np.eye(6) * 3.0  # every pair equally far apart
    assert pf.diversity(simplex) == pytest.approx(1.0)
    collapsed = np.zeros((6, 4))
    assert pf.diversity(collapsed) == 0.0
    mostly = np.zeros((6, 4))
    mostly[0] = 5.0  # five coincide, one far away: the five have collapsed
    assert pf.diversity(mostly) < 0.2
    pairs = np.repeat(np.eye(4) * 10.0, 2, axis=0) + np.random.default_rng(0).normal(size=(8, 4)) * 0.01
    assert pf.diversity(pairs) < pf.diversity(np.eye(8) * 10.0)
    assert np.isnan(pf.diversity(np.eye(2)))


def test_diversity_does_not_depend_on_the_scale():
    p = np.random.default_rng(3).normal(size=(10, 5))
    assert pf.diversity(p) == pytest.approx(pf.diversity(p * 1000.0))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 12), st.integers(1, 15))
def test_ranges(seed, n_protos, m):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 4))
    y = rng.integers(0, 3, 30)
    p = rng.normal(size=(n_protos, 4)) * rng.uniform(0.1, 10)
    classes = rng.integers(0, 3, n_protos)
    assert 0.0 <= pf.class_purity(p, classes, x, y, m=m) <= 1.0
    assert 0.0 <= pf.diversity(p) <= 1.0
    assert pf.proximity_ratio(p, x) >= 0.0
    assert 0.0 <= pf.proximity_ratio(p, x, metric="cosine")


# ------------------------------------------------------------------ linear prototypes
def _linear_head(seed=0, n_per_class=25, n_classes=4, dim=12):
    """Non-negative embeddings (like ReLU features) and a small-norm linear head that separates them."""
    rng = np.random.default_rng(seed)
    x, y, centres = _blobs(n_per_class=n_per_class, n_classes=n_classes, dim=dim, sep=4.0, seed=seed)
    x = np.abs(x) + 1.0
    means = np.stack([x[y == c].mean(0) for c in range(n_classes)])
    W = 0.05 * (means - means.mean(0)) + 0.01 * rng.normal(size=means.shape)
    return x, y, W


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), log_alpha=st.floats(-3, 3), shift=st.floats(-50, 50),
       bias=st.floats(-10, 10))
def test_favourable_reading_and_linear_purity_do_not_depend_on_alpha_and_v(seed, log_alpha, shift, bias):
    """Invariance: an equivalent head alpha (w_c + v) has the same favourable prototypes, proximity
    and centred-logit purity (docs/METHOD.md, section 6)."""
    x, y, W = _linear_head(seed % 50)
    v = np.random.default_rng(seed).normal(size=W.shape[1]) * shift
    alpha = float(10.0 ** log_alpha)
    W2 = alpha * (W + v)
    a, b = pf.favourable_linear_reading(W, x, y), pf.favourable_linear_reading(W2, x, y)
    assert b.proximity == pytest.approx(a.proximity, rel=1e-7)
    assert np.allclose(a.prototypes, b.prototypes, rtol=1e-6, atol=1e-6 * np.abs(x).max())
    assert np.array_equal(pf.linear_class_purities(W, x, y, m=10),
                          pf.linear_class_purities(W2, x, y, m=10))
    assert pf.diversity(W2) == pytest.approx(pf.diversity(W), abs=1e-9)


def test_favourable_reading_is_closer_to_the_data_than_small_stored_weights():
    x, y, W = _linear_head(1)
    stored = pf.proximity_ratio(W, x)
    best = pf.favourable_linear_reading(W, x, y)
    assert best.proximity == pytest.approx(pf.proximity_ratio(best.prototypes, x))
    assert best.proximity < 0.5 * stored
    assert best.alpha > 0 and best.alpha_ls > 0
    # the stored reading is not invariant: that is why both readings are labelled
    assert pf.proximity_ratio(30.0 * (W + x.mean(0)), x) != pytest.approx(stored, rel=1e-3)


def test_linear_purity_ranks_by_the_centred_logit_and_sees_a_wrong_head():
    x, y, W = _linear_head(2)
    assert pf.linear_class_purities(W, x, y, m=10).tolist() == [1.0] * 4
    assert pf.linear_class_purities(W[[1, 2, 3, 0]], x, y, m=10).tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="m=500"):
        pf.linear_class_purities(W, x, y, m=500)


def test_a_head_that_decides_nothing_has_no_favourable_reading():
    x, y, _ = _linear_head(3)
    flat = np.ones((4, x.shape[1]))
    assert np.isnan(pf.favourable_linear_reading(flat, x, y).proximity)
