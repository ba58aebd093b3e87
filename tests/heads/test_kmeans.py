"""KMeansHead: the KMEx head as a scikit-learn classifier (docs/METHOD.md, section 2)."""

import doctest
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import kmx_eval.heads
import kmx_eval.heads.kmeans
from kmx_eval.heads import KMeansHead, SmallClassWarning, squared_distances


def blobs(n_classes=3, per_class=30, dim=6, spread=0.5, seed=0, sep=10.0):
    """Well-separated Gaussian blobs: two sub-clusters per class, classes ``sep`` apart."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(n_classes):
        centre = rng.normal(0, 1, dim)
        centre = centre / np.linalg.norm(centre) * sep * (c + 1)
        for sub in range(2):
            offset = np.eye(dim)[sub] * 5.0
            X.append(centre + offset + rng.normal(0, spread, (per_class // 2, dim)))
            y += [c] * (per_class // 2)
    return np.concatenate(X), np.asarray(y)


def brute_force_scores(X, prototypes):
    """s_c(x) = -min_h ||x - p_ch||^2 by explicit differences (no expanded form)."""
    diff = X[:, None, None, :] - prototypes[None]
    return -(diff**2).sum(-1).min(-1)


# ---------------------------------------------------------------------- scikit-learn's contract
# Every check of scikit-learn's estimator suite passes; none is marked as an expected failure.
# One is skipped by scikit-learn itself: check_array_api_input runs only when the environment
# variable SCIPY_ARRAY_API=1 is set, and KMeansHead does not declare array-API support anyway.
@parametrize_with_checks([KMeansHead(random_state=0, n_init=1)])
def test_sklearn_estimator_contract(estimator, check):
    with warnings.catch_warnings():
        # The checks fit on tiny data where classes have a single sample: warned, by design.
        warnings.simplefilter("ignore", SmallClassWarning)
        check(estimator)


def test_plugs_into_pipelines_and_cross_validation():
    X, y = blobs(seed=1)
    scores = cross_val_score(make_pipeline(StandardScaler(), KMeansHead(n_prototypes=2, random_state=0)),
                             X, y, cv=3)
    assert scores.min() == 1.0


# ---------------------------------------------------------------------- what it computes
def test_separated_blobs_are_classified_perfectly():
    X, y = blobs(n_classes=4, per_class=40, seed=2)
    Xt, yt = blobs(n_classes=4, per_class=40, seed=2)  # same centres, fresh noise below
    Xt = Xt + np.random.default_rng(9).normal(0, 0.3, Xt.shape)
    head = KMeansHead(n_prototypes=2, random_state=0).fit(X, y)
    assert head.prototypes_.shape == (4, 2, X.shape[1])
    assert head.score(Xt, yt) == 1.0
    # Two sub-clusters per class and H = 2: each prototype sits on one sub-cluster mean.
    for c in range(4):
        sub_means = [X[y == c][:20].mean(0), X[y == c][20:].mean(0)]
        for m in sub_means:
            assert np.min(np.linalg.norm(head.prototypes_[c] - m, axis=1)) < 1e-8


def test_scores_are_negative_squared_distance_to_nearest_prototype():
    X, y = blobs(seed=3)
    head = KMeansHead(n_prototypes=3, random_state=0).fit(X, y)
    Xq = np.random.default_rng(0).normal(0, 20, (25, X.shape[1]))
    expected = brute_force_scores(Xq, head.prototypes_)
    np.testing.assert_allclose(head.class_scores(Xq), expected, rtol=1e-12, atol=1e-9)
    assert head.decision_function(Xq).shape == (25, 3)
    np.testing.assert_array_equal(head.predict(Xq), head.classes_[expected.argmax(1)])
    proba = head.predict_proba(Xq)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(proba.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(np.exp(head.predict_log_proba(Xq)), proba, rtol=1e-10, atol=1e-300)
    # A prototype itself is at distance exactly zero (the expanded form is clipped, not negative).
    assert head.class_scores(head.prototypes_[:, 0]).max(1).tolist() == [0.0, 0.0, 0.0]


def test_nearest_prototype_indices():
    X, y = blobs(seed=4)
    head = KMeansHead(n_prototypes=3, random_state=0).fit(X, y)
    c, h = head.nearest_prototype(head.prototypes_.reshape(-1, X.shape[1]))
    np.testing.assert_array_equal(c, np.repeat(np.arange(3), 3))
    np.testing.assert_array_equal(h, np.tile(np.arange(3), 3))


def test_softmax_is_stable_for_huge_distances():
    X, y = blobs(seed=5, sep=1e4)
    head = KMeansHead(n_prototypes=1, random_state=0).fit(X, y)
    proba = head.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert np.isfinite(head.predict_log_proba(X)).all()


def test_binary_decision_function_follows_sklearn_convention():
    X, y = blobs(n_classes=2, seed=6)
    labels = np.array(["cat", "dog"])[y]
    head = KMeansHead(n_prototypes=2, random_state=0).fit(X, labels)
    s = head.class_scores(X)
    d = head.decision_function(X)
    assert s.shape == (len(X), 2) and d.shape == (len(X),)
    np.testing.assert_allclose(d, s[:, 1] - s[:, 0])
    np.testing.assert_array_equal(head.predict(X), np.where(d > 0, "dog", "cat"))


def test_squared_distances_match_explicit_differences():
    rng = np.random.default_rng(0)
    X, P = rng.normal(0, 5, (40, 7)), rng.normal(0, 5, (11, 7))
    expected = ((X[:, None] - P[None]) ** 2).sum(-1)
    np.testing.assert_allclose(squared_distances(X, P), expected, rtol=1e-12)
    assert squared_distances(P, P).diagonal().max() == 0.0 or squared_distances(P, P).min() >= 0


def test_fits_in_float64_whatever_the_input_dtype():
    X, y = blobs(seed=7)
    head32 = KMeansHead(n_prototypes=2, random_state=0).fit(X.astype(np.float32), y)
    assert head32.prototypes_.dtype == np.float64
    assert head32.class_scores(X.astype(np.float32)).dtype == np.float64


# ---------------------------------------------------------------------- reproducibility
def test_same_seed_same_prototypes():
    X, y = blobs(seed=8, spread=3.0)
    a = KMeansHead(n_prototypes=4, random_state=3).fit(X, y)
    b = KMeansHead(n_prototypes=4, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.prototypes_, b.prototypes_)


@st.composite
def problems(draw):
    n_classes = draw(st.integers(2, 4))
    dim = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    sizes = [draw(st.integers(1, 12)) for _ in range(n_classes)]
    # Overlapping classes, so that prototypes and tie-free decisions actually depend on k-means.
    X = np.concatenate([rng.normal(c * 0.7, 1.0, (n, dim)) for c, n in enumerate(sizes)])
    y = np.repeat(np.arange(n_classes), sizes)
    Xq = rng.normal(0.7, 1.5, (30, dim))
    return X, y, Xq, draw(st.integers(1, 4)), draw(st.integers(0, 100))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(), data=st.data())
def test_invariant_to_permuting_training_samples(problem, data):
    X, y, Xq, H, seed = problem
    perm = np.asarray(data.draw(st.permutations(range(len(X)))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallClassWarning)
        a = KMeansHead(n_prototypes=H, n_init=2, random_state=seed).fit(X, y)
        b = KMeansHead(n_prototypes=H, n_init=2, random_state=seed).fit(X[perm], y[perm])
    np.testing.assert_array_equal(a.prototypes_, b.prototypes_)
    np.testing.assert_array_equal(a.predict(Xq), b.predict(Xq))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems(), data=st.data())
def test_invariant_to_relabelling_classes(problem, data):
    X, y, Xq, H, seed = problem
    n = int(y.max()) + 1
    # New names in a different order (and not 0..n-1), so class order and names both change.
    names = np.asarray(data.draw(st.permutations(range(n)))) * 10 + 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallClassWarning)
        a = KMeansHead(n_prototypes=H, n_init=2, random_state=seed).fit(X, y)
        b = KMeansHead(n_prototypes=H, n_init=2, random_state=seed).fit(X, names[y])
    np.testing.assert_array_equal(names[a.predict(Xq)], b.predict(Xq))
    for c in range(n):
        row = int(np.flatnonzero(b.classes_ == names[c])[0])
        np.testing.assert_array_equal(a.prototypes_[c], b.prototypes_[row])


# ---------------------------------------------------------------------- small classes, errors
def test_small_class_warns_and_pads_without_changing_scores():
    X, y = blobs(n_classes=3, per_class=20, seed=10)
    keep = np.concatenate([np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:2]])
    X, y = X[keep], y[keep]
    with pytest.warns(SmallClassWarning, match=r"class 2 has 2 training samples, fewer than n_prototypes=5"):
        head = KMeansHead(n_prototypes=5, random_state=0).fit(X, y)
    assert head.n_prototypes_per_class_.tolist() == [5, 5, 2]
    assert head.prototypes_.shape == (3, 5, X.shape[1])
    small = head.prototypes_[2]
    # Its distinct prototypes are its two samples; the three extra rows repeat them.
    assert len(np.unique(small, axis=0)) == 2
    np.testing.assert_array_equal(np.unique(small, axis=0), np.unique(X[y == 2], axis=0))
    Xq = np.random.default_rng(1).normal(0, 20, (30, X.shape[1]))
    np.testing.assert_allclose(head.class_scores(Xq)[:, 2], brute_force_scores(Xq, small[None, :2])[:, 0],
                               rtol=1e-12)


def test_class_with_duplicate_samples_warns_about_distinct_ones():
    X = np.array([[0.0, 0.0]] * 4 + [[5.0, 5.0], [5.0, 6.0], [6.0, 5.0]])
    y = np.array([0] * 4 + [1] * 3)
    with pytest.warns(SmallClassWarning, match=r"class 0 has 4 training samples but only 1 distinct"):
        head = KMeansHead(n_prototypes=3, random_state=0).fit(X, y)
    assert head.n_prototypes_per_class_.tolist() == [1, 3]
    assert head.predict([[0.5, 0.5], [5.2, 5.2]]).tolist() == [0, 1]


@pytest.mark.parametrize("name, value", [("n_prototypes", 0), ("n_init", 1.5), ("max_iter", -3),
                                         ("n_prototypes", True)])
def test_bad_parameters_are_named(name, value):
    X, y = blobs(seed=11)
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        KMeansHead(**{name: value}).fit(X, y)


def test_wrong_feature_count_is_named():
    X, y = blobs(seed=12)
    head = KMeansHead(n_prototypes=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        head.predict(X[:, :3])


# ---------------------------------------------------------------------- the README example
def test_readme_example_runs():
    """The 'three lines without DVC' example of kmx_eval.heads and the KMeansHead docstring run."""
    for module in (kmx_eval.heads, kmx_eval.heads.kmeans):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted >= 4, module.__name__
        assert result.failed == 0, module.__name__


def test_nearest_prototype_within_the_own_class():
    X, y = blobs(seed=13)
    head = KMeansHead(n_prototypes=2, random_state=0).fit(X, y)
    # Query each training sample against its own class, and against a wrong class on purpose.
    c, h = head.nearest_prototype(X, y)
    np.testing.assert_array_equal(c, y)
    d = ((X[:, None] - head.prototypes_[y]) ** 2).sum(-1)
    np.testing.assert_array_equal(h, d.argmin(1))
    wrong = (y + 1) % 3
    c, h = head.nearest_prototype(X, wrong)
    np.testing.assert_array_equal(c, wrong)
    np.testing.assert_array_equal(h, ((X[:, None] - head.prototypes_[wrong]) ** 2).sum(-1).argmin(1))
    with pytest.raises(ValueError, match="y holds class 7"):
        head.nearest_prototype(X[:2], [0, 7])
