"""Semantic fidelity of concept maps against part maps (METHOD.md section 4).

A concept map assigns each pixel the id of its nearest concept (k-means on per-location vectors
of F_S, upsampled to the input size); a part map assigns each pixel its ground-truth part
(0 = background, 1..P = parts). Where a dataset only has object masks, the mask is used as a
two-part map (background / object), see :func:`part_map_from_mask`.

All scores are computed per image over its (optionally masked) pixels and returned per sample,
so that their mean and bootstrap interval come from the same vector:

- purity: for each concept ``k`` present in the image, the share of its pixels that fall on its
  most frequent part (background counts as a part), averaged with weights = pixels per concept:
  ``purity = sum_k max_p n_kp / sum_k n_k`` (the classic cluster purity of the contingency table
  ``n_kp``); 1 when every concept lies on a single part;
- adjusted Rand index (:func:`sklearn.metrics.adjusted_rand_score`) between concept and part
  labels of the pixels: 1 for identical partitions (up to renaming), about 0 for random ones;
- normalised mutual information (:func:`sklearn.metrics.normalized_mutual_info_score`,
  arithmetic normalisation): 1 for identical partitions, about 0 for independent ones.

An image whose part map holds a single label (an empty or full object mask) gives NaN for ARI
and NMI, which compare partitions and are undefined against a trivial one
(:func:`trivial_part_maps` names those samples); its purity is 1 and is kept.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def part_map_from_mask(mask) -> np.ndarray:
    """Object mask (n, H, W) of 0/1 (or 0/255) as a two-part map: 0 background, 1 object."""
    return (np.asarray(mask) > 0).astype(np.int64)


def _pixels(concept_map, part_map, mask):
    c = np.asarray(concept_map)
    p = np.asarray(part_map)
    if c.ndim == 2:
        c, p = c[None], p[None]
        mask = None if mask is None else np.asarray(mask)[None]
    if c.shape != p.shape or c.ndim != 3:
        raise ValueError(f"concept map {c.shape} and part map {p.shape} must both be (n, H, W)")
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != c.shape:
            raise ValueError(f"mask {mask.shape} must match the concept map {c.shape}")
    for i in range(c.shape[0]):
        keep = slice(None) if mask is None else mask[i].ravel()
        yield c[i].ravel()[keep].astype(np.int64), p[i].ravel()[keep].astype(np.int64)


def _purity(c: np.ndarray, p: np.ndarray) -> float:
    if c.size == 0:
        return np.nan
    _, ci = np.unique(c, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    table = np.zeros((ci.max() + 1, pi.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, pi), 1)
    return float(table.max(axis=1).sum() / table.sum())


def concept_purity(concept_map, part_map, mask=None) -> np.ndarray:
    """Per-image purity ``sum_k max_p n_kp / sum_k n_k`` of concepts over parts, shape (n,).

    Parameters
    ----------
    concept_map : int array (n, H, W) (or (H, W))
        Concept id of every pixel.
    part_map : int array (n, H, W)
        Part id of every pixel, 0 = background (counted as a part).
    mask : bool array (n, H, W), optional
        Pixels to score; all when None. An image with no scored pixel gives NaN.
    """
    return np.array([_purity(c, p) for c, p in _pixels(concept_map, part_map, mask)])


def pooled_concept_purity(concept_map, part_map, mask=None) -> float:
    """Purity of the contingency table summed over all images (one concept = one part everywhere).

    Unlike :func:`concept_purity`, a concept that falls on the head in one image and on the tail
    in another is impure here: ``sum_k max_p N_kp / N`` with ``N_kp = sum_images n_kp``.
    """
    cs, ps = zip(*_pixels(concept_map, part_map, mask))
    return _purity(np.concatenate(cs), np.concatenate(ps))


def _pairwise(score, concept_map, part_map, mask) -> np.ndarray:
    out = []
    for c, p in _pixels(concept_map, part_map, mask):
        if c.size == 0 or np.unique(p).size < 2:
            out.append(np.nan)
        else:
            out.append(float(score(p, c)))
    return np.array(out, dtype=np.float64)


def concept_ari(concept_map, part_map, mask=None) -> np.ndarray:
    """Per-image adjusted Rand index between concept and part labels of the pixels, shape (n,).

    NaN for an image whose (masked) part map holds fewer than two labels.
    """
    return _pairwise(adjusted_rand_score, concept_map, part_map, mask)


def concept_nmi(concept_map, part_map, mask=None) -> np.ndarray:
    """Per-image normalised mutual information ``I(C;P) / ((H(C)+H(P))/2)``, shape (n,).

    NaN for an image whose (masked) part map holds fewer than two labels.
    """
    return _pairwise(normalized_mutual_info_score, concept_map, part_map, mask)


def trivial_part_maps(part_map, mask=None) -> np.ndarray:
    """Boolean (n,): images whose (masked) part map holds fewer than two labels."""
    p = np.asarray(part_map)
    dummy = np.zeros_like(p)
    return np.array([np.unique(pp).size < 2 for _, pp in _pixels(dummy, p, mask)])
