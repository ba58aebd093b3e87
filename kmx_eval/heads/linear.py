"""Linear heads seen as prototype models: the CNN's own linear layer and a linear probe.

A linear head scores class c by ``<w_c, z> + b_c``. Completing the square,

.. math::  \\langle w_c, z\\rangle + b_c
           = -\\tfrac12 \\lVert z - w_c \\rVert^2 + \\tfrac12 \\lVert w_c \\rVert^2 + b_c
             + \\tfrac12 \\lVert z \\rVert^2 ,

and the last term is the same for every class, so the linear head is a nearest-prototype rule with
prototypes ``w_c`` and per-class offsets ``o_c = b_c + 1/2 ||w_c||^2`` (docs/METHOD.md, section 2). The
suite measures whether those built-in prototypes represent the data (they need not: the offsets can
carry the decision), by comparing the linear head with the nearest-``w_c`` rule without offsets.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from kmx_eval.heads.kmeans import softmax, squared_distances

__all__ = ["LinearSEM", "LinearProbe", "linear_offsets"]


def linear_offsets(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Per-class offsets ``o_c = b_c + 1/2 ||w_c||^2`` of a linear head read as prototypes ``w_c``."""
    W = np.asarray(weight, dtype=np.float64)
    return np.asarray(bias, dtype=np.float64) + 0.5 * (W * W).sum(axis=1)


class _LinearPrototypes:
    """Shared prediction code of linear heads with prototypes ``prototypes_`` = W and bias b."""

    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _check_input(self, Z) -> np.ndarray:
        W, _ = self._weights()
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != W.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: Z must have shape (n_samples, {W.shape[1]}), got {Z.shape}"
            )
        return Z

    def logits(self, Z) -> np.ndarray:
        """Class logits ``<w_c, z> + b_c``, shape (n_samples, n_classes)."""
        W, b = self._weights()
        return self._check_input(Z) @ W.T + b

    def prototype_scores(self, Z) -> np.ndarray:
        """The same decision read as prototypes: ``-1/2 ||z - w_c||^2 + o_c``.

        Equals ``logits(Z) - 1/2 ||z||^2``: the prototype reading changes every class score of a
        sample by the same amount, so it never changes a prediction.
        """
        W, _ = self._weights()
        return -0.5 * squared_distances(self._check_input(Z), W) + self.offsets_

    def nearest_prototype_predict(self, Z) -> np.ndarray:
        """The nearest-prototype rule without offsets, ``classes_[argmin_c ||z - w_c||]``.

        Comparing it with :meth:`predict` is the decision-agreement metric of prototype fidelity:
        when the two disagree, the offsets and not the prototypes carry the decision.
        """
        W, _ = self._weights()
        return self.classes_[squared_distances(self._check_input(Z), W).argmin(axis=1)]


class LinearSEM(_LinearPrototypes):
    """The CNN's own linear layer as a self-explainable model with prototypes ``w_c``.

    ``decision_function(z) = W z + b`` (the CNN's logits on ``z = z_n``, the pooled deepest block, where its classifier is GAP + linear); ``prototypes_ = W`` and
    ``offsets_ = b + 1/2 ||w_c||^2``, so that
    ``<w_c, z> + b_c = -1/2 ||z - w_c||^2 + offsets_c + 1/2 ||z||^2``.

    Parameters
    ----------
    weight : array of shape (n_classes, D)
        The rows ``w_c`` of the linear layer (torch ``fc.weight``).
    bias : array of shape (n_classes,) or None
        ``b`` (torch ``fc.bias``); zeros when None.

    Attributes
    ----------
    classes_ : ndarray (n_classes,), ``arange(n_classes)`` (the CNN's output order)
    prototypes_ : ndarray (n_classes, D), float64, the rows ``w_c``
    bias_ : ndarray (n_classes,), float64
    offsets_ : ndarray (n_classes,), float64, ``b_c + 1/2 ||w_c||^2``
    n_features_in_ : int
    """

    def __init__(self, weight, bias=None):
        W = np.asarray(weight, dtype=np.float64)
        if W.ndim != 2:
            raise ValueError(f"LinearSEM: weight must have shape (n_classes, D), got {W.shape}")
        b = np.zeros(len(W)) if bias is None else np.asarray(bias, dtype=np.float64)
        if b.shape != (len(W),):
            raise ValueError(f"LinearSEM: bias must have shape ({len(W)},), got {b.shape}")
        self.prototypes_ = W
        self.bias_ = b
        self.offsets_ = linear_offsets(W, b)
        self.classes_ = np.arange(len(W))
        self.n_features_in_ = W.shape[1]

    @classmethod
    def from_linear(cls, fc) -> "LinearSEM":
        """Read ``w_c`` and ``b`` from a ``torch.nn.Linear`` (the CNN's ``fc``)."""
        weight = fc.weight.detach().cpu().double().numpy()
        bias = None if fc.bias is None else fc.bias.detach().cpu().double().numpy()
        return cls(weight, bias)

    def _weights(self):
        return self.prototypes_, self.bias_

    def decision_function(self, Z) -> np.ndarray:
        """The CNN's logits ``<w_c, z> + b_c``, shape (n_samples, n_classes)."""
        return self.logits(Z)

    def predict(self, Z) -> np.ndarray:
        """The CNN's prediction ``argmax_c <w_c, z> + b_c``."""
        return self.classes_[self.logits(Z).argmax(axis=1)]

    def predict_proba(self, Z) -> np.ndarray:
        """Softmax of the logits (the CNN's class probabilities)."""
        return softmax(self.logits(Z))

    def score(self, Z, y) -> float:
        """Accuracy of :meth:`predict` against ``y``."""
        return float(np.mean(self.predict(Z) == np.asarray(y)))


class LinearProbe(ClassifierMixin, _LinearPrototypes, BaseEstimator):
    """Logistic regression on z_S: the accuracy a linear head could reach in that space.

    Multinomial logistic regression (lbfgs, L2 penalty of strength ``1/C``) fitted on the training
    embeddings of one block combination. Its coefficient rows are the linear prototypes of that
    space, read like the CNN's own layer (:class:`LinearSEM`): ``prototypes_[c] = w_c``,
    ``offsets_[c] = b_c + 1/2 ||w_c||^2``. With two classes scikit-learn fits one logit
    ``<w, z> + b`` for ``classes_[1]``; its symmetric two-class form ``w_1 = -w_0 = w/2``,
    ``b_1 = -b_0 = b/2`` gives the same probabilities (softmax of ``±(<w, z> + b)/2`` is the
    logistic of ``<w, z> + b``) and is what ``prototypes_`` holds.

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 regularisation strength (``params.head.probe_C``).
    max_iter : int, default=2000
        lbfgs iterations (``params.head.probe_max_iter``).
    random_state : int or None, default=None
        Passed to LogisticRegression (lbfgs itself is deterministic).

    Attributes
    ----------
    classes_, coef_, intercept_, n_features_in_ : as in LogisticRegression
    prototypes_ : ndarray (n_classes, D), float64
    offsets_ : ndarray (n_classes,), float64
    n_iter_ : int, lbfgs iterations used
    """

    def __init__(self, C=1.0, max_iter=2000, random_state=None):
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, Z, y):
        """Fit the logistic regression on embeddings ``Z`` (n_samples, D) and labels ``y``."""
        if not isinstance(self.C, numbers.Real) or not self.C > 0:
            raise ValueError(f"LinearProbe: C must be a number > 0, got {self.C!r}")
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"LinearProbe: max_iter must be an integer >= 1, got {self.max_iter!r}")
        Z, y = validate_data(self, Z, y, dtype=np.float64)
        check_classification_targets(y)
        # One BLAS thread: a multi-threaded BLAS splits the sums of the loss gradient per thread,
        # so the coefficients would change in their last bits with the machine's thread count.
        with threadpool_limits(limits=1):
            model = LogisticRegression(C=self.C, max_iter=self.max_iter, solver="lbfgs",
                                       random_state=self.random_state).fit(Z, y)
        self.classes_ = model.classes_
        self.coef_ = model.coef_.astype(np.float64)
        self.intercept_ = model.intercept_.astype(np.float64)
        self.n_iter_ = int(np.max(model.n_iter_))
        self._set_prototypes()
        return self

    def _set_prototypes(self) -> None:
        W, b = self.coef_, self.intercept_
        if len(self.classes_) == 2 and len(W) == 1:
            W, b = np.concatenate([-W, W]) / 2, np.concatenate([-b, b]) / 2
        self.prototypes_ = W
        self.bias_ = b
        self.offsets_ = linear_offsets(W, b)

    def _weights(self):
        check_is_fitted(self)
        return self.prototypes_, self.bias_

    def _check_input(self, Z) -> np.ndarray:
        # scikit-learn's own checks (feature count, NaN, sparse, 1-D input) and messages.
        check_is_fitted(self)
        return validate_data(self, Z, reset=False, dtype=np.float64)

    def decision_function(self, Z) -> np.ndarray:
        """LogisticRegression's decision function: ``Z coef_^T + intercept_``.

        Shape (n_samples, n_classes), or (n_samples,) for two classes (the logit of ``classes_[1]``).
        """
        d = self._check_input(Z) @ self.coef_.T + self.intercept_
        return d.ravel() if d.shape[1] == 1 else d

    def predict(self, Z) -> np.ndarray:
        """``classes_[argmax_c <w_c, z> + b_c]``."""
        logits = self.logits(Z)  # checks fitted before classes_ is read
        return self.classes_[logits.argmax(axis=1)]

    def predict_proba(self, Z) -> np.ndarray:
        """Softmax of the logits (for two classes, the logistic of the single logit)."""
        return softmax(self.logits(Z))
