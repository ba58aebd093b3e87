"""LinearSEM (the CNN's fc read as prototypes) and LinearProbe (docs/METHOD.md, section 2)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.utils.estimator_checks import parametrize_with_checks

from kmx_eval.heads import LinearProbe, LinearSEM, linear_offsets


def data(n_classes=3, n=60, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, dim))
    y = np.arange(n) % n_classes
    return centres[y] + rng.normal(0, 1, (n, dim)), y


# ---------------------------------------------------------------------- LinearSEM
def test_completing_the_square_identity():
    """<w_c, z> + b_c = -1/2 ||z - w_c||^2 + 1/2 ||w_c||^2 + b_c + 1/2 ||z||^2."""
    rng = np.random.default_rng(0)
    W, b, Z = rng.normal(0, 2, (4, 6)), rng.normal(0, 1, 4), rng.normal(0, 3, (50, 6))
    sem = LinearSEM(W, b)
    lhs = sem.decision_function(Z)
    rhs = (-0.5 * ((Z[:, None] - W[None]) ** 2).sum(-1) + 0.5 * (W**2).sum(1) + b
           + 0.5 * (Z**2).sum(1, keepdims=True))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(sem.offsets_, b + 0.5 * (W**2).sum(1))
    np.testing.assert_allclose(sem.prototype_scores(Z), lhs - 0.5 * (Z**2).sum(1, keepdims=True),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(sem.prototype_scores(Z).argmax(1), sem.predict(Z))


def test_from_linear_reproduces_the_cnn_logits():
    torch.manual_seed(0)
    fc = torch.nn.Linear(8, 5)
    z = torch.randn(20, 8)
    sem = LinearSEM.from_linear(fc)
    np.testing.assert_allclose(sem.decision_function(z.numpy()), fc(z).detach().double().numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sem.predict(z.numpy()), fc(z).argmax(1).numpy())
    np.testing.assert_array_equal(sem.prototypes_, fc.weight.detach().double().numpy())
    assert sem.classes_.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(sem.predict_proba(z.numpy()).sum(1), 1.0)


def test_offsets_can_carry_the_decision():
    """A point nearest to w_0 is still classified 1 when b_1 is large: decision agreement < 1."""
    W = np.array([[1.0, 0.0], [-1.0, 0.0]])
    sem = LinearSEM(W, [0.0, 5.0])
    Z = np.array([[1.0, 0.0], [2.0, 0.0]])
    assert sem.nearest_prototype_predict(Z).tolist() == [0, 0]
    assert sem.predict(Z).tolist() == [1, 1]
    # Without the bias, both rules agree (equal norms: equal 1/2 ||w_c||^2).
    assert LinearSEM(W).predict(Z).tolist() == [0, 0]


def test_linear_sem_rejects_bad_shapes():
    with pytest.raises(ValueError, match="bias must have shape"):
        LinearSEM(np.zeros((3, 4)), np.zeros(2))
    with pytest.raises(ValueError, match=r"Z must have shape \(n_samples, 4\)"):
        LinearSEM(np.zeros((3, 4))).predict(np.zeros((2, 5)))


def test_linear_offsets_function():
    np.testing.assert_allclose(linear_offsets([[3.0, 4.0]], [1.0]), [13.5])


# ---------------------------------------------------------------------- LinearProbe
@parametrize_with_checks([LinearProbe(random_state=0)])
def test_probe_follows_the_sklearn_contract(estimator, check):
    # check_array_api_input is skipped by scikit-learn unless SCIPY_ARRAY_API=1 is set.
    check(estimator)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_probe_equals_logistic_regression(n_classes):
    Z, y = data(n_classes=n_classes, seed=n_classes)
    probe = LinearProbe(C=0.5, max_iter=500, random_state=0).fit(Z, y)
    ref = LogisticRegression(C=0.5, max_iter=500, random_state=0).fit(Z, y)
    Zq = np.random.default_rng(1).normal(0, 4, (40, Z.shape[1]))
    np.testing.assert_array_equal(probe.predict(Zq), ref.predict(Zq))
    np.testing.assert_allclose(probe.predict_proba(Zq), ref.predict_proba(Zq), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(probe.decision_function(Zq), ref.decision_function(Zq), rtol=1e-12)
    assert probe.prototypes_.shape == (n_classes, Z.shape[1])
    np.testing.assert_allclose(probe.offsets_, probe.bias_ + 0.5 * (probe.prototypes_**2).sum(1))
    # The prototype reading gives the same decision as the probe itself.
    np.testing.assert_array_equal(probe.classes_[probe.prototype_scores(Zq).argmax(1)], probe.predict(Zq))
    assert probe.score(Z, y) > 0.9


def test_binary_probe_prototypes_are_the_symmetric_form():
    Z, y = data(n_classes=2, seed=7)
    probe = LinearProbe(random_state=0).fit(Z, y)
    w, b = probe.coef_[0], probe.intercept_[0]
    np.testing.assert_allclose(probe.prototypes_, np.stack([-w / 2, w / 2]))
    np.testing.assert_allclose(probe.bias_, [-b / 2, b / 2])
    # softmax of +-(<w,z>+b)/2 is the logistic of <w,z>+b.
    logits = probe.logits(Z)
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], probe.decision_function(Z), rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [({"C": 0}, "C must be a number > 0"),
                                           ({"max_iter": 0}, "max_iter must be an integer >= 1")])
def test_probe_bad_parameters_are_named(kwargs, match):
    Z, y = data()
    with pytest.raises(ValueError, match=match):
        LinearProbe(**kwargs).fit(Z, y)
