"""Part-level localisation against annotated part locations (keypoints), docs/METHOD.md, section 4.

Where a dataset annotates named part locations rather than part maps (CUB-200-2011's 15 parts,
the ``keypoints`` column of a prepared dataset, :func:`kmx_eval.data.load_keypoints`):

- :func:`part_pointing_game`: does the map's maximum (or its ``top_k`` highest pixels) lie on a
  visible annotated part, within ``tolerance`` pixels? One hit (1) or miss (0) per image, NaN where
  the image has no visible part or the map is constant (it points nowhere). The mean is a hit rate
  in [0, 1]; :func:`pointing_chance` is the rate a uniformly drawn pixel reaches.
- :func:`concept_part_alignment`: adjusted mutual information between the concept id found at
  each visible part location and the part's name, over all images: 1 when each part always falls
  in a concept of its own, 0 (in expectation) when concepts ignore parts.

Invariances: the pointing game reads only the order of a map's values, so it is unchanged when an
image's map is shifted or scaled by a positive factor (``a * m + b``, ``a > 0``); the alignment is
unchanged when concept ids are renamed. Both are property-tested (tests/metrics/test_parts.py).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from sklearn.metrics import adjusted_mutual_info_score

#: The evaluate stage's metric names (rows of kind ``keypoints``): the pointing game at part locations
#: and the concept-part alignment.
KEYPOINT_POINTING, CONCEPT_PART_AMI = "keypoint_pointing", "concept_part_ami"


def _near_pixels(shape: tuple[int, int], xy: np.ndarray, tolerance: float) -> np.ndarray:
    """(H, W) bool: pixels whose square ``[j, j+1] x [i, i+1]`` lies within ``tolerance`` of a point.

    ``xy`` is ``(k, 2)``: column, row in pixel units (the pixel ``(i, j)`` covers ``x`` in
    ``[j, j+1)``, ``y`` in ``[i, i+1)``), so with ``tolerance`` 0 a point hits its own pixel.
    """
    h, w = shape
    cols, rows = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    near = np.zeros(shape, dtype=bool)
    for x, y in np.asarray(xy, dtype=np.float64):
        dx = np.maximum(np.maximum(cols - x, x - (cols + 1)), 0.0)
        dy = np.maximum(np.maximum(rows - y, y - (rows + 1)), 0.0)
        near |= dy[:, None] ** 2 + dx[None, :] ** 2 <= tolerance ** 2
    return near


def part_pointing_game(maps: np.ndarray, keypoints: np.ndarray, visible: np.ndarray, *,
                       top_k: int = 1, tolerance: float = 0.0) -> np.ndarray:
    """Per image: 1.0 when the map's ``top_k`` highest pixels reach a visible part, else 0.0.

    Parameters
    ----------
    maps
        ``(n, H, W)`` relevance maps at the resolution of the keypoints.
    keypoints
        ``(n, P, 2)`` part locations, ``x`` (column) then ``y`` (row), in the maps' pixels.
    visible
        ``(n, P)`` bool: parts annotated in the image (the others are ignored).
    top_k
        Pixels in the pointing region: those at or above the ``top_k``-th largest value, ties
        included as Quantus's PointingGame includes them (1: the map's maximal pixels).
    tolerance
        How far (pixels) a region pixel may be from a part and still hit it (0: the part's own
        pixel; the pointing game of Zhang et al. uses 15 px at 224 px).

    Returns
    -------
    ``(n,)`` float: 1.0 hit, 0.0 miss, NaN where no part is visible or the map is constant.
    """
    maps = np.asarray(maps, dtype=np.float64)
    keypoints, visible = np.asarray(keypoints, dtype=np.float64), np.asarray(visible, dtype=bool)
    if maps.ndim != 3 or keypoints.shape[:1] != maps.shape[:1] or keypoints.shape[2:] != (2,) \
            or visible.shape != keypoints.shape[:2]:
        raise ValueError(f"part_pointing_game: maps (n, H, W), keypoints (n, P, 2), visible (n, P); got "
                         f"{maps.shape}, {keypoints.shape}, {visible.shape}")
    if tolerance < 0:
        raise ValueError(f"part_pointing_game: tolerance must be >= 0 (got {tolerance})")
    discs = keypoint_masks(maps.shape[1:], keypoints, visible, tolerance=tolerance)
    return pointing_hits(maps, discs, visible.any(axis=1), top_k=top_k)


def pointing_hits(maps: np.ndarray, discs: np.ndarray, scored: np.ndarray, *, top_k: int = 1) -> np.ndarray:
    """Per image: 1.0 where the map's pointing region (the pixels at or above its ``top_k``-th value)
    meets ``discs`` (``(n, H, W)`` bool, :func:`keypoint_masks`), else 0.0; NaN where ``scored`` is
    False (no visible part) or the map is constant or not finite. :func:`part_pointing_game` with the
    discs built once, for a caller that scores several maps of the same images."""
    maps = np.asarray(maps, dtype=np.float64)
    if not 1 <= top_k <= maps.shape[1] * maps.shape[2]:
        raise ValueError(f"pointing game: top_k must be 1..H*W (got {top_k})")
    out = np.full(len(maps), np.nan)
    for i, m in enumerate(maps):
        flat = m.ravel()
        if not scored[i] or not np.isfinite(flat).all() or flat.min() == flat.max():
            continue
        # Every pixel at or above the top_k-th value, ties included (Quantus's PointingGame counts any
        # maximal pixel): order only, so invariant to a * m + b, a > 0.
        region = flat >= np.partition(flat, flat.size - top_k)[flat.size - top_k]
        out[i] = float(discs[i].ravel()[region].any())
    return out


def keypoint_masks(shape: tuple[int, int], keypoints: np.ndarray, visible: np.ndarray, *,
                   tolerance: float = 0.0) -> np.ndarray:
    """``(n, H, W)`` bool: per image, the pixels within ``tolerance`` of a visible part.

    The pointing game at ``top_k`` 1 is Quantus's PointingGame against this mask (a hit where a
    maximal pixel lies in it), so its ceiling on a map's own grid is that metric's
    (:func:`kmx_eval.metrics.ceilings.grid_ceilings`); an image without a visible part has an
    empty mask.
    """
    keypoints, visible = np.asarray(keypoints, dtype=np.float64), np.asarray(visible, dtype=bool)
    return np.stack([_near_pixels(shape, kp[vis], tolerance) if vis.any() else np.zeros(shape, bool)
                     for kp, vis in zip(keypoints, visible)]) if len(keypoints) else np.zeros((0, *shape), bool)


def pointing_chance(shape: tuple[int, int], keypoints: np.ndarray, visible: np.ndarray, *,
                    tolerance: float = 0.0) -> np.ndarray:
    """Per image: the share of pixels that hit a visible part, the pointing game's chance level
    for ``top_k`` 1 (a uniformly drawn pixel); NaN where no part is visible."""
    visible = np.asarray(visible, dtype=bool)
    discs = keypoint_masks(shape, keypoints, visible, tolerance=tolerance)
    return np.where(visible.any(axis=1), discs.mean(axis=(1, 2)), np.nan)


def concept_part_alignment(concept_maps: np.ndarray, keypoints: np.ndarray, visible: np.ndarray) -> float:
    """Adjusted mutual information between the concept at each visible part location and the part.

    ``concept_maps`` ``(n, H, W)`` integer concept ids at the keypoints' resolution; each visible
    part ``p`` of image ``i`` contributes the pair (concept id at its pixel, ``p``). At most 1 (each
    part in a concept of its own, whatever the ids); 0 in expectation for concepts independent of
    the parts (the adjustment removes chance agreement). NaN with fewer than two visible parts.
    """
    maps = np.asarray(concept_maps)
    keypoints, visible = np.asarray(keypoints, dtype=np.float64), np.asarray(visible, dtype=bool)
    h, w = maps.shape[1:]
    image, part = np.nonzero(visible)
    if image.size < 2:
        return float("nan")
    cols = np.clip(np.floor(keypoints[image, part, 0]).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(keypoints[image, part, 1]).astype(np.int64), 0, h - 1)
    return float(adjusted_mutual_info_score(part, maps[image, rows, cols]))


def concept_part_alignment_ci(concept_maps: np.ndarray, keypoints: np.ndarray, visible: np.ndarray, *,
                              n_resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    """:func:`concept_part_alignment` and its bias-corrected and accelerated (BCa) bootstrap interval
    over images (images drawn with replacement, each bringing all its visible parts; seeded by
    ``seed``; :func:`scipy.stats.bootstrap`): ``(value, low, high)``, NaN where undefined.

    BCa rather than the percentile interval: drawing an image twice repeats its pairs, which biases
    a resample's AMI, and the percentile interval would carry that bias (it can miss the estimate).
    """
    maps, keypoints, visible = np.asarray(concept_maps), np.asarray(keypoints), np.asarray(visible, dtype=bool)
    value = concept_part_alignment(maps, keypoints, visible)
    if not np.isfinite(value) or len(maps) < 3:
        return value, float("nan"), float("nan")

    def statistic(images):
        return concept_part_alignment(maps[images], keypoints[images], visible[images])

    with warnings.catch_warnings():  # BCa is undefined on a degenerate distribution: handled below
        warnings.simplefilter("ignore")
        res = stats.bootstrap((np.arange(len(maps)),), statistic, n_resamples=int(n_resamples),
                              confidence_level=confidence, method="BCa", vectorized=False,
                              random_state=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        # BCa needs a spread jackknife and bootstrap; without one, the percentile interval
        draws = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
        if not draws.size:
            return value, float("nan"), float("nan")
        tail = 50.0 * (1.0 - confidence)
        low, high = (float(b) for b in np.percentile(draws, [tail, 100.0 - tail]))
    return value, low, high
