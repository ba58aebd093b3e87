"""Heads on pooled embeddings z_S: the k-means head (KMEx), the CNN's linear head as an SEM, a probe.

- :class:`KMeansHead` - scikit-learn classifier: per class, k-means with H prototypes ``p_ch``;
  class score ``s_c(z) = -min_h ||z - p_ch||^2``, prediction ``argmax_c s_c(z)``.
- :class:`KMeansHeadModule` - the same head as a ``torch.nn.Module`` from images to class scores
  (backbone blocks -> block combination F_S -> z_S -> ``s_c``), for Quantus and captum.
- :class:`LinearSEM` - the CNN's own ``fc`` read as prototypes ``w_c`` with offsets
  ``b_c + 1/2 ||w_c||^2``; :class:`LinearProbe` - logistic regression on z_S.
- :func:`save_kmeans_head` / :func:`load_kmeans_head`, :func:`save_probe` / :func:`load_probe`,
  :func:`save_linear_sem` / :func:`load_linear_sem` - ``.npz`` + ``.json``, no pickle.

Fit a head on your own features in three lines, without DVC (any embeddings work, e.g. the
penultimate layer of your own network; here synthetic ones)::

    >>> from sklearn.datasets import make_blobs
    >>> Z, y = make_blobs(n_samples=300, centers=3, n_features=16, random_state=0)
    >>> Z_train, y_train, Z_test, y_test = Z[:200], y[:200], Z[200:], y[200:]

    >>> from kmx_eval.heads import KMeansHead
    >>> head = KMeansHead(n_prototypes=5).fit(Z_train, y_train)
    >>> head.score(Z_test, y_test)
    1.0

``head.prototypes_`` (n_classes, 5, 16) are the prototypes, ``head.predict_proba`` the softmax of
the class scores; ``save_kmeans_head(head, folder)`` keeps it without pickle.
"""

from kmx_eval.heads.kmeans import KMeansHead, SmallClassWarning, softmax, squared_distances
from kmx_eval.heads.linear import LinearProbe, LinearSEM, linear_offsets
from kmx_eval.heads.persist import (
    check_fitted_with,
    load_checked_kmeans_head,
    load_kmeans_head,
    load_linear_sem,
    load_probe,
    read_head_meta,
    save_kmeans_head,
    save_linear_sem,
    save_probe,
)

__all__ = [
    "KMeansHead", "SmallClassWarning", "KMeansHeadModule", "LinearSEM", "LinearProbe",
    "save_kmeans_head", "load_kmeans_head", "save_probe", "load_probe",
    "save_linear_sem", "load_linear_sem", "read_head_meta", "check_fitted_with", "load_checked_kmeans_head",
    "squared_distances", "softmax", "prototype_scores", "linear_offsets",
]


def __getattr__(name: str):
    # The nn.Module side needs torch; importing it lazily keeps `from kmx_eval.heads import
    # KMeansHead` light for users who only fit heads on their own arrays.
    if name in ("KMeansHeadModule", "prototype_scores"):
        from kmx_eval.heads import module  # torch: see above

        return getattr(module, name)
    raise AttributeError(f"module 'kmx_eval.heads' has no attribute {name!r}")
