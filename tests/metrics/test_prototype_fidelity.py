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


def test_scaled_diversity_is_one_for_a_simplex_and_zero_when_collapsed():
    simplex = np.eye(6) * 3.0  # every pair equally far apart
    assert pf.diversity_scaled(simplex) == pytest.approx(1.0)
    collapsed = np.zeros((6, 4))
    assert pf.diversity_scaled(collapsed) == 0.0
    mostly = np.zeros((6, 4))
    mostly[0] = 5.0  # five coincide, one far away: the five have collapsed
    assert pf.diversity_scaled(mostly) < 0.2
    pairs = np.repeat(np.eye(4) * 10.0, 2, axis=0) + np.random.default_rng(0).normal(size=(8, 4)) * 0.01
    assert pf.diversity_scaled(pairs) < pf.diversity_scaled(np.eye(8) * 10.0)
    assert np.isnan(pf.diversity_scaled(np.eye(2)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_protos=st.integers(3, 12), log_scale=st.floats(-4, 4),
       shift=st.floats(-100, 100))
def test_scaled_diversity_is_invariant_to_a_common_rescaling_rotation_and_shift(seed, n_protos, log_scale,
                                                                              shift):
    """Invariance (docs/METHOD.md, section 4): p -> s Q p + t leaves every prototype's score unchanged."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n_protos, 5)) * rng.uniform(0.1, 10)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    moved = 10.0 ** log_scale * p @ Q.T + shift * rng.normal(size=5)
    np.testing.assert_allclose(pf.diversity_scaled_per_prototype(moved), pf.diversity_scaled_per_prototype(p),
                               atol=1e-7)


def _kmex_diversity_by_hand(p):
    """KMEx's formula in plain float64 numpy (utils/evaluation.py, ``diversity``): all pairs, the
    diagonal included, similarity log(d + 1) - log(d + 1e-4), row softmax, entropy / log P, NaN -> 1."""
    d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(axis=-1))
    s = np.log(d + 1.0) - np.log(d + 1e-4)
    q = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    e = -(q * np.log(q)).sum(axis=1) / np.log(len(p))
    return np.where(np.isnan(e), 1.0, e).mean()


def test_kmex_diversity_is_kmex_formula_on_exact_distances():
    p = np.random.default_rng(0).normal(size=(50, 8))
    # the values (0.0158..., 0.2156...), here from the formula by hand to 7 digits
    assert _kmex_diversity_by_hand(p) == pytest.approx(0.0158286, abs=1e-6)
    assert _kmex_diversity_by_hand(p * 0.01) == pytest.approx(0.2155811, abs=1e-6)
    assert pf.diversity_kmex(p) == pytest.approx(_kmex_diversity_by_hand(p), abs=1e-6)
    assert pf.diversity_kmex(p * 0.01) == pytest.approx(_kmex_diversity_by_hand(p * 0.01), abs=1e-6)
    per = pf.diversity_kmex_per_prototype(p)
    assert per.shape == (50,) and np.all((per >= 0) & (per <= 1))


def test_kmex_diversity_depends_on_the_scale_and_the_scaled_one_does_not():
    p = np.random.default_rng(0).normal(size=(50, 8))
    assert pf.diversity_kmex(p * 0.01) > 10 * pf.diversity_kmex(p)
    assert pf.diversity_scaled(p * 0.01) == pytest.approx(pf.diversity_scaled(p), abs=1e-9)


def test_kmex_diversity_differs_from_kmex_float32_run_only_by_the_cdist_diagonal():
    """KMEx's own float32 torch.cdist (matrix-product path) leaves the diagonal near 1e-3 instead of 0,
    which alone moves the value from 0.0158 to about 0.030; the exact distances give the formula's."""
    import torch

    p = np.random.default_rng(0).normal(size=(50, 8))
    t = torch.tensor(p, dtype=torch.float32)
    d = torch.cdist(t, t, compute_mode="use_mm_for_euclid_dist")
    s = torch.log(d + 1) - torch.log(d + 1e-4)
    q = torch.softmax(s, -1)
    float32 = torch.nan_to_num(-(torch.log(q) * q).sum(-1) / np.log(50), 1).mean().item()
    assert float(d.diagonal().max()) > 1e-4  # the product path's cancellation on the diagonal
    assert float32 > 1.5 * pf.diversity_kmex(p)


def test_kmex_diversity_of_one_prototype_is_kmex_nan_read_as_one():
    assert pf.diversity_kmex_per_prototype(np.ones((1, 3))).tolist() == [1.0]
    # coinciding prototypes are no NaN: each row then spreads over the copies
    assert pf.diversity_kmex(np.zeros((4, 3))) == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 12), st.integers(1, 15))
def test_ranges(seed, n_protos, m):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(30, 4))
    y = rng.integers(0, 3, 30)
    p = rng.normal(size=(n_protos, 4)) * rng.uniform(0.1, 10)
    classes = rng.integers(0, 3, n_protos)
    assert 0.0 <= pf.class_purity(p, classes, x, y, m=m) <= 1.0
    assert 0.0 <= pf.diversity_scaled(p) <= 1.0
    assert 0.0 <= pf.diversity_kmex(p) <= 1.0
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
@given(seed=st.integers(0, 10_000), log_alpha=st.floats(-3, 3), shift=st.floats(-50, 50))
def test_linear_purity_and_scaled_diversity_do_not_depend_on_alpha_and_v(seed, log_alpha, shift):
    """Invariance: an equivalent head alpha (w_c + v) has the same centred-logit purity and scale-free
    diversity (docs/METHOD.md, section 6)."""
    x, y, W = _linear_head(seed % 50)
    v = np.random.default_rng(seed).normal(size=W.shape[1]) * shift
    W2 = float(10.0 ** log_alpha) * (W + v)
    assert np.array_equal(pf.linear_class_purities(W, x, y, m=10),
                          pf.linear_class_purities(W2, x, y, m=10))
    assert pf.diversity_scaled(W2) == pytest.approx(pf.diversity_scaled(W), abs=1e-9)


def test_linear_purity_ranks_by_the_centred_logit_and_sees_a_wrong_head():
    x, y, W = _linear_head(2)
    assert pf.linear_class_purities(W, x, y, m=10).tolist() == [1.0] * 4
    assert pf.linear_class_purities(W[[1, 2, 3, 0]], x, y, m=10).tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="m=500"):
        pf.linear_class_purities(W, x, y, m=500)
