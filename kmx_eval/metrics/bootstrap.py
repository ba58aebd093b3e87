"""Confidence intervals over evaluation images and training seeds (docs/METHOD.md, sections 4 and 6).

**One seed, a real-valued score** (:func:`bootstrap_ci`). For values ``v_1..v_n`` (NaN = missing,
dropped first) the point estimate is the mean ``m = 1/n sum_i v_i``. Each of ``B`` resamples draws
``n`` indices with replacement from a seeded :class:`numpy.random.Generator` and takes the mean
``m*_b``; the interval at confidence ``c`` is the ``(1-c)/2`` and ``(1+c)/2`` quantiles of
``{m*_b}`` (Efron's percentile interval). A comparison of two methods on the same samples (B4 versus
B234 on the same evaluation subset) is a paired bootstrap of the differences ``d_i = a_i - b_i``
(:func:`paired_bootstrap`), much tighter than two independent intervals when the samples vary more
than the methods.

**Several training seeds, seeds in the interval** (:func:`hierarchical_matrix_test`,
:func:`paired_hierarchical_test`; what the report uses). Three trained networks are a sample of the
networks the training could have given, so the interval resamples them too: each of ``B`` resamples
draws ``S`` seeds with replacement, then, for each drawn seed, that seed's images with replacement
(a two-stage bootstrap); the statistic is the same mean over seeds of per-seed means. The interval is
the percentile interval of these, joined with that of the seed level alone, so it is never narrower
than the spread of the per-seed means allows; with one seed it is the image bootstrap
(:func:`bootstrap_ci`). Each comes with the two-sided bootstrap p-value of "the mean is 0"
(:func:`bootstrap_p_value`), which the report's multiplicity control adjusts.

**Several training seeds, seeds fixed** (:func:`cluster_bootstrap_ci`, :func:`paired_cluster_bootstrap`).
Values ``v_si`` of image ``i`` under seed ``s`` (S seeds, the same n images under every seed) are not
S*n independent samples: an image that is hard under one seed is hard under the others. The
statistic is the mean over seeds of the per-seed means,
``m = 1/S sum_s mean_{i present under s} v_si``, and each resample draws n *images* with
replacement and keeps every seed's value of a drawn image (images are clusters; an image's results
under every seed move together). Seed-level spread is reported beside it
(:func:`seed_spread`: the standard deviation, ``ddof=1``, of the S per-seed means), not mixed into it:
this interval conditions on the S trained networks.
With one seed and no missing value :func:`cluster_bootstrap_ci` equals :func:`bootstrap_ci`
(same resampled indices, same arithmetic).

**Proportions** (accuracy, agreement, PointingGame; :func:`wilson_interval`, :func:`proportion_ci`).
A percentile bootstrap of 0/1 values collapses to ``[1, 1]`` when every value is 1, as if 100% on 48
images were certain. The Wilson score interval at ``z = Phi^{-1}((1+c)/2)`` does not:

.. math::  \frac{\hat p + z^2/2n \pm z \sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n} .

Across seeds it is used with the effective number of images of the cluster design,
``n_eff = n * p(1-p) / var_i(pbar_i)`` (``pbar_i`` = image i's mean over its seeds, population
variance), clipped to ``[n, n*S]``: ``n`` when every image gets the same result under every seed
(seeds add nothing), ``n*S`` when seeds are independent; ``n`` when ``p`` is 0 or 1 (no variance
to estimate the design effect from, so the conservative end).

Invariances (tested with hypothesis): every interval brackets its point estimate; the cluster
bootstrap is equivariant under adding a constant to every value; the point estimate does not depend
on the order of images or seeds; Wilson intervals lie in [0, 1] and are mirror images under
``k -> n - k``; a paired difference of identical arrays is exactly zero.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy.stats import norm

# Resamples are drawn in blocks of at most this many indices, so a large test split (10^4
# samples x 10^3 resamples) never materialises 10^7 indices at once.
_MAX_BLOCK = 2_000_000


def _check(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _resampled_means(v: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples of ``v`` (vectorised, in fixed-size blocks)."""
    n = v.size
    gen = np.random.default_rng(seed)
    block = max(1, _MAX_BLOCK // n)
    out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        idx = gen.integers(0, n, size=(stop - start, n))
        out[start:stop] = v[idx].mean(axis=1)
    return out


def bootstrap_ci(
    values: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``values`` (NaN ignored) and its percentile bootstrap interval.

    Parameters
    ----------
    values : array-like, shape (n,)
        Per-sample values; NaN marks a missing sample and is dropped.
    n_resamples : int
        Number of bootstrap resamples ``B``.
    confidence : float
        Coverage ``c`` of the interval, in (0, 1).
    seed : int
        Seed of the :class:`numpy.random.Generator`; the same seed gives the same interval.

    Returns
    -------
    (mean, low, high) : tuple of float
        ``mean = 1/n sum_i v_i``; ``low``/``high`` the ``(1-c)/2`` and ``(1+c)/2`` quantiles of the
        resampled means. All three are NaN when no value is present; with one value the
        interval collapses to it.

    Examples
    --------
    >>> bootstrap_ci([1.0, 1.0, float("nan")], n_resamples=10, seed=0)
    (1.0, 1.0, 1.0)
    """
    _check(n_resamples, confidence)
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    mean = float(v.mean())
    if v.size == 1 or np.all(v == v[0]):
        return (mean, mean, mean)
    means = _resampled_means(v, int(n_resamples), int(seed))
    alpha = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (mean, float(low), float(high))


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean paired difference ``a - b`` and its percentile bootstrap interval.

    Only samples present in both (neither is NaN) enter: ``d_i = a_i - b_i`` for those ``i``,
    then :func:`bootstrap_ci` of ``d``. ``a`` and ``b`` must be aligned (same samples, same
    order, as in the evaluation subset shared by every combination).

    Returns
    -------
    (mean difference, low, high) : tuple of float
        NaN when no sample is present in both.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired_bootstrap needs aligned samples, got {x.size} and {y.size} values")
    both = ~(np.isnan(x) | np.isnan(y))
    return bootstrap_ci(x[both] - y[both], n_resamples=n_resamples, confidence=confidence, seed=seed)


# ------------------------------------------------------------------------------ several seeds
def _as_seed_matrix(values) -> np.ndarray:
    """Values as a float64 (S, n) matrix: a 1-D array is one seed."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2:
        raise ValueError(f"values must have shape (n_images,) or (n_seeds, n_images), got {v.shape}")
    return v


def _per_seed_means(v: np.ndarray) -> np.ndarray:
    """``mean_{i present} v_si`` per seed (NaN for a seed without any value), shape (S,)."""
    present = ~np.isnan(v)
    count = present.sum(axis=1)
    total = np.where(present, v, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _mean_over_seeds(per_seed: np.ndarray) -> float:
    finite = per_seed[~np.isnan(per_seed)]
    return float(finite.mean()) if finite.size else float("nan")


def seed_mean(values) -> float:
    """The point estimate of :func:`cluster_bootstrap_ci`: the mean over seeds of the per-seed means
    ``1/S sum_s mean_{i present} v_si`` of ``values`` (n_seeds, n_images) or (n_images,), NaN =
    missing; NaN when no value is present."""
    return _mean_over_seeds(_per_seed_means(_as_seed_matrix(values)))


def seed_spread(values) -> tuple[float, int]:
    """Standard deviation across seeds of the per-seed means, and the number of seeds with a value.

    ``sd = sqrt(1/(S-1) sum_s (m_s - mean_s m_s)^2)`` with ``m_s = mean_{i present} v_si``; NaN
    with fewer than two seeds. Invariant to the order of images and of seeds.

    Parameters
    ----------
    values : array (n_seeds, n_images) or (n_images,), NaN = missing
    """
    means = _per_seed_means(_as_seed_matrix(values))
    means = means[~np.isnan(means)]
    if means.size < 2:
        return float("nan"), int(means.size)
    return float(np.std(means, ddof=1)), int(means.size)


def _resampled_cluster_means(v: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Statistic of ``n_resamples`` image resamples of ``v`` (S, n): mean over seeds of seed means.

    Draws the same indices as :func:`_resampled_means` (one row of n image indices per resample),
    so one seed without missing values gives the same numbers as :func:`bootstrap_ci`.
    """
    S, n = v.shape
    gen = np.random.default_rng(seed)
    block = max(1, _MAX_BLOCK // (n * S))
    has_nan = bool(np.isnan(v).any())
    out = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        idx = gen.integers(0, n, size=(stop - start, n))
        drawn = v[:, idx]  # (S, b, n): every seed's values of the drawn images
        if has_nan:
            present = ~np.isnan(drawn)
            count = present.sum(axis=2)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_seed = np.where(present, drawn, 0.0).sum(axis=2) / count  # NaN when none
            finite = ~np.isnan(per_seed)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start:stop] = np.where(finite, per_seed, 0.0).sum(axis=0) / finite.sum(axis=0)
        else:
            per_seed = drawn.mean(axis=2)  # (S, b)
            out[start:stop] = per_seed[0] if S == 1 else per_seed.mean(axis=0)
    return out


def cluster_bootstrap_ci(
    values,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean over seeds of per-seed means, with a percentile interval from resampling images.

    See the module docstring: images are clusters, so each resample keeps all seeds' values of a
    drawn image. Images missing under every seed are dropped first; an image missing under some
    seeds counts for the others.

    Parameters
    ----------
    values : array (n_seeds, n_images) or (n_images,)
        ``v_si``; column i is the same image under every seed. NaN = missing.
    n_resamples, confidence, seed : as in :func:`bootstrap_ci`.

    Returns
    -------
    (mean, low, high) : tuple of float
        NaN when no value is present; ``low = high = mean`` when all present values are equal or
        only one image is left.
    """
    _check(n_resamples, confidence)
    v = _as_seed_matrix(values)
    v = v[:, ~np.isnan(v).all(axis=0)]
    if v.size == 0:
        return (float("nan"),) * 3
    mean = _mean_over_seeds(_per_seed_means(v))
    finite = v[~np.isnan(v)]
    if v.shape[1] == 1 or np.all(finite == finite[0]):
        return (mean, mean, mean)
    stats = _resampled_cluster_means(v, int(n_resamples), int(seed))
    alpha = (1.0 - float(confidence)) / 2.0
    low, high = np.nanquantile(stats, [alpha, 1.0 - alpha])
    return (mean, float(low), float(high))


def paired_cluster_bootstrap(
    a,
    b,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean paired difference ``a - b`` over seeds and images, resampling images as clusters.

    ``d_si = a_si - b_si`` where both are present (NaN otherwise), then
    :func:`cluster_bootstrap_ci` of ``d``. ``a`` and ``b`` are aligned (seeds in rows, the shared
    evaluation subset in columns, same order).
    """
    x, y = _as_seed_matrix(a), _as_seed_matrix(b)
    if x.shape != y.shape:
        raise ValueError(f"paired_cluster_bootstrap needs aligned values, got shapes {x.shape} and {y.shape}")
    return cluster_bootstrap_ci(x - y, n_resamples=n_resamples, confidence=confidence, seed=seed)


# ------------------------------------------------------------------- seeds, then units within a seed
def _seed_groups(groups) -> list[np.ndarray]:
    """Each seed's values as a float64 vector without NaN; seeds left without a value are dropped."""
    out = []
    for g in groups:
        v = np.asarray(g, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if v.size:
            out.append(v)
    return out


def _within_seed_means(v: np.ndarray, n_draws: int, gen: np.random.Generator) -> np.ndarray:
    """Means of ``n_draws`` resamples (with replacement) of one seed's values ``v``."""
    out = np.empty(n_draws, dtype=np.float64)
    block = max(1, _MAX_BLOCK // v.size)
    for start in range(0, n_draws, block):
        stop = min(n_draws, start + block)
        out[start:stop] = v[gen.integers(0, v.size, size=(stop - start, v.size))].mean(axis=1)
    return out


class BootstrapTest(NamedTuple):
    """A mean with its percentile interval and the two-sided bootstrap p-value of "the mean is 0"
    (:func:`hierarchical_test`)."""

    mean: float
    low: float
    high: float
    p_value: float


def bootstrap_p_value(stats: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the statistic is 0" from its ``B`` resampled values.

    ``p = min(1, 2 (min(#{t_b <= 0}, #{t_b >= 0}) + 1) / (B + 1))``: twice the smaller tail that 0
    cuts off the bootstrap distribution, the p-value that inverts the percentile interval (0 lies
    outside the interval at confidence ``c`` when ``p`` is below about ``1 - c``), with the +1 of a
    resampling p-value, so that ``B`` resamples never claim ``p = 0`` (the least is ``2 / (B + 1)``).
    A point mass at 0 gives 1.
    """
    t = np.asarray(stats, dtype=np.float64)
    t = t[~np.isnan(t)]
    if t.size == 0:
        return float("nan")
    tail = min(int(np.count_nonzero(t <= 0.0)), int(np.count_nonzero(t >= 0.0)))
    return float(min(1.0, 2.0 * (tail + 1) / (t.size + 1)))


def _hierarchical(parts: list[tuple[np.ndarray, ...]], signs: tuple[float, ...], *, n_resamples: int,
                  confidence: float, seed: int) -> BootstrapTest:
    """The interval of :func:`hierarchical_bootstrap_ci` for ``sum_k signs[k] * mean(parts[s][k])``, and
    its p-value (:func:`bootstrap_p_value`; with the seed level's interval joined in, the larger of the
    two p-values, so that 0 is outside the joined interval only when it is outside both)."""
    _check(n_resamples, confidence)
    S, B = len(parts), int(n_resamples)
    per_seed = np.array([sum(sg * v.mean() for sg, v in zip(signs, p)) for p in parts])
    mean = float(per_seed.mean())
    alpha = (1.0 - float(confidence)) / 2.0
    gen = np.random.default_rng(int(seed))
    # Level 1: B x S seeds drawn with replacement. Level 2: every draw (b, j) gets its own resample of
    # the drawn seed's units, so a seed drawn twice in one resample contributes two independent means;
    # only the draws that pick a seed are resampled for it (B * S resamples in all, not B * S per seed).
    drawn = gen.integers(0, S, size=(B, S))
    total = np.zeros(B, dtype=np.float64)
    for s, p in enumerate(parts):
        rows = np.nonzero(drawn == s)[0]  # row-major: the same order on every run
        if rows.size:
            np.add.at(total, rows, sum(sg * _within_seed_means(v, rows.size, gen) for sg, v in zip(signs, p)))
    stats = total / S
    low, high = (float(x) for x in np.quantile(stats, [alpha, 1.0 - alpha]))
    p_value = bootstrap_p_value(stats)
    # The seed level alone (the same seed draws, each seed at its own mean) never gives a narrower
    # interval: with S = 2 or 3 seeds at 95% it is [min, max] of the per-seed means.
    if S == 1:
        return BootstrapTest(mean, low, high, p_value)
    seed_stats = per_seed[drawn].mean(axis=1)
    seed_low, seed_high = (float(x) for x in np.quantile(seed_stats, [alpha, 1.0 - alpha]))
    low, high, p_value = min(low, seed_low), max(high, seed_high), max(p_value, bootstrap_p_value(seed_stats))
    if S <= _EXACT_SEED_LEVEL:
        exact_low, exact_high, exact_p = _exact_seed_level(per_seed, alpha)
        low, high, p_value = min(low, exact_low), max(high, exact_high), max(p_value, exact_p)
    return BootstrapTest(mean, low, high, p_value)


#: Up to this many seeds the seed level's distribution is enumerated (S^S equally likely draws).
_EXACT_SEED_LEVEL = 6


def _exact_seed_level(per_seed: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """The seed level's percentile interval and p-value, exactly: the mean of ``S`` seeds drawn with
    replacement takes each of the ``S^S`` draws with the same probability. Monte Carlo draws can miss
    the rare all-one-seed draw that makes the exact interval [min, max] of the per-seed means (2 seeds,
    or 3 seeds at 95%: ``3^-3 > 0.025``); the enumeration cannot."""
    S = per_seed.size
    draws = np.array(np.meshgrid(*[np.arange(S)] * S, indexing="ij")).reshape(S, -1)
    t = np.sort(per_seed[draws].mean(axis=0))
    k = max(int(math.ceil(alpha * t.size - 1e-9)), 1)
    tail = min(int(np.count_nonzero(t <= 0.0)), int(np.count_nonzero(t >= 0.0)))
    return float(t[k - 1]), float(t[t.size - k]), float(min(1.0, 2.0 * tail / t.size))


def _hierarchical_interval(parts: list[tuple[np.ndarray, ...]], signs: tuple[float, ...], *, n_resamples: int,
                           confidence: float, seed: int) -> tuple[float, float, float]:
    """``(mean, low, high)`` of :func:`_hierarchical`."""
    return tuple(_hierarchical(parts, signs, n_resamples=n_resamples, confidence=confidence, seed=seed)[:3])


def hierarchical_bootstrap_ci(groups, *, n_resamples: int = 1000, confidence: float = 0.95,
                              seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds of per-seed means, with an interval that resamples seeds, then units within each.

    For per-prototype values (docs/METHOD.md, section 6, "Intervals"): the prototypes of one seed
    are not those of another (each seed trains its own CNN and fits its own heads), so they cannot
    be aligned across seeds as images are (:func:`cluster_bootstrap_ci`). With ``S`` seeds and
    ``v_s`` the values of seed ``s`` (NaN dropped; a seed without values dropped), the statistic is
    ``m = 1/S sum_s mean(v_s)``. Each of ``B`` resamples draws ``S`` seeds with replacement and, for
    each draw, resamples that seed's ``n_s`` values with replacement (two-stage bootstrap); the
    interval is the percentile interval of the ``B`` statistics, widened where needed to the
    percentile interval of the seed level alone (the same seed draws, each at its seed's mean), so it
    is never narrower than the spread of the per-seed means allows (tested). With one seed it is
    exactly the ordinary bootstrap of that seed's values (:func:`bootstrap_ci`, same seed; tested).

    Parameters
    ----------
    groups : sequence of array-like
        One vector per seed (lengths may differ).
    n_resamples, confidence, seed : as in :func:`bootstrap_ci`.

    Returns
    -------
    (mean, low, high) : tuple of float, NaN when no value is present
    """
    _check(n_resamples, confidence)
    parts = _seed_groups(groups)
    if not parts:
        return (float("nan"),) * 3
    if len(parts) == 1:
        return bootstrap_ci(parts[0], n_resamples=n_resamples, confidence=confidence, seed=seed)
    return _hierarchical_interval([(v,) for v in parts], (1.0,), n_resamples=n_resamples,
                                  confidence=confidence, seed=seed)


def hierarchical_difference_ci(a_groups, b_groups, *, n_resamples: int = 1000, confidence: float = 0.95,
                               seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds of ``mean(a_s) - mean(b_s)`` with the two-stage interval of
    :func:`hierarchical_bootstrap_ci`: seeds drawn once for both (they are paired by seed: the same
    CNN), then ``a_s`` and ``b_s`` resampled independently within each draw (their units are not
    paired: the prototypes of two heads). Only seeds where both have a value enter. With one seed
    the interval is the percentile interval of the difference of two independent bootstrap means.
    """
    _check(n_resamples, confidence)
    a_groups, b_groups = list(a_groups), list(b_groups)
    if len(a_groups) != len(b_groups):
        raise ValueError(f"hierarchical_difference_ci needs the same seeds, got {len(a_groups)} and {len(b_groups)}")
    parts = []
    for a, b in zip(a_groups, b_groups):
        va, vb = (np.asarray(x, dtype=np.float64).ravel() for x in (a, b))
        va, vb = va[~np.isnan(va)], vb[~np.isnan(vb)]
        if va.size and vb.size:
            parts.append((va, vb))
    if not parts:
        return (float("nan"),) * 3
    return _hierarchical_interval(parts, (1.0, -1.0), n_resamples=n_resamples, confidence=confidence, seed=seed)


def hierarchical_test(groups, *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> BootstrapTest:
    """:func:`hierarchical_bootstrap_ci` of ``groups`` (one vector per seed) with the two-sided bootstrap
    p-value of "the mean is 0" (:func:`bootstrap_p_value` of the same resamples; docs/METHOD.md, section 6,
    "Intervals"). With one seed: :func:`bootstrap_ci` of its values and the p-value of its resampled means."""
    _check(n_resamples, confidence)
    parts = _seed_groups(groups)
    if not parts:
        return BootstrapTest(*(float("nan"),) * 4)
    if len(parts) > 1:
        return _hierarchical([(v,) for v in parts], (1.0,), n_resamples=n_resamples, confidence=confidence,
                             seed=seed)
    v = parts[0]
    mean, low, high = bootstrap_ci(v, n_resamples=n_resamples, confidence=confidence, seed=seed)
    constant = v.size == 1 or bool(np.all(v == v[0]))
    means = np.full(int(n_resamples), mean) if constant else _resampled_means(v, int(n_resamples), int(seed))
    return BootstrapTest(mean, low, high, bootstrap_p_value(means))


def hierarchical_matrix_test(values, *, n_resamples: int = 1000, confidence: float = 0.95,
                             seed: int = 0) -> BootstrapTest:
    """:func:`hierarchical_test` of per-image values ``v_si`` (n_seeds, n_images) or (n_images,), NaN =
    missing: the rows are the seeds, and within a drawn seed its images are resampled.

    This is the report's interval over training seeds and evaluation images (docs/METHOD.md, section 6,
    "Intervals"): unlike :func:`cluster_bootstrap_ci`, which resamples images across three fixed seeds and
    so conditions on the trained networks, the seeds themselves are resampled, so the spread between
    trainings is inside the interval (never narrower than the spread of the per-seed means allows). The
    point estimate is the same mean over seeds of per-seed means (:func:`seed_mean`). With one seed it is
    the image bootstrap of that seed (:func:`bootstrap_ci`, NaN dropped), the per-seed row's interval.
    """
    return hierarchical_test(list(_as_seed_matrix(values)), n_resamples=n_resamples, confidence=confidence,
                             seed=seed)


def paired_hierarchical_test(a, b, *, n_resamples: int = 1000, confidence: float = 0.95,
                             seed: int = 0) -> BootstrapTest:
    """Mean paired difference ``a - b`` over seeds and images with the interval and p-value of
    :func:`hierarchical_matrix_test` of ``d_si = a_si - b_si`` (NaN where either is missing). ``a`` and
    ``b`` are aligned (seeds in rows, the shared evaluation images in columns): the pairs are the same
    image under the same seed, and seeds, then the pairs within each drawn seed, are resampled."""
    x, y = _as_seed_matrix(a), _as_seed_matrix(b)
    if x.shape != y.shape:
        raise ValueError(f"paired_hierarchical_test needs aligned values, got shapes {x.shape} and {y.shape}")
    return hierarchical_matrix_test(x - y, n_resamples=n_resamples, confidence=confidence, seed=seed)


# ------------------------------------------------------------------------------ proportions
def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + float(confidence) / 2.0))


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` of a proportion ``successes / n`` (module docstring).

    ``n`` may be an effective (non-integer) sample size. Equals
    ``scipy.stats.binomtest(k, n).proportion_ci(confidence, method="wilson")`` for integers.
    NaN when ``n`` is 0.

    Examples
    --------
    >>> [round(x, 4) for x in wilson_interval(48, 48)]
    [0.9259, 1.0]
    """
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    n = float(n)
    k = float(successes)
    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0.0 <= k <= n:
        raise ValueError(f"successes must lie in [0, n] = [0, {n:g}], got {k:g}")
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(max(p * (1.0 - p) / n + z * z / (4.0 * n * n), 0.0)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    # The exact ends: 0 successes give low = 0, n successes high = 1 (no rounding below or above).
    if k == 0:
        low = 0.0
    if k == n:
        high = 1.0
    return (low, high)


def effective_images(values) -> float:
    """Effective number of images ``n_eff`` of 0/1 values under S seeds (module docstring).

    ``n_eff = n p(1-p) / var_i(pbar_i)`` clipped to ``[n, n S]``; ``n`` when ``p`` is 0 or 1.
    ``n`` counts the images with at least one value; ``pbar_i`` is the mean over image i's seeds.
    """
    v = _as_seed_matrix(values)
    v = v[:, ~np.isnan(v).all(axis=0)]
    n, S = v.shape[1], v.shape[0]
    if n == 0:
        return 0.0
    p = _mean_over_seeds(_per_seed_means(v))
    image_means = np.nanmean(v, axis=0)
    var = float(np.mean((image_means - image_means.mean()) ** 2))
    if S == 1 or var <= 0.0 or not 0.0 < p < 1.0:
        return float(n)
    return float(np.clip(n * p * (1.0 - p) / var, n, n * S))


def proportion_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Proportion of 1s (mean over seeds of per-seed proportions) and its Wilson interval.

    For 0/1 values (accuracy, agreement, PointingGame hits) of shape (n_images,) or
    (n_seeds, n_images), NaN = missing: ``p`` as in :func:`cluster_bootstrap_ci` and the Wilson
    interval at the effective number of images (:func:`effective_images`), so 100% on n images
    gives ``[low < 1, 1]`` instead of ``[1, 1]``.

    Returns
    -------
    (p, low, high) : tuple of float, NaN when no value is present
    """
    v = _as_seed_matrix(values)
    finite = v[~np.isnan(v)]
    if np.any((finite != 0.0) & (finite != 1.0)):
        raise ValueError("proportion_ci needs 0/1 values (NaN for missing)")
    if finite.size == 0:
        return (float("nan"),) * 3
    p = _mean_over_seeds(_per_seed_means(v))
    n_eff = effective_images(v)
    low, high = wilson_interval(p * n_eff, n_eff, confidence)
    return (p, low, high)


class Interval(NamedTuple):
    """A point estimate with its interval over training seeds and images, and its seed spread.

    ``mean, low, high``: for a real-valued score :func:`hierarchical_matrix_test`
    (``method="hierarchical_bootstrap"``: seeds, then images within each; with one seed the image
    bootstrap); for a proportion the Wilson interval of :func:`proportion_ci` (``method="wilson"``),
    joined over two seeds or more with the hierarchical interval (``method="hierarchical_wilson"``);
    ``seed_sd``, ``n_seeds``: :func:`seed_spread`; ``n``: images with at least one value.
    """

    mean: float
    low: float
    high: float
    seed_sd: float
    n_seeds: int
    n: int
    method: str


def summarise(values, *, proportion: bool = False, n_resamples: int = 1000, confidence: float = 0.95,
              seed: int = 0) -> Interval:
    """One call for an interval across seeds (the report's intervals from per-sample scores,
    :func:`kmx_eval.report.stats.aggregate_seeds`; docs/METHOD.md, section 6, "Intervals").

    Real-valued scores: :func:`hierarchical_matrix_test` (seeds resampled, then images within each drawn
    seed). Proportions (0/1 per image): with one seed the Wilson interval (a bootstrap of values that are
    all 1 collapses to [1, 1]); with two seeds or more the union of the Wilson interval at the cluster
    design's effective number of images (:func:`proportion_ci`) and the hierarchical interval of the
    0/1 values, so that the spread between seeds is inside it and it still does not collapse at 100%.

    Parameters
    ----------
    values : array (n_seeds, n_images) or (n_images,), NaN = missing
    proportion : bool
        The values are 0/1 outcomes (accuracy, agreement, PointingGame).
    n_resamples, confidence, seed : bootstrap settings (``params.evaluate.bootstrap``).
    """
    v = _as_seed_matrix(values)
    sd, n_seeds = seed_spread(v)
    if proportion:
        mean, low, high = proportion_ci(v, confidence)
        method = "wilson"
        if n_seeds > 1:
            _, h_low, h_high, _ = hierarchical_matrix_test(v, n_resamples=n_resamples, confidence=confidence,
                                                            seed=seed)
            low, high, method = min(low, h_low), max(high, h_high), "hierarchical_wilson"
    else:
        mean, low, high, _ = hierarchical_matrix_test(v, n_resamples=n_resamples, confidence=confidence, seed=seed)
        method = "hierarchical_bootstrap"
    n = int((~np.isnan(v).all(axis=0)).sum())
    return Interval(mean, low, high, sd, n_seeds, n, method)
