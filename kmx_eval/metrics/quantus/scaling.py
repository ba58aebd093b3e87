"""Per-sample rescalings of the maps before a metric, and per-sample reasons not to score one.

Maps are signed (docs/METHOD.md, section 3) and their zero can carry meaning (``margin``: the
decision margin is their mean; ``margin_centred``: the image's average evidence) or not
(``distance = -||f_ij - p||^2`` is never positive). Each metric sees one of two per-sample
rescalings, fixed in its spec, after which Quantus is told ``normalise=False`` and ``abs=True``
(a no-op on the non-negative result):

- ``rank``: min-max to [0, 1], ``a' = (a - min a) / (max a - min a)``. Strictly increasing and
  invariant to ``a -> alpha a + c`` (``alpha > 0``), so metrics that only use the order of the
  values, or are invariant to an affine rescaling of the map, are unchanged by it. It also keeps
  Quantus's "all values negative" assertion from rejecting ``distance`` maps.
- ``centred``: the positive part of the map centred on its own mean,
  ``a' = max(a - mean a, 0) / max(a - mean a)``: relevance is evidence for the explained class
  *above the image's average*, the mass that relevance mass accuracy (Arras et al. 2022) and
  attribution localisation (Kohlbrenner et al. 2020) count. Used by the mass metrics and
  Sparseness. It is invariant to ``a -> alpha a + c`` (``alpha > 0``): a per-image constant, which
  is what separates ``margin`` from ``margin_centred``, cannot move a mass metric, and a map that
  is never positive (``distance = -||f_ij - p||^2``) is scored by where it is above its own mean
  instead of being NaN. (The positive part of the raw map, :func:`positive_part`, measured the
  offset: 96-98% of margin and CAM maps are positive everywhere, so their "mass inside the mask"
  was about the mask's share of the image.)

Both rescalings make every map-based number here invariant to a per-image positive affine change
of the map (``Invariance.MAP_SHIFT`` and ``MAP_SCALE``; property-tested), so maps equal up to such a
change (:func:`affine_equivalent`) share their results.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .spec import mask_share


def minmax(a: np.ndarray) -> np.ndarray:
    """Per-sample ``(a - min) / (max - min)`` over all but the first axis; constant maps -> 0."""
    a = np.asarray(a, dtype=np.float32)
    flat = a.reshape(len(a), -1)
    lo = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - lo
    out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1), 0)
    return out.reshape(a.shape).astype(np.float32)


def positive_part(a: np.ndarray) -> np.ndarray:
    """Per-sample ``max(a, 0) / max a``; a map with no positive value -> 0."""
    a = np.asarray(a, dtype=np.float32)
    flat = a.reshape(len(a), -1)
    hi = flat.max(axis=1, keepdims=True)
    out = np.where(hi > 0, np.clip(flat, 0, None) / np.where(hi > 0, hi, 1), 0)
    return out.reshape(a.shape).astype(np.float32)


def centred_positive(a: np.ndarray) -> np.ndarray:
    """Per-sample ``max(a - mean a, 0) / max(a - mean a)``; a constant map -> 0.

    Invariant to ``a -> alpha a + c`` for ``alpha > 0`` (up to rounding).
    """
    a = np.asarray(a, dtype=np.float32)
    flat = a.reshape(len(a), -1).astype(np.float64)
    centred = flat - flat.mean(axis=1, keepdims=True)
    return positive_part(centred.astype(np.float32)).reshape(a.shape)


#: Per-sample rescalings of the maps before a metric (module docstring).
SCALINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"rank": minmax, "centred": centred_positive}
SCALING_NOTES = {"rank": "per-sample min-max to [0, 1]",
                 "centred": "per-sample positive part of the map minus its mean, max 1"}


def affine_equivalent(a: np.ndarray, b: np.ndarray, atol: float = 1e-4) -> bool:
    """True when every map of ``b`` equals the map of ``a`` up to a positive affine change,
    ``b_i = alpha_i a_i + c_i`` with ``alpha_i > 0`` (compared after min-max, within ``atol``).

    Such maps get identical scores from every metric invariant to ``MAP_SHIFT`` and ``MAP_SCALE``
    (``margin`` and ``margin_centred`` differ by a per-image constant, docs/METHOD.md, section 3).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return False
    flat_a, flat_b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if not np.array_equal(np.ptp(flat_a, axis=1) > 0, np.ptp(flat_b, axis=1) > 0):
        return False
    return bool(np.allclose(minmax(a), minmax(b), rtol=0, atol=atol))


def map_problems(a: np.ndarray, scaling: str = "rank") -> list[str | None]:
    """Per-sample reason why a map cannot be scored: non-finite values or a constant map.

    (A map that is never positive is scored: both rescalings are invariant to adding a constant.)"""
    flat = np.asarray(a).reshape(len(a), -1)
    reasons: list[str | None] = []
    for row in flat:
        if not np.all(np.isfinite(row)):
            reasons.append("map has non-finite values")
        elif row.max() == row.min():
            reasons.append("constant map (all zero)" if row.max() == 0 else "constant map")
        else:
            reasons.append(None)
    return reasons


def mask_problems(s: np.ndarray) -> list[str | None]:
    """Per-sample reason why a mask cannot be used for localisation: empty or whole image."""
    share = mask_share(s)
    return ["empty mask" if v == 0 else "mask covers the whole image" if v == 1 else None for v in share]
