"""fit_heads: the fit stage's library part on in-memory arrays (no files, no backbone)."""

import numpy as np
import pytest

from kmx_eval.errors import DataError, ParamsError
from kmx_eval.heads import LinearSEM
from kmx_eval.pipeline.fit import fit_heads, prototype_neighbours, training_labels


def problem(n_classes=3, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (n_classes, dim))

    def split(n):
        y = np.arange(n) % n_classes
        return centres[y] + rng.normal(0, 1.2, (n, dim)), y

    (z_tr, y_tr), (z_te, y_te) = split(90), split(45)
    # A "CNN" that is a fixed linear layer: its logits and predictions are known exactly.
    W, b = centres, -0.5 * (centres**2).sum(1)
    return z_tr, z_te, y_tr, y_te, z_tr @ W.T + b, z_te @ W.T + b, LinearSEM(W, b)


def test_metrics_are_the_definitions():
    z_tr, z_te, y_tr, y_te, lg_tr, lg_te, _ = problem()
    fitted = fit_heads(z_tr, z_te, y_tr, y_te, lg_tr, lg_te, n_prototypes=2, seed=0)
    m = fitted.metrics
    cnn = lg_te.argmax(1)
    assert m["cnn_accuracy"] == np.mean(cnn == y_te)
    assert m["kmeans_accuracy"] == np.mean(fitted.kmeans.predict(z_te) == y_te)
    assert m["probe_accuracy"] == np.mean(fitted.probe.predict(z_te) == y_te)
    assert m["kmeans_agreement"] == np.mean(fitted.kmeans.predict(z_te) == cnn)
    assert m["probe_agreement"] == np.mean(fitted.probe.predict(z_te) == cnn)
    assert sorted(m) == ["cnn_accuracy", "kmeans_accuracy", "kmeans_agreement", "probe_accuracy",
                         "probe_agreement"]
    assert all(isinstance(v, float) for v in m.values())
    assert m["kmeans_accuracy"] > 0.8  # the blobs are separable: a broken head would fail this
    np.testing.assert_array_equal(fitted.labels, y_tr)
    assert fitted.kmeans.random_state == 0 and fitted.probe.random_state == 0


def test_neighbours_are_nearest_training_embeddings():
    z_tr, z_te, y_tr, y_te, lg_tr, lg_te, sem = problem(seed=1)
    fitted = fit_heads(z_tr, z_te, y_tr, y_te, lg_tr, lg_te, n_prototypes=2, seed=0)
    nb = fitted.neighbours
    P = fitted.kmeans.prototypes_
    d = ((P[:, :, None, :] - z_tr[None, None]) ** 2).sum(-1)
    # Compare distances, not indices: two equidistant training embeddings are both correct.
    chosen = np.take_along_axis(d, nb["kmeans"][..., None], -1)[..., 0]
    np.testing.assert_allclose(chosen, d.min(-1), rtol=1e-9)
    np.testing.assert_allclose(nb["kmeans_distance"], np.sqrt(d.min(-1)), rtol=1e-9)
    assert nb["kmeans"].shape == (3, 2) and nb["kmeans"].dtype == np.int64
    assert str(nb["linear_source"]) == "probe"
    dl = ((fitted.probe.prototypes_[:, None] - z_tr[None]) ** 2).sum(-1)
    np.testing.assert_allclose(dl[np.arange(3), nb["linear"]], dl.min(-1), rtol=1e-9)
    # With the CNN's own linear layer, its rows w_c are the linear prototypes.
    fitted = fit_heads(z_tr, z_te, y_tr, y_te, lg_tr, lg_te, n_prototypes=2, seed=0, linear=sem)
    assert str(fitted.neighbours["linear_source"]) == "cnn"
    dl = ((sem.prototypes_[:, None] - z_tr[None]) ** 2).sum(-1)
    np.testing.assert_allclose(dl[np.arange(3), fitted.neighbours["linear"]], dl.min(-1), rtol=1e-9)


def test_prototype_neighbours_keeps_the_leading_shape():
    z = np.arange(10.0)[:, None] * np.ones((1, 3))
    idx, dist = prototype_neighbours(np.array([[[2.1] * 3, [7.9] * 3]]), z)
    assert idx.tolist() == [[2, 8]]
    np.testing.assert_allclose(dist, [[np.sqrt(3 * 0.01)] * 2], rtol=1e-6)


def test_cnn_labels_fit_the_cnn_predictions():
    z_tr, z_te, y_tr, y_te, lg_tr, lg_te, _ = problem(seed=2)
    y_noisy = y_tr.copy()
    y_noisy[:10] = (y_noisy[:10] + 1) % 3  # ground truth the CNN does not follow
    gt = fit_heads(z_tr, z_te, y_noisy, y_te, lg_tr, lg_te, labels="ground_truth", n_prototypes=2)
    cnn = fit_heads(z_tr, z_te, y_noisy, y_te, lg_tr, lg_te, labels="cnn", n_prototypes=2)
    np.testing.assert_array_equal(cnn.labels, lg_tr.argmax(1))
    np.testing.assert_array_equal(gt.labels, y_noisy)
    assert cnn.metrics["kmeans_agreement"] >= gt.metrics["kmeans_agreement"]
    np.testing.assert_array_equal(training_labels(y_tr, lg_tr, "cnn"), lg_tr.argmax(1))
    with pytest.raises(ParamsError, match="head.labels: unknown value 'oracle'"):
        training_labels(y_tr, lg_tr, "oracle")


def test_a_class_the_cnn_never_predicts_is_a_clear_error():
    z_tr, z_te, y_tr, y_te, lg_tr, lg_te, _ = problem(seed=3)
    lg_tr = lg_tr.copy()
    lg_tr[:, 2] = -1e9  # the CNN never predicts class 2 on the training split
    with pytest.raises(DataError, match=r"the CNN predicts no training image as class\(es\) \[2\]"):
        fit_heads(z_tr, z_te, y_tr, y_te, lg_tr, lg_te, labels="cnn", n_prototypes=2)


def test_mismatched_lengths_are_a_clear_error():
    z_tr, z_te, y_tr, y_te, lg_tr, lg_te, _ = problem(seed=4)
    with pytest.raises(DataError, match="test split: 44 embeddings, 45 labels"):
        fit_heads(z_tr, z_te[:-1], y_tr, y_te, lg_tr, lg_te)
