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
