"""Byte-identical heads whatever the BLAS/OpenMP thread count of the machine (issue 12).

A multi-threaded BLAS splits the sums of the probe's loss gradient per thread, and scikit-learn's
Lloyd step sums each thread's chunks of samples separately, so without a limit the probe's
coefficients and the k-means prototypes change in their last bits with the thread count (a clean
run on another machine rewrote the committed metrics). The heads fit under one thread; these tests
fit them under 1 and 2 threads and compare the bytes.
"""

import hashlib
import os

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from kmx_eval.heads.kmeans import KMeansHead
from kmx_eval.heads.linear import LinearProbe
from kmx_eval.metrics import prototype_fidelity as pf


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _embeddings(n=1200, d=384, k=4, seed=0):
    # Classes of 300 samples: more than one 256-sample chunk of scikit-learn's Lloyd step, so a
    # second thread would get a chunk of its own; D large enough that BLAS splits its products.
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    z = rng.normal(size=(k, d))[y] + 2.0 * rng.normal(size=(n, d))
    return z.astype(np.float32), y


def _fit_and_measure(z, y):
    probe = LinearProbe(C=1.0, max_iter=2000, random_state=0).fit(z, y)
    head = KMeansHead(n_prototypes=5, n_init=2, random_state=0).fit(z, y)
    protos = head.prototypes_.reshape(-1, z.shape[1])
    metrics = np.array([pf.proximity_ratio(probe.prototypes_, z), pf.diversity_scaled(probe.prototypes_),
                        pf.proximity_ratio(protos, z), pf.diversity_scaled(protos), pf.diversity_kmex(protos)])
    return _digest(probe.coef_, probe.intercept_), _digest(head.prototypes_), metrics


def test_heads_and_their_prototype_fidelity_are_identical_under_one_and_two_blas_threads():
    z, y = _embeddings()
    runs = {}
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            runs[threads] = _fit_and_measure(z, y)
    assert runs[1][0] == runs[2][0], "probe coefficients depend on the BLAS thread count"
    assert runs[1][1] == runs[2][1], "k-means prototypes depend on the thread count"
    assert runs[1][2].tobytes() == runs[2][2].tobytes()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: a second BLAS thread is not started")
def test_an_unlimited_solver_does_depend_on_the_thread_count():
    # The reason for the limit: the same lbfgs fit without it differs in the last bits under one
    # and two BLAS threads (so the test above could fail).
    z, y = _embeddings()
    coefs = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            coefs.append(LogisticRegression(C=1.0, max_iter=2000).fit(z, y).coef_)
    assert coefs[0].tobytes() != coefs[1].tobytes()
    np.testing.assert_allclose(coefs[0], coefs[1], rtol=1e-4, atol=1e-6)
