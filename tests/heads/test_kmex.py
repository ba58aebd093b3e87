"""KMEx's reference head: scikit-learn's KMeans per class with KMEx's settings, on the embeddings given."""

import numpy as np
import pytest
from sklearn.cluster import KMeans

from kmx_eval.heads.kmex import KMEX_MAX_ITER, KMEX_N_INIT, fit_kmex_reference, is_kmex_space


def _classes_of_blobs(n_classes=3, n_blobs=2, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, n_blobs, dim)) * 20.0
    z = np.concatenate([c + rng.normal(size=(30, dim)) for cls in centres for c in cls])
    y = np.repeat(np.arange(n_classes), 30 * n_blobs)
    return z, y


def test_kmex_settings_are_scikit_learns_defaults_before_1_4():
    assert (KMEX_N_INIT, KMEX_MAX_ITER) == (10, 300)
    assert KMeans().init == "k-means++" and KMeans().max_iter == KMEX_MAX_ITER


def test_reference_head_finds_kmex_prototypes_per_class():
    """Per class, the prototypes are those of KMEx's call KMeans(n_clusters=H).fit(k_embed) with 10
    restarts (well separated blobs: every seed finds the same centres)."""
    z, y = _classes_of_blobs()
    head = fit_kmex_reference(z, y, n_prototypes=2, seed=3)
    assert head.n_init == KMEX_N_INIT and head.max_iter == KMEX_MAX_ITER
    for k in range(3):
        sk = KMeans(n_clusters=2, n_init=10, random_state=0).fit(z[y == k])
        ours = head.prototypes_[k]
        order = np.argsort(sk.cluster_centers_[:, 0])
        np.testing.assert_allclose(ours[np.argsort(ours[:, 0])], sk.cluster_centers_[order], atol=1e-8)
    assert head.score(z, y) == 1.0


def test_reference_head_is_seeded():
    z, y = _classes_of_blobs(n_blobs=4, seed=1)
    a = fit_kmex_reference(z, y, n_prototypes=3, seed=0).prototypes_
    b = fit_kmex_reference(z, y, n_prototypes=3, seed=0).prototypes_
    assert np.array_equal(a, b)


@pytest.mark.parametrize(("blocks", "n_blocks", "expected"),
                         [((4,), 4, True), ((3, 4), 4, False), ((3,), 4, False), ((5,), 5, True)])
def test_kmex_space_is_the_deepest_block_alone(blocks, n_blocks, expected):
    assert is_kmex_space(blocks, n_blocks) is expected
