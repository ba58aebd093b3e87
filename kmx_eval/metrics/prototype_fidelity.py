"""Prototype fidelity: do prototypes represent the data? (METHOD.md section 4)

Arrays in, numbers out. Prototypes and embeddings live in the same space ``z_S`` (pooled
embeddings of a block combination): the k-means prototypes ``p_ch`` of the KMEx head, and the
linear prototypes ``w_c`` (rows of a linear head seen as a nearest-prototype rule with offsets,
``<w_c, z> + b_c = -1/2 ||z - w_c||^2 + 1/2 ||w_c||^2 + b_c + const(z)``).

Distances are computed with :func:`torch.cdist` in float64, in blocks of rows, so that a
nearest-neighbour search over N training embeddings never materialises an N x N x D array
(PITFALLS.md: a numpy broadcast over 1,500 x 1,500 x 512 takes gigabytes).

Metrics (each also available per prototype, so that intervals can be bootstrapped):

- proximity ratio ``rho = 1/P sum_p d(p, NN_train(p)) / median_i d(z_i, NN_{train minus i}(z_i))``,
  with ``d`` Euclidean or cosine (``1 - cos``, blind to the scale of ``w_c``): about 1 or less
  means the prototype sits among the data, far above 1 means it is off the data manifold;
- class purity@m: share of the ``m`` nearest training embeddings of a prototype that carry its
  class, averaged over prototypes;
- decision agreement: per test sample, ``[class of the nearest prototype (no offsets) = head's
  decision]``; 1 for the k-means head by construction, and for a linear head the share of
  decisions that do not depend on the offsets ``1/2 ||w_c||^2 + b_c``;
- diversity: normalised entropy of a softmax over pairwise prototype similarities (see
  :func:`diversity_per_prototype`).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

Metric = Literal["euclidean", "cosine"]
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
        return torch.cdist(a, b)
    an = torch.nn.functional.normalize(a, dim=1, eps=1e-12)
    bn = torch.nn.functional.normalize(b, dim=1, eps=1e-12)
    return (1.0 - an @ bn.T).clamp_min(0.0)


def nearest_neighbours(
    queries,
    reference,
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


def class_purities(
    prototypes,
    prototype_classes,
    train,
    train_labels,
    m: int,
    metric: Metric = "euclidean",
) -> np.ndarray:
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


def class_purity(
    prototypes,
    prototype_classes,
    train,
    train_labels,
    m: int,
    metric: Metric = "euclidean",
) -> float:
    """Class purity@m averaged over prototypes (:func:`class_purities`), in [0, 1]."""
    return float(np.mean(class_purities(prototypes, prototype_classes, train, train_labels, m, metric)))


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


def diversity_per_prototype(prototypes) -> np.ndarray:
    """Normalised entropy of each prototype's softmax over its similarities to the others.

    With ``d_ij = ||p_i - p_j||^2`` and prototype ``i``'s own scale
    ``tau_i = median_{j != i} d_ij``, prototype ``i`` spreads its similarity over the others as
    ``q_ij = exp(-d_ij / tau_i) / sum_{k != i} exp(-d_ik / tau_i)`` (``j != i``) and scores
    ``H_i / log(P - 1)`` with ``H_i = -sum_{j != i} q_ij log q_ij``.

    A score of 1 means prototype ``i`` is equally far from every other prototype (evenly
    spread, as in a regular simplex); lower scores mean it has a few companions much closer than
    its median neighbour (prototypes bunch into groups). When at least half of the other
    prototypes coincide with ``p_i`` (``tau_i = 0``, collapse) its score is 0. The per-prototype
    median makes the score invariant to the scale of the space, so linear prototypes ``w_c`` and
    k-means prototypes can be compared. With fewer than 3 prototypes ``log(P - 1) = 0`` and the
    scores are NaN (undefined).

    Returns
    -------
    array (P,), values in [0, 1]
    """
    p = _as_tensor("prototypes", prototypes, 2)
    n = p.shape[0]
    if n < 3:
        return np.full(n, np.nan)
    d2 = torch.cdist(p, p) ** 2
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


def diversity(prototypes) -> float:
    """KMEx-style diversity: mean of :func:`diversity_per_prototype`, in [0, 1] (NaN for P < 3)."""
    return float(np.mean(diversity_per_prototype(prototypes)))
