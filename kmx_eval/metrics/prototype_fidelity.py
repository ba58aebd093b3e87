"""Prototype fidelity: do prototypes represent the data? (docs/METHOD.md, sections 4 and 6)

Arrays in, numbers out. Prototypes and embeddings live in the same space ``z_S`` (pooled
embeddings of a block combination): the k-means prototypes ``p_ch`` of the KMEx head, and the
linear prototypes ``w_c`` (rows of a linear head seen as a nearest-prototype rule with offsets,
``<w_c, z> + b_c = -1/2 ||z - w_c||^2 + 1/2 ||w_c||^2 + b_c + const(z)``).

Distances are computed with :func:`torch.cdist` in float64, in blocks of rows, so that a
nearest-neighbour search over N training embeddings never materialises an N x N x D array
(a numpy broadcast over 1,500 x 1,500 x 512 takes gigabytes). They are computed from the
differences, never through the matrix product ``||a||^2 - 2<a, b> + ||b||^2``
(:data:`kmx_eval.numerics.EXACT_CDIST`): a multi-threaded BLAS product may sum in another order
from one run to the next, and the prototypes' neighbour distances then differed in the 10th digit between two clean
runs of the same study; the difference form gives every pair the same bits on every run, and
without cancellation.

Metrics (each also available per prototype, so that intervals can be bootstrapped):

- proximity ratio ``rho = 1/P sum_p d(p, NN_train(p)) / median_i d(z_i, NN_{train minus i}(z_i))``,
  with ``d`` Euclidean: about 1 or less means the prototype sits among the data, far above 1 means
  it is off the data manifold;
- class purity@m: share of the ``m`` training embeddings that the head scores highest for a
  prototype which carry its class, averaged over prototypes. The k-means head scores by
  ``-||z - p||^2`` (the ``m`` nearest neighbours); a linear head by its centred logit
  ``<w_c - wbar, z>`` (:func:`linear_class_purities`), which is what its decision uses and what no
  equivalent head changes;
- decision agreement: per test sample, ``[class of the nearest prototype (no offsets) = head's
  decision]``; 1 for the k-means head by construction, and for a linear head the share of
  decisions that do not depend on the offsets ``1/2 ||w_c||^2 + b_c``;
- diversity, under two names (docs/METHOD.md, section 4): ``diversity_kmex``, KMEx's own formula
  (:func:`diversity_kmex_per_prototype`; it depends on the scale of the space, so it is compared
  only between prototype sets in the same space), and ``diversity_scaled``, the suite's scale-free
  normalised entropy (:func:`diversity_scaled_per_prototype`), the one compared across heads in
  different spaces.

Linear prototypes are only defined up to a decision-preserving change (docs/METHOD.md, section 6):
``w_c -> alpha (w_c + v)`` with ``alpha > 0`` and ``v`` shared by all classes (and ``b_c -> alpha
(b_c + beta)``) leaves every decision and the ranking of every softmax unchanged. A number read at
the stored ``alpha = 1, v = 0`` describes that arbitrary choice, so the tables also give the
canonical reading (:func:`canonical_linear_reading`: the offset-free nearest-prototype rule the
head is, fixed in closed form by the class means, with no search), and a proximity that no
shrinking or shift of a reading can drive to 0 (:func:`separation_proximities`). Both are compared
with the class means (:func:`class_mean_prototypes`, k-means at one prototype per class: the same
capacity, in the same space).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from kmx_eval.numerics import EXACT_CDIST

Metric = Literal["euclidean", "cosine"]
#: ``cosine`` is kept for neighbour searches; it is not a prototype-fidelity metric (a shift ``v``
#: of linear prototypes moves it arbitrarily).
METRICS: tuple[str, ...] = ("euclidean", "cosine")

# Rows of the query matrix per distance block: 2048 x N float64 is 16 MB per 1,000 references.
_BLOCK_ROWS = 2048


def _as_tensor(name: str, x, ndim: int) -> torch.Tensor:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return torch.from_numpy(arr)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"distance metric {metric!r} is not one of {', '.join(METRICS)}")


def _distance_block(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """Distances between rows of ``a`` and ``b``: Euclidean ``||a-b||`` or cosine ``1 - cos``."""
    if metric == "euclidean":
        return torch.cdist(a, b, compute_mode=EXACT_CDIST)
    # 1 - cos(a, b) = ||a/|a| - b/|b|||^2 / 2: the exact difference form again, not a product.
    an = torch.nn.functional.normalize(a, dim=1, eps=1e-12)
    bn = torch.nn.functional.normalize(b, dim=1, eps=1e-12)
    return (torch.cdist(an, bn, compute_mode=EXACT_CDIST) ** 2 / 2.0).clamp(0.0, 2.0)


def nearest_neighbours(
    queries,
    reference,
    *,
    k: int = 1,
    metric: Metric = "euclidean",
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``reference`` for every row of ``queries``.

    Parameters
    ----------
    queries : array (n, D)
    reference : array (N, D)
    k : int
        Neighbours per query, ``1 <= k <= N`` (``N - 1`` with ``exclude_self``).
    metric : {"euclidean", "cosine"}
    exclude_self : bool
        ``queries`` is ``reference`` and row ``i`` may not be its own neighbour (duplicates
        elsewhere in ``reference`` still count, at distance 0).

    Returns
    -------
    distances : array (n, k), ascending per row
    indices : array (n, k) of int64, rows of ``reference``
    """
    _check_metric(metric)
    q = _as_tensor("queries", queries, 2)
    r = _as_tensor("reference", reference, 2)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries have dimension {q.shape[1]} but reference has {r.shape[1]}")
    if exclude_self and q.shape[0] != r.shape[0]:
        raise ValueError("exclude_self needs queries and reference to be the same rows")
    available = r.shape[0] - (1 if exclude_self else 0)
    if not 1 <= k <= available:
        raise ValueError(f"k={k} neighbours requested but only {available} reference rows are eligible")
    dists, idx = [], []
    for start in range(0, q.shape[0], _BLOCK_ROWS):
        block = _distance_block(q[start:start + _BLOCK_ROWS], r, metric)
        if exclude_self:
            rows = torch.arange(block.shape[0])
            block[rows, rows + start] = math.inf
        d, i = torch.topk(block, k, dim=1, largest=False, sorted=True)
        dists.append(d)
        idx.append(i)
    return torch.cat(dists).numpy(), torch.cat(idx).numpy().astype(np.int64)


def typical_nn_distance(train, metric: Metric = "euclidean") -> float:
    """``median_i d(z_i, NN(z_i))`` over training embeddings, each excluding itself."""
    d, _ = nearest_neighbours(train, train, k=1, metric=metric, exclude_self=True)
    return float(np.median(d[:, 0]))


def proximity_ratios(prototypes, train, metric: Metric = "euclidean") -> np.ndarray:
    """Per-prototype proximity ``d(p, NN_train(p)) / median_i d(z_i, NN_{train minus i}(z_i))``.

    Returns an array (P,); all NaN when the median nearest-neighbour distance is 0 (more than
    half of the training embeddings have an exact duplicate), where the ratio is undefined.
    """
    d, _ = nearest_neighbours(prototypes, train, k=1, metric=metric)
    scale = typical_nn_distance(train, metric=metric)
    if scale <= 0.0:
        return np.full(d.shape[0], np.nan)
    return d[:, 0] / scale


def proximity_ratio(prototypes, train, metric: Metric = "euclidean") -> float:
    """Mean proximity ratio over prototypes (:func:`proximity_ratios`).

    ``rho = 1/P sum_p d(p, NN_train(p)) / median_i d(z_i, NN_{train minus i}(z_i))``: about 1 or
    below = the prototypes sit among the training embeddings; far above 1 = off the data.
    """
    return float(np.mean(proximity_ratios(prototypes, train, metric=metric)))


def class_purities(prototypes, prototype_classes, train, train_labels, *, m: int,
                   metric: Metric = "euclidean") -> np.ndarray:
    """Per-prototype purity@m: ``1/m sum_{j in NN_m(p)} [y_j = c(p)]``, an array (P,)."""
    classes = np.asarray(prototype_classes).ravel()
    labels = np.asarray(train_labels).ravel()
    n_train = np.asarray(train).shape[0]
    if labels.size != n_train:
        raise ValueError(f"train has {n_train} embeddings but train_labels has {labels.size} labels")
    if classes.size != np.asarray(prototypes).shape[0]:
        raise ValueError(f"{np.asarray(prototypes).shape[0]} prototypes but {classes.size} prototype classes")
    if not 1 <= int(m) <= n_train:
        raise ValueError(f"purity m={m} must lie in 1..{n_train} (the number of training embeddings)")
    _, idx = nearest_neighbours(prototypes, train, k=int(m), metric=metric)
    return (labels[idx] == classes[:, None]).mean(axis=1)


def class_purity(prototypes, prototype_classes, train, train_labels, *, m: int,
                 metric: Metric = "euclidean") -> float:
    """Class purity@m averaged over prototypes (:func:`class_purities`), in [0, 1]."""
    return float(np.mean(class_purities(prototypes, prototype_classes, train, train_labels, m=m, metric=metric)))


def nearest_prototype_decisions(embeddings, prototypes, prototype_classes) -> np.ndarray:
    """``c(argmin_p ||z - p||)``: the nearest-prototype rule without offsets, shape (n,)."""
    classes = np.asarray(prototype_classes).ravel()
    _, idx = nearest_neighbours(embeddings, prototypes, k=1, metric="euclidean")
    return classes[idx[:, 0]]


def decision_agreement(embeddings, prototypes, prototype_classes, decisions) -> np.ndarray:
    """Per-sample ``[c(argmin_p ||z_i - p||) = head decision_i]`` as float 0/1, shape (n,).

    For a linear head with prototypes ``w_c`` this measures how many decisions survive dropping
    the offsets ``1/2 ||w_c||^2 + b_c``; for the k-means head it is 1 by construction.
    """
    decisions = np.asarray(decisions).ravel()
    nearest = nearest_prototype_decisions(embeddings, prototypes, prototype_classes)
    if nearest.shape != decisions.shape:
        raise ValueError(f"{nearest.size} embeddings but {decisions.size} head decisions")
    return (nearest == decisions).astype(np.float64)


def diversity_scaled_per_prototype(prototypes) -> np.ndarray:
    """The suite's scale-free diversity of each prototype (docs/METHOD.md, section 4).

    A normalised entropy of each prototype's softmax over its similarities to the *other*
    prototypes, each measured in units of that prototype's own median squared distance. With
    ``d_ij = ||p_i - p_j||^2`` and ``tau_i = median_{j != i} d_ij``, prototype ``i`` spreads its
    similarity over the others as ``q_ij = exp(-d_ij / tau_i) / sum_{k != i} exp(-d_ik / tau_i)``
    (``j != i``) and scores ``H_i / log(P - 1)`` with ``H_i = -sum_{j != i} q_ij log q_ij``.

    This is not KMEx's diversity (:func:`diversity_kmex_per_prototype`): it leaves out the
    diagonal, divides the distances by ``tau_i``, and normalises by ``log(P - 1)``.

    A score of 1 means prototype ``i`` is equally far from every other prototype (evenly spread,
    as in a regular simplex); lower scores mean it has a few companions much closer than its
    median neighbour (prototypes bunch into groups). When at least half of the other prototypes
    coincide with ``p_i`` (``tau_i = 0``, collapse) its score is 0. With fewer than 3 prototypes
    ``log(P - 1) = 0`` and the scores are NaN (undefined).

    Invariance: ``d_ij / tau_i`` does not change when every prototype is mapped by
    ``p -> s Q p + t`` (a common rescaling ``s > 0``, a rotation or reflection ``Q`` and a shift
    ``t``), so neither does the score (tested). That is why it, and not KMEx's formula, is the
    diversity compared between heads in different spaces (standardised and raw embeddings, linear
    rows ``w_c`` at any equivalent ``alpha (w_c + v)``).

    Returns
    -------
    array (P,), values in [0, 1]
    """
    p = _as_tensor("prototypes", prototypes, 2)
    n = p.shape[0]
    if n < 3:
        return np.full(n, np.nan)
    d2 = torch.cdist(p, p, compute_mode=EXACT_CDIST) ** 2
    off = ~torch.eye(n, dtype=torch.bool)
    others = d2[off].reshape(n, n - 1)
    # torch.median returns the lower of the two middle values; use the mean of both, as numpy
    tau = torch.quantile(others, 0.5, dim=1, keepdim=True)
    collapsed = tau[:, 0] <= 0
    logits = -others / torch.where(tau > 0, tau, torch.ones_like(tau))
    q = torch.softmax(logits, dim=1)
    plogp = torch.where(q > 0, q * torch.log(q), torch.zeros_like(q))
    score = (-plogp.sum(dim=1) / math.log(n - 1)).clamp(0.0, 1.0)
    score[collapsed] = 0.0
    return score.numpy()


def diversity_scaled(prototypes) -> float:
    """Mean of :func:`diversity_scaled_per_prototype`, in [0, 1] (NaN for P < 3); scale-free."""
    return float(np.mean(diversity_scaled_per_prototype(prototypes)))


#: KMEx's similarity offsets: ``log(d + 1) - log(d + eps)`` with ``eps = 1e-4`` (KMEx's
#: utils/evaluation.py, ``diversity``, the ``kim`` line).
KMEX_SIMILARITY_EPS = 1e-4


def diversity_kmex_per_prototype(prototypes) -> np.ndarray:
    """KMEx's diversity of each prototype, exactly as KMEx computes it, on exact distances.

    Source: github.com/SrishtiGautam/KMEx, utils/evaluation.py, function ``diversity`` (the
    ``kim`` / ``ksx`` / ``ke`` lines for the k-means prototypes). With the Euclidean distances
    ``d_ij = ||p_i - p_j||`` between all ``P`` prototypes, *the prototype itself included*
    (``d_ii = 0``),

    .. math::

        s_{ij} = \\log(d_{ij} + 1) - \\log(d_{ij} + 10^{-4}), \\qquad
        q_{ij} = \\frac{e^{s_{ij}}}{\\sum_{k=1}^{P} e^{s_{ik}}}, \\qquad
        e_i = -\\frac{\\sum_{j=1}^{P} q_{ij} \\log q_{ij}}{\\log P},

    and an ``e_i`` that is NaN counts as 1 (KMEx's ``torch.nan_to_num(ke, 1)``; on finite
    prototypes that happens only for ``P = 1``, where ``log P = 0``: ``s_ij`` lies in
    ``(0, log 1e4]``, so no ``q_ij`` underflows to 0). KMEx's number is the mean
    of ``e_i`` over prototypes (:func:`diversity_kmex`). ``P`` here is the number of prototypes
    passed; KMEx divides by its ``NB_PRT``, the same count for its K x H prototypes.

    **Not scale-free.** ``s_ij`` compares ``d_ij`` with the fixed constants 1 and 1e-4, so the
    score depends on the scale of the space: for ``np.random.default_rng(0).normal(size=(50, 8))``
    it is 0.0158, for the same prototypes times 0.01 it is 0.2156. The diagonal ``s_ii = log(1e4)
    = 9.21`` dominates every row unless the distances between prototypes are well below 1
    (``s_ij`` is about ``1 / d_ij`` for ``d_ij >> 1``), so on embeddings whose distances are in the
    tens the score is near 0 whatever the prototypes' arrangement. It is unchanged by a common
    shift, rotation or reflection of the prototypes, but not by a common rescaling. Compare
    it only between prototype sets in the same space at the same scale (KMEx's own tables); across
    spaces use :func:`diversity_scaled`.

    **Exact distances.** KMEx calls ``torch.cdist`` on float32 prototypes with its default mode,
    whose matrix-product path (``||a||^2 - 2<a, b> + ||b||^2``) leaves the diagonal at about 1e-3
    instead of 0 by cancellation; since ``s_ii`` is steep near 0, that alone moves the value above
    from 0.0158 to 0.0302. Here the distances are float64 differences (:data:`~kmx_eval.numerics.EXACT_CDIST`), so
    ``d_ii = 0`` exactly and the value is the formula's.

    Returns
    -------
    array (P,), values in [0, 1]
    """
    p = _as_tensor("prototypes", prototypes, 2)
    n = p.shape[0]
    if n < 2:  # log P = 0: KMEx's 0 / 0, read as 1
        return np.ones(n)
    d = torch.cdist(p, p, compute_mode=EXACT_CDIST)
    s = torch.log(d + 1.0) - torch.log(d + KMEX_SIMILARITY_EPS)
    q = torch.softmax(s, dim=-1)
    # KMEx's own expression, NaN read as 1 as KMEx does (no q underflows here: s lies in (0, 9.22]).
    e = -(torch.log(q) * q).sum(dim=-1) / math.log(n)
    return torch.nan_to_num(e, nan=1.0).numpy()


def diversity_kmex(prototypes) -> float:
    """KMEx's diversity: mean of :func:`diversity_kmex_per_prototype`, in [0, 1]; depends on the scale."""
    return float(np.mean(diversity_kmex_per_prototype(prototypes)))


# ---------------------------------------------------------------------------------- linear heads
def linear_class_purities(weight, train, train_labels, *, m: int, classes=None) -> np.ndarray:
    """Purity@m of linear prototypes ranked by the centred logit, an array (C,).

    For class ``c`` the ``m`` training embeddings with the largest ``<w_c - wbar, z_i>``
    (``wbar = 1/C sum_c w_c``) are its neighbours, and purity is the share of them labelled ``c``:
    ``1/m sum_{i in top_m(c)} [y_i = c]``. The centred logit differs from the logit
    ``<w_c, z> + b_c`` by a term shared by all classes plus a per-class constant, so it orders the
    samples the way the head's evidence for ``c`` does. Invariance: unchanged when the head is
    replaced by any equivalent one, ``w_c -> alpha (w_c + v)``, ``alpha > 0``, ``v`` shared (the
    centring removes ``v`` and ``alpha`` scales every score of a column alike), and independent of
    the biases.

    Parameters
    ----------
    weight : array (C, D), the rows ``w_c``
    train : array (N, D); train_labels : array (N,)
    m : int, ``1 <= m <= N``
    classes : array (C,), optional, class of each row (default ``0..C-1``)
    """
    W = _as_tensor("weight", weight, 2)
    Z = _as_tensor("train", train, 2)
    labels = np.asarray(train_labels).ravel()
    classes = np.arange(W.shape[0]) if classes is None else np.asarray(classes).ravel()
    if labels.size != Z.shape[0]:
        raise ValueError(f"train has {Z.shape[0]} embeddings but train_labels has {labels.size} labels")
    if W.shape[1] != Z.shape[1]:
        raise ValueError(f"weight has dimension {W.shape[1]} but train has {Z.shape[1]}")
    if not 1 <= int(m) <= Z.shape[0]:
        raise ValueError(f"purity m={m} must lie in 1..{Z.shape[0]} (the number of training embeddings)")
    scores = Z @ (W - W.mean(dim=0, keepdim=True)).T                       # (N, C)
    # Stable order: ties broken by the training index, so equal heads give equal neighbours.
    order = np.argsort(-scores.numpy(), axis=0, kind="stable")[: int(m)]  # (m, C)
    return (labels[order] == classes[None, :]).mean(axis=0)


def canonical_linear_prototypes(weight) -> np.ndarray:
    """The representative of a linear head's equivalence class: ``(W - wbar) / ||W - wbar||_F``.

    Every equivalent head ``alpha (W + 1 v^T)`` (``alpha > 0``) has the same representative, so
    anything computed from it is invariant to ``alpha`` and ``v``. NaN when all rows are equal
    (the head then decides nothing).
    """
    W = np.asarray(weight, dtype=np.float64)
    centred = W - W.mean(axis=0, keepdims=True)
    norm = float(np.linalg.norm(centred))
    if not norm > 0:
        return np.full_like(W, np.nan)
    return centred / norm


# ------------------------------------------------------------------ well-posed readings (issue 23)
@dataclass(frozen=True)
class CanonicalReading:
    """The canonical offset-free reading of a linear head (:func:`canonical_linear_reading`).

    Attributes
    ----------
    prototypes : (C, D) array ``q_c = a (w_c + s) + t``
    scale : float, ``a > 0``, the factor on the rows (the head's logits are ``1/a`` times the
        nearest-prototype scores ``-1/2 ||z - q_c||^2`` up to a shared term)
    exact : bool, whether the head is exactly an offset-free nearest-prototype rule at this reading
        (always, when the class rows are affinely independent: ``C - 1 <= D``)
    """

    prototypes: np.ndarray
    scale: float
    exact: bool


def canonical_linear_reading(weight, bias, class_means) -> CanonicalReading:
    """The prototypes that make a linear head an offset-free nearest-prototype rule, fixed by the class means.

    The SEM identity (docs/METHOD.md, sections 2 and 6) reads ``<w_c, z> + b_c`` as
    ``-1/2 ||z - w_c||^2`` plus the offset ``o_c = b_c + 1/2 ||w_c||^2`` plus a term shared by all
    classes, and every equivalent head ``alpha (w_c + v)`` reads the same way. The canonical reading
    takes the prototypes whose offsets are all equal, so that the head *is* the rule "nearest
    ``q_c``" with no offsets: ``<w_c, z> + b_c = -1/(2a) ||z - q_c||^2`` + a term shared by all
    classes, ``a > 0``. Writing ``q_c = (w_c + u) / lambda`` (``lambda = 1 / a``), equal offsets on
    every pair of classes is a linear condition on ``(u, lambda)``,

    .. math::  \langle w_c - w_1, u \rangle + \lambda (b_c - b_1)
               = -\tfrac12 (\lVert w_c \rVert^2 - \lVert w_1 \rVert^2), \quad c = 2..C.

    With ``u_0``, ``u_d`` the minimum-norm solutions for the right-hand side and for ``b_c - b_1``,
    the solutions are ``u = u_0 - lambda u_d + g`` (``g`` orthogonal to every ``w_c - w_1``), i.e. the
    family ``q_c(a, g) = a (w_c + u_0 + g) - u_d``. Every member gives exactly the head's decisions
    without offsets; the family is the freedom the head leaves: scaling the prototypes about their
    circumcentre, and shifting them along directions no decision depends on. The canonical reading
    is the member closest to the class means ``mu_c``, ``min_{a > 0, g} sum_c ||q_c(a, g) - mu_c||^2``,
    in closed form (:func:`_closest_member`); NaN where the best fit has ``a <= 0`` (the class means
    lie opposite to the rows) or the rows are all equal.

    Invariance: the reading depends on the head only through its decisions' equivalence class
    (``w_c -> alpha (w_c + v)``, ``b_c -> alpha (b_c + beta)``, ``alpha > 0``; tested), and a head built
    as ``-1/2 ||z - p_c||^2`` whose class means are ``p_c`` is read as ``p_c`` exactly (tested).
    When the rows are not affinely independent (``C - 1 > D``) no exact member exists; the
    least-squares solution of the equations is used and ``exact`` is False.

    Parameters
    ----------
    weight : (C, D) rows ``w_c``; bias : (C,) ``b_c``; class_means : (C, D) ``mu_c``
    """
    W = np.asarray(weight, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64).ravel()
    M = np.asarray(class_means, dtype=np.float64)
    if W.ndim != 2 or b.shape != (W.shape[0],) or M.shape != W.shape:
        raise ValueError(f"weight {W.shape}, bias {b.shape} and class_means {M.shape} do not match")
    dW, db = W[1:] - W[0], b[1:] - b[0]
    rhs = -0.5 * ((W[1:] ** 2).sum(axis=1) - (W[0] ** 2).sum())
    # Minimum-norm solutions of  dW u = rhs - lambda db:  u(lambda) = u_0 - lambda u_d.
    pinv = np.linalg.pinv(dW) if len(dW) else np.zeros((W.shape[1], 0))
    u0, ud = pinv @ rhs, pinv @ db
    exact = bool(np.allclose(dW @ u0, rhs, atol=1e-9 * max(1.0, np.abs(rhs).max(initial=0.0)))
                 and np.allclose(dW @ ud, db, atol=1e-9 * max(1.0, np.abs(db).max(initial=0.0))))
    # q_c = (w_c + u(lambda) + g) / lambda = a (w_c + u_0 + g) - u_d, with a = 1 / lambda, g free
    # in the null space of dW (a shift no decision sees).
    basis = _null_space(dW, W.shape[1])
    a, g = _closest_member(W + u0, -ud, basis, M)
    return CanonicalReading(a * (W + u0 + g) - ud, float(a), exact)


def _null_space(A: np.ndarray, dim: int) -> np.ndarray:
    """Orthonormal basis (k, dim) of ``{x : A x = 0}``."""
    if A.size == 0:
        return np.eye(dim)
    _, s, vt = np.linalg.svd(A, full_matrices=True)
    rank = int(np.sum(s > s.max() * max(A.shape) * np.finfo(float).eps)) if s.size else 0
    return vt[rank:]


def _closest_member(V: np.ndarray, shift: np.ndarray, basis: np.ndarray, M: np.ndarray) -> tuple[float, np.ndarray]:
    """``argmin_{a > 0, g in span(basis)} sum_c ||a (V_c + g) + shift - M_c||^2`` in closed form.

    With ``h = a g`` the problem is linear least squares in ``(a, h)``: ``h`` only moves the mean of
    the rows, so ``h = P (mbar - a vbar - shift)`` (``P`` the projector on the basis) and ``a``
    solves a one-variable least squares on the rows centred and projected off the basis.
    """
    P = basis.T @ basis
    R = M - shift
    Vc, Rc = V - V.mean(axis=0), R - R.mean(axis=0)
    # sum_c ||a V_c + h - R_c||^2 = sum_c ||a Vc_c - Rc_c||^2 + C ||a vbar + h - rbar||^2, and the best h
    # leaves C ||Q (a vbar - rbar)||^2 (Q = I - P): one least squares in a, the mean rows weighted by C.
    Q = np.eye(V.shape[1]) - P
    w = math.sqrt(len(V))
    x = np.concatenate([Vc.ravel(), w * (Q @ V.mean(axis=0))])
    y = np.concatenate([Rc.ravel(), w * (Q @ R.mean(axis=0))])
    denom = float(x @ x)
    a = float(x @ y) / denom if denom > 0 else math.nan
    if not a > 0:  # the best fit would flip the rows (a <= 0): no positive scale fits the means
        return math.nan, np.full(V.shape[1], np.nan)
    h = P @ (R.mean(axis=0) - a * V.mean(axis=0))
    return a, h / a


def class_mean_prototypes(train, train_labels, classes=None) -> np.ndarray:
    """One prototype per class: the mean ``mu_c`` of its training embeddings, an array (C, D).

    The reference prototype set of docs/METHOD.md, section 4: what any average scores. It is also
    k-means at one prototype per class (the optimum of k-means with one cluster is the mean; tested
    against :class:`~kmx_eval.heads.kmeans.KMeansHead` with ``n_prototypes=1``). ``classes``
    default to ``0..max(label)``; a class without training embeddings is an error.
    """
    Z = np.asarray(train, dtype=np.float64)
    labels = np.asarray(train_labels).ravel()
    if labels.size != Z.shape[0]:
        raise ValueError(f"train has {Z.shape[0]} embeddings but train_labels has {labels.size} labels")
    classes = np.arange(int(labels.max()) + 1) if classes is None else np.asarray(classes).ravel()
    missing = [c for c in classes.tolist() if not np.any(labels == c)]
    if missing:
        raise ValueError(f"class(es) {missing} have no training embeddings, so no class mean")
    return np.stack([Z[labels == c].mean(axis=0) for c in classes])


def separation_proximities(prototypes, prototype_classes, train) -> np.ndarray:
    """Per prototype ``d(p, NN_train(p)) / min_{q of another class} ||p - q||``, an array (P,).

    A proximity that is scale-free and cannot be driven to 0 by shrinking a reading
    (docs/METHOD.md, section 6): the distance to the data is measured in units of the distance to the
    nearest prototype of another class, so a rescaling of the whole space leaves it unchanged, and
    collapsing the prototypes onto one point makes the unit shrink with them.

    Bound: let ``delta`` be the smallest distance between prototypes of different classes and ``m``
    the smallest distance between distinct training embeddings. If ``delta <= m / 2``, the mean over
    prototypes is at least ``1 / P``. (For the closest pair ``p, q``, both ratios have the unit
    ``delta``; with nearest training embeddings ``z, z'``, ``d(p, z) + d(q, z') >= delta`` when
    ``z = z'`` by the triangle inequality, and ``>= m - delta >= delta`` otherwise.) So for a linear
    reading ``u + alpha Wc`` no shift ``u`` and no shrinking of ``alpha`` brings it below ``1 / C``
    (tested), where the proximity ratio (:func:`proximity_ratios`) goes to 0 with ``u`` on a training
    embedding. NaN for a prototype without a prototype of another class, or at distance 0 from one.
    """
    P = _as_tensor("prototypes", prototypes, 2)
    classes = np.asarray(prototype_classes).ravel()
    if classes.size != P.shape[0]:
        raise ValueError(f"{P.shape[0]} prototypes but {classes.size} prototype classes")
    d_data, _ = nearest_neighbours(P.numpy(), train, k=1)
    d_protos = torch.cdist(P, P, compute_mode=EXACT_CDIST).numpy()
    d_protos[classes[:, None] == classes[None, :]] = np.inf
    unit = d_protos.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = d_data[:, 0] / unit
    return np.where(np.isfinite(unit) & (unit > 0), ratio, np.nan)
