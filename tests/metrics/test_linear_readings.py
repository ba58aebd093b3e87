"""Well-posed readings of linear prototypes (docs/METHOD.md, sections 4 and 6; issue 23): the canonical
offset-free reading, a proximity that shrinking cannot drive to 0, class means as a reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmx_eval.heads.kmeans import KMeansHead
from kmx_eval.metrics import prototype_fidelity as pf


def _data_with_means(P, n=30, seed=0):
    """Embeddings around each row of P whose class means are exactly P."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(len(P), n, P.shape[1]))
    noise -= noise.mean(axis=1, keepdims=True)
    z = (P[:, None, :] + noise).reshape(-1, P.shape[1])
    return z, np.repeat(np.arange(len(P)), n)


def _equivalent(W, b, alpha, v, beta):
    """The head alpha (logit + <v, z> + beta): the same decisions for every z."""
    return alpha * (W + v), alpha * (b + beta)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), log_alpha=st.floats(-3, 3), shift=st.floats(-20, 20),
       beta=st.floats(-50, 50))
def test_canonical_reading_of_a_distance_head_recovers_its_prototypes(seed, log_alpha, shift, beta):
    """A head built as -1/2 ||z - p_c||^2 (w_c = p_c, b_c = -1/2 ||p_c||^2), in any equivalent form, is read
    as p_c exactly when its class means are p_c (the member of the invariant family closest to them)."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(4, 7)) * 3
    W, b = P, -0.5 * (P ** 2).sum(axis=1)
    W2, b2 = _equivalent(W, b, 10.0 ** log_alpha, rng.normal(size=7) * shift, beta)
    reading = pf.canonical_linear_reading(W2, b2, P)
    assert reading.exact
    np.testing.assert_allclose(reading.prototypes, P, atol=1e-7 * np.abs(P).max())
    assert reading.scale == pytest.approx(10.0 ** -log_alpha, rel=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), log_alpha=st.floats(-3, 3), shift=st.floats(-20, 20),
       beta=st.floats(-50, 50))
def test_canonical_reading_depends_only_on_the_heads_equivalence_class(seed, log_alpha, shift, beta):
    rng = np.random.default_rng(seed)
    W, b, means = rng.normal(size=(5, 9)), rng.normal(size=5), rng.normal(size=(5, 9)) * 2
    W2, b2 = _equivalent(W, b, 10.0 ** log_alpha, rng.normal(size=9) * shift, beta)
    a, c = pf.canonical_linear_reading(W, b, means), pf.canonical_linear_reading(W2, b2, means)
    np.testing.assert_allclose(c.prototypes, a.prototypes, atol=1e-6 * max(1.0, np.abs(a.prototypes).max()))


def test_canonical_reading_is_the_heads_own_rule_without_offsets():
    rng = np.random.default_rng(1)
    W, b, means = rng.normal(size=(6, 10)), rng.normal(size=6) * 3, rng.normal(size=(6, 10))
    reading = pf.canonical_linear_reading(W, b, means)
    z = rng.normal(size=(2000, 10)) * 3
    nearest = pf.nearest_prototype_decisions(z, reading.prototypes, np.arange(6))
    assert np.array_equal(nearest, (z @ W.T + b).argmax(axis=1))
    assert reading.scale > 0


def test_canonical_reading_without_an_exact_member_says_so():
    rng = np.random.default_rng(2)
    W, b = rng.normal(size=(6, 2)), rng.normal(size=6)  # six classes in two dimensions
    reading = pf.canonical_linear_reading(W, b, rng.normal(size=(6, 2)))
    assert not reading.exact and reading.prototypes.shape == (6, 2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), log_alpha=st.floats(-12, -2), where=st.sampled_from(["train", "mean", "random"]))
def test_separation_proximity_cannot_be_driven_to_zero_by_shrinking_or_shifting(seed, log_alpha, where):
    """Readings u + alpha Wc with alpha shrunk below half the data spacing: the mean separation
    proximity stays >= 1 / C for any u (docs/METHOD.md, section 6), while the proximity ratio of the
    same reading goes to 0 with u on a training embedding."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(60, 5)) * 3
    Wc = pf.canonical_linear_prototypes(rng.normal(size=(4, 5)))
    u = {"train": z[rng.integers(60)], "mean": z.mean(axis=0), "random": rng.normal(size=5) * 5}[where]
    spacing = pf.nearest_neighbours(z, z, k=1, exclude_self=True)[0].min()
    gaps = np.linalg.norm(Wc[:, None] - Wc[None], axis=-1)[~np.eye(4, dtype=bool)].min()
    alpha = min(10.0 ** log_alpha, 0.5 * spacing / gaps)  # the closest pair within half the spacing
    reading = u + alpha * Wc
    assert np.nanmean(pf.separation_proximities(reading, np.arange(4), z)) >= 1 / 4 - 1e-12
    if where == "train":
        assert pf.proximity_ratio(reading, z) < 2 * alpha * np.abs(Wc).sum() / pf.typical_nn_distance(z)


def test_separation_proximity_is_scale_free_and_zero_on_data():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(40, 6))
    protos, classes = z[[0, 5, 9]], np.array([0, 1, 2])
    assert np.allclose(pf.separation_proximities(protos, classes, z), 0.0)
    off = protos + rng.normal(size=protos.shape)
    np.testing.assert_allclose(pf.separation_proximities(7.0 * off + 2.0, classes, 7.0 * z + 2.0),
                               pf.separation_proximities(off, classes, z), rtol=1e-10)
    # a prototype with no prototype of another class has no unit
    assert np.isnan(pf.separation_proximities(off, np.array([0, 0, 0]), z)).all()


def test_class_means_are_k_means_at_one_prototype_per_class():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(90, 5)) + np.repeat(rng.normal(size=(3, 5)) * 5, 30, axis=0)
    y = np.repeat(np.arange(3), 30)
    means = pf.class_mean_prototypes(z, y)
    np.testing.assert_allclose(means, [z[y == c].mean(axis=0) for c in range(3)])
    head = KMeansHead(n_prototypes=1, n_init=1, random_state=0).fit(z, y)
    np.testing.assert_allclose(head.prototypes_[:, 0], means, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[3\]"):
        pf.class_mean_prototypes(z, y, classes=[0, 1, 2, 3])


def test_class_means_opposite_to_the_rows_have_no_canonical_reading():
    rng = np.random.default_rng(5)
    W, b = rng.normal(size=(4, 6)), rng.normal(size=4)
    reading = pf.canonical_linear_reading(W, b, -3.0 * W)  # only a <= 0 would fit: a flipped rule
    assert np.isnan(reading.scale) and np.isnan(reading.prototypes).all()
