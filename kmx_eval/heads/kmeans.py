"""The k-means head (KMEx) as a scikit-learn classifier on pooled embeddings z_S.

For each class c, k-means with H clusters on the training embeddings of that class gives the
prototypes ``p_c1 .. p_cH``. The class score of an embedding z is the negative squared Euclidean
distance to the nearest prototype of the class,

.. math::  s_c(z) = -\\min_h \\lVert z - p_{ch} \\rVert^2 ,

and the head predicts the class of the nearest prototype, ``argmax_c s_c(z)`` (docs/METHOD.md, section 2).
The labels that define the classes are the caller's choice: the ground truth (KMEx) or the
original CNN's own predictions (a post-hoc explainer of that CNN).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

__all__ = ["KMeansHead", "SmallClassWarning", "squared_distances", "softmax"]


class SmallClassWarning(UserWarning):
    """A class has fewer distinct training embeddings than the requested number of prototypes."""


def squared_distances(X: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances ``D[i, j] = ||x_i - p_j||^2`` in float64.

    Uses the expanded form ``||x||^2 - 2 <x, p> + ||p||^2`` (one matrix product, so it scales to
    thousands of embeddings and prototypes without an (N, M, D) temporary) in float64, where the
    cancellation error is about 1e-16 of the squared norms, and clips the tiny negative values that
    cancellation can leave at zero.

    Parameters
    ----------
    X : array of shape (N, D)
    P : array of shape (M, D)

    Returns
    -------
    array of shape (N, M), float64, non-negative.
    """
    X = np.asarray(X, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    d = (X * X).sum(axis=1)[:, None] - 2.0 * (X @ P.T) + (P * P).sum(axis=1)[None, :]
    return np.maximum(d, 0.0, out=d)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``exp(s_c - max s) / sum_c' exp(s_c' - max s)`` (shifted, so it never overflows)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s - s.max(axis=1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=1, keepdims=True)
    return s


class KMeansHead(ClassifierMixin, BaseEstimator):
    """Nearest-prototype classifier with H k-means prototypes per class (the KMEx head).

    ``fit`` runs, for each class c separately, k-means with ``n_prototypes`` clusters on the
    embeddings labelled c, and keeps the cluster centres as the prototypes ``p_c1 .. p_cH``.
    The class score is

    .. math::  s_c(x) = -\\min_h \\lVert x - p_{ch} \\rVert^2 ,

    the prediction ``argmax_c s_c(x)`` (the class of the nearest prototype) and the probabilities
    the softmax of the class scores.

    Each class's k-means sees that class's embeddings sorted into a canonical (lexicographic) order
    and the same seed drawn from ``random_state``, so the head is a function of the *set* of
    training embeddings of each class: it does not change when training samples are permuted, when
    classes are listed in another order, or when classes are renamed.

    Parameters
    ----------
    n_prototypes : int, default=5
        Prototypes H per class (KMEx used 5 for 10-class data and 10 for CUB-200).
    n_init : int, default=4
        k-means restarts per class; the run with the lowest inertia is kept.
    max_iter : int, default=300
        Maximum Lloyd iterations of each k-means run.
    random_state : int, RandomState instance or None, default=None
        Seeds the k-means initialisation (k-means++). Pass an int for reproducible prototypes.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted (the order of the rows of ``prototypes_`` and of the scores).
    prototypes_ : ndarray of shape (n_classes, n_prototypes, n_features_in_), float64
        ``prototypes_[c, h]`` is p_ch. A class with only ``m < n_prototypes`` distinct training
        embeddings has exactly those m embeddings as its distinct prototypes (k-means with m
        clusters on m points), and its remaining rows repeat them cyclically; a repeated prototype
        leaves ``min_h ||x - p_ch||^2`` and hence every score and prediction unchanged.
    n_prototypes_per_class_ : ndarray of shape (n_classes,), int64
        Distinct prototypes of each class (``n_prototypes`` unless the class was too small).
    inertia_ : ndarray of shape (n_classes,), float64
        Within-class sum of squared distances to the nearest prototype (k-means' objective).
    n_iter_ : ndarray of shape (n_classes,), int64
        Lloyd iterations of the kept k-means run of each class (0 for a class whose prototypes are
        its own samples: nothing to iterate).
    n_features_in_ : int
        Dimension D of the embeddings seen in ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from kmx_eval.heads import KMeansHead
    >>> rng = np.random.default_rng(0)
    >>> Z = np.concatenate([rng.normal(0, 1, (40, 8)), rng.normal(6, 1, (40, 8))])
    >>> y = np.repeat([0, 1], 40)
    >>> head = KMeansHead(n_prototypes=3, random_state=0).fit(Z, y)
    >>> head.prototypes_.shape
    (2, 3, 8)
    >>> head.score(Z, y)
    1.0
    """

    def __init__(self, n_prototypes=5, n_init=4, max_iter=300, random_state=None):
        # scikit-learn contract: store the parameters untouched, validate them in fit.
        self.n_prototypes = n_prototypes
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        for name in ("n_prototypes", "n_init", "max_iter"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"KMeansHead: {name} must be an integer >= 1, got {value!r}"
                )

    def fit(self, X, y):
        """Fit H k-means prototypes per class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training embeddings z_S.
        y : array-like of shape (n_samples,)
            Class labels: the ground truth or the CNN's predictions.

        Returns
        -------
        self : KMeansHead
        """
        self._check_params()
        # float64 so that the prototypes and the distances of small problems are exact.
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=1)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        # One seed for every class: each class's k-means depends on its own embeddings only,
        # never on the order in which classes (or samples) come.
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)

        H, D = self.n_prototypes, X.shape[1]
        prototypes = np.empty((len(classes), H, D), dtype=np.float64)
        n_distinct = np.empty(len(classes), dtype=np.int64)
        inertia = np.empty(len(classes), dtype=np.float64)
        n_iter = np.empty(len(classes), dtype=np.int64)
        for c, label in enumerate(classes):
            prototypes[c], n_distinct[c], inertia[c], n_iter[c] = self._fit_class(
                X[y_index == c], label, seed)

        self.classes_ = classes
        self.prototypes_ = prototypes
        self.n_prototypes_per_class_ = n_distinct
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        return self

    def _fit_class(self, Xc: np.ndarray, label, seed: int) -> tuple[np.ndarray, int, float, int]:
        """k-means on one class: (prototypes (H, D), distinct prototypes, inertia, iterations)."""
        H = self.n_prototypes
        # Canonical order: k-means++ picks samples by position, so sorting makes the result a
        # function of the set of embeddings. np.unique sorts rows lexicographically.
        distinct, counts = np.unique(Xc, axis=0, return_counts=True)
        if len(distinct) <= H:
            if len(distinct) < H:
                what = (f"{len(Xc)} training samples" if len(Xc) < H
                        else f"{len(Xc)} training samples but only {len(distinct)} distinct")
                name = label.item() if isinstance(label, np.generic) else label
                warnings.warn(
                    f"KMeansHead: class {name!r} has {what}, fewer than n_prototypes={H}; it gets "
                    f"{len(distinct)} distinct prototypes (its samples), repeated to fill {H} rows",
                    SmallClassWarning, stacklevel=3,
                )
            # With as many clusters as distinct points, k-means' optimum is the points themselves.
            rows = np.resize(np.arange(len(distinct)), H)
            return distinct[rows], len(distinct), 0.0, 0
        Xc = np.repeat(distinct, counts, axis=0)  # the class's embeddings, sorted: canonical order
        # One thread: scikit-learn's Lloyd step sums each thread's chunks of samples separately,
        # so with more than 256 samples a class's prototypes depend on the thread count.
        with threadpool_limits(limits=1):
            km = KMeans(n_clusters=H, n_init=self.n_init, max_iter=self.max_iter,
                        random_state=seed).fit(Xc)
        return km.cluster_centers_.astype(np.float64, copy=False), H, float(km.inertia_), int(km.n_iter_)

    # ------------------------------------------------------------------ prediction
    def class_scores(self, X) -> np.ndarray:
        """Class scores ``s_c(x) = -min_h ||x - p_ch||^2``, always of shape (n_samples, n_classes).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float64; column c belongs to ``classes_[c]``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        C, H, D = self.prototypes_.shape
        d = squared_distances(X, self.prototypes_.reshape(C * H, D)).reshape(len(X), C, H)
        return -d.min(axis=2)

    def nearest_prototype(self, X, y=None) -> tuple[np.ndarray, np.ndarray]:
        """Class index and prototype index of the nearest prototype of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
            Restrict each sample to the prototypes of its class ``y[i]``: the cluster of its class
            it belongs to (``argmin_h ||x - p_{y h}||^2``), as k-means assigned training samples.

        Returns
        -------
        (class_index, prototype_index) : two int64 arrays of shape (n_samples,)
            ``prototypes_[class_index[i], prototype_index[i]]`` is the nearest prototype of X[i]
            (ties go to the lower index, so a padded repeat of a prototype is never chosen).
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        C, H, D = self.prototypes_.shape
        d = squared_distances(X, self.prototypes_.reshape(C * H, D))
        if y is None:
            flat = d.argmin(axis=1)
            return (flat // H).astype(np.int64), (flat % H).astype(np.int64)
        y = np.asarray(y).reshape(-1)
        if len(y) != len(X):
            raise ValueError(f"KMeansHead: y has {len(y)} labels for {len(X)} samples")
        position = {label: c for c, label in enumerate(self.classes_.tolist())}
        unknown = [v for v in np.unique(y).tolist() if v not in position]
        if unknown:
            raise ValueError(f"KMeansHead: y holds class {unknown[0]!r}, which is not in classes_ "
                             f"{self.classes_.tolist()}")
        cls = np.array([position[v] for v in y.tolist()], dtype=np.int64)
        own = d.reshape(len(X), C, H)[np.arange(len(X)), cls]
        return cls, own.argmin(axis=1).astype(np.int64)

    def decision_function(self, X) -> np.ndarray:
        """Class scores in scikit-learn's convention.

        With three or more classes this is :meth:`class_scores`, ``s_c(x) = -min_h ||x - p_ch||^2``,
        of shape (n_samples, n_classes). With two classes scikit-learn expects one score per
        sample whose sign gives the class, so it returns ``s_1(x) - s_0(x)`` of shape (n_samples,)
        (positive: ``classes_[1]``); use :meth:`class_scores` for both columns.
        """
        scores = self.class_scores(X)
        if scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict(self, X) -> np.ndarray:
        """The class of the nearest prototype, ``classes_[argmax_c s_c(x)]``."""
        scores = self.class_scores(X)  # checks fitted before classes_ is read
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the class scores, ``exp(s_c) / sum_c' exp(s_c')``, shape (n_samples, n_classes)."""
        return softmax(self.class_scores(X))

    def predict_log_proba(self, X) -> np.ndarray:
        """Log-softmax of the class scores (computed stably, without taking log of a rounded 0)."""
        s = self.class_scores(X)
        s = s - s.max(axis=1, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=1, keepdims=True))
