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
- ``positive``: the positive part, ``a' = max(a, 0) / max a``: relevance is evidence *for* the
  explained class, as in relevance mass accuracy (Arras et al. 2022) and attribution
  localisation (Kohlbrenner et al. 2020). Invariant to ``a -> alpha a`` but not to a shift.
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


#: Per-sample rescalings of the maps before a metric (module docstring).
SCALINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"rank": minmax, "positive": positive_part}
SCALING_NOTES = {"rank": "per-sample min-max to [0, 1]", "positive": "per-sample positive part, max 1"}


def map_problems(a: np.ndarray, scaling: str = "rank") -> list[str | None]:
    """Per-sample reason why a map cannot be scored: non-finite values, a constant map, or (for
    the ``positive`` scaling) no positive value."""
    flat = np.asarray(a).reshape(len(a), -1)
    reasons: list[str | None] = []
    for row in flat:
        if not np.all(np.isfinite(row)):
            reasons.append("map has non-finite values")
        elif row.max() == row.min():
            reasons.append("constant map (all zero)" if row.max() == 0 else "constant map")
        elif scaling == "positive" and row.max() <= 0:
            reasons.append("no positive relevance (map <= 0 everywhere)")
        else:
            reasons.append(None)
    return reasons


def mask_problems(s: np.ndarray) -> list[str | None]:
    """Per-sample reason why a mask cannot be used for localisation: empty or whole image."""
    share = mask_share(s)
    return ["empty mask" if v == 0 else "mask covers the whole image" if v == 1 else None for v in share]
