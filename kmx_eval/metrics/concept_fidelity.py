"""Semantic fidelity of concept maps against part maps (docs/METHOD.md, sections 4 and 6).

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
  arithmetic normalisation): 1 for identical partitions, about 0 for independent ones;
- adjusted mutual information (:func:`sklearn.metrics.adjusted_mutual_info_score`, arithmetic
  normalisation): ``(I - E[I]) / (mean(H(C), H(P)) - E[I])``, NMI corrected for the agreement that
  partitions of the same sizes reach by chance: about 0 for a random partition, where NMI stays
  positive (more so with more concepts on few pixels).

Each score is read between a floor and a ceiling (docs/METHOD.md, section 6):

- chance (:func:`shuffled_concept_maps`): the same concept map with its ids shuffled over the
  scored pixels of each image (same concept sizes, no relation to the parts);
- grid ceiling (:func:`grid_ceiling_maps`): the part map averaged onto the grid the concept map
  lives on (each cell takes its majority part) and upsampled the same way: the best a concept map
  at that resolution can reach;
- floors with structure (:data:`CONCEPT_FLOORS`, :func:`floor_maps`), with the study's number of
  concepts K: any spatially coherent partition beats shuffled ids, so a concept map is also read
  against partitions that know nothing of the network: ``floor_colour`` (k-means with K clusters on
  each image's pixel colours, :func:`colour_kmeans_maps`), ``floor_slic`` (SLIC superpixels with K
  requested segments, :func:`slic_maps`) and ``floor_grid`` (the image cut into K equal grid cells,
  :func:`grid_label_maps`).

Scores inside the object mask ignore the background, which otherwise dominates purity (its chance
level is the largest part's share, about 0.8 on the synthetic shapes); scores over the whole image
are kept, labelled as such.

An image whose part map holds a single label (an empty or full object mask) gives NaN for ARI
and NMI, which compare partitions and are undefined against a trivial one
(:func:`trivial_part_maps` names those samples); its purity is 1 and is kept.
"""

from __future__ import annotations

import warnings

import numpy as np
from skimage.segmentation import slic
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score
from threadpoolctl import threadpool_limits

from kmx_eval.data.torch_data import MEAN, STD


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


def concept_ami(concept_map, part_map, mask=None) -> np.ndarray:
    """Per-image adjusted mutual information between concept and part labels, shape (n,).

    About 0 for a random partition (NMI is not), 1 for identical ones; it can fall below 0. NaN for
    an image whose (masked) part map holds fewer than two labels.
    """
    return _pairwise(adjusted_mutual_info_score, concept_map, part_map, mask)


def trivial_part_maps(part_map, mask=None) -> np.ndarray:
    """Boolean (n,): images whose (masked) part map holds fewer than two labels."""
    p = np.asarray(part_map)
    dummy = np.zeros_like(p)
    return np.array([np.unique(pp).size < 2 for _, pp in _pixels(dummy, p, mask)])


def grid_cells(size: int, grid: int) -> np.ndarray:
    """Grid cell of each of ``size`` pixels under nearest upsampling from ``grid`` cells:
    ``floor(i * grid / size)`` (torch's ``nearest``, which upsamples concept maps)."""
    return np.minimum((np.arange(int(size)) * int(grid)) // int(size), int(grid) - 1)


def grid_ceiling_maps(part_map, grid: tuple[int, int], ignore_background: bool = False) -> np.ndarray:
    """The part map averaged onto ``grid`` and upsampled back: the best concept map at that resolution.

    Each cell of the ``(h, w)`` grid holds the part that covers most of its pixels (the arg-max of
    the part shares averaged over the cell; ties go to the lower part id), and every pixel takes its
    cell's part under nearest upsampling (:func:`grid_cells`). With ``ignore_background`` a cell that
    touches the object holds its majority object part (parts 1..P), so that scores inside the object
    mask are not capped by cells where background covers most pixels. Shape (n, H, W) int64.
    """
    p = np.asarray(part_map).astype(np.int64)
    single = p.ndim == 2
    p = p[None] if single else p
    n, H, W = p.shape
    h, w = int(grid[0]), int(grid[1])
    rows, cols = grid_cells(H, h), grid_cells(W, w)
    n_parts = int(p.max(initial=0)) + 1
    counts = np.zeros((n, h, w, n_parts), dtype=np.int64)
    ii = np.broadcast_to(np.arange(n)[:, None, None], p.shape)
    rr = np.broadcast_to(rows[None, :, None], p.shape)
    cc = np.broadcast_to(cols[None, None, :], p.shape)
    np.add.at(counts, (ii, rr, cc, p), 1)
    if ignore_background and n_parts > 1:
        on_object = counts[..., 1:].sum(axis=3) > 0
        counts[..., 0] = np.where(on_object, -1, counts[..., 0])
    cell_part = counts.argmax(axis=3)                                    # (n, h, w)
    out = cell_part[:, rows][:, :, cols]
    return out[0] if single else out


def shuffled_concept_maps(concept_map, mask=None, seed: int = 0) -> np.ndarray:
    """Chance-level concept maps: each image's ids shuffled over its scored pixels (seeded).

    The shuffled map keeps every concept's size in the image but loses any relation to the parts,
    so its scores are what concepts unrelated to the parts would reach (about 0 for ARI, the largest
    part's share for purity, a small positive value for NMI on few pixels).
    """
    c = np.array(concept_map, copy=True)
    gen = np.random.default_rng(seed)
    keep = None if mask is None else np.asarray(mask).astype(bool)
    for i in range(c.shape[0]):
        flat = c[i].reshape(-1)
        idx = np.arange(flat.size) if keep is None else np.flatnonzero(keep[i].reshape(-1))
        flat[idx] = flat[gen.permutation(idx)]
        c[i] = flat.reshape(c[i].shape)
    return c


#: The concept scores (name -> per-image function).
SCORES = {"purity": concept_purity, "ari": concept_ari, "nmi": concept_nmi, "ami": concept_ami}


def concept_scores(concept_map, part_map, mask=None, scores=None) -> dict[str, np.ndarray]:
    """Per-image purity, ARI, NMI and AMI (each (n,)) of concept maps against part maps; only those
    named in ``scores`` (default: every score of :data:`SCORES`).

    With ``mask`` only its pixels count; an image whose scored part map holds a single label gets
    NaN for all four (purity would be a trivial 1), with :func:`trivial_part_maps` naming it.
    Invariance: unchanged when concept ids (or part ids) are renamed by any one-to-one map.
    """
    out = {name: SCORES[name](concept_map, part_map, mask) for name in (scores or SCORES)}
    if "purity" in out:
        out["purity"] = np.where(trivial_part_maps(part_map, mask), np.nan, out["purity"])
    return out


def shuffled_chance(concept_map, part_map, mask=None, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-image chance level of every score: the scores of :func:`shuffled_concept_maps`, except
    AMI, whose chance level is 0 exactly (its correction subtracts the mutual information expected
    over permutations of the ids with the same sizes, so its mean over shuffles is 0): it is not
    computed (its expected mutual information dominates the cost of the scores)."""
    shuffled = shuffled_concept_maps(concept_map, mask, seed=seed)
    out = concept_scores(shuffled, part_map, mask, scores=[s for s in SCORES if s != "ami"])
    out["ami"] = np.where(trivial_part_maps(part_map, mask), np.nan, 0.0)
    return out


# ---------------------------------------------------------------- floors with structure
#: Method names of the structured floors (:func:`floor_maps`), reference rows of the concept table.
CONCEPT_FLOORS = ("floor_colour", "floor_slic", "floor_grid")


def rgb_images(x) -> np.ndarray:
    """Normalised images ``(n, 3, H, W)`` (``(rgb - MEAN) / STD``, :func:`kmx_eval.data.load_batch`)
    back to RGB in [0, 1], channels last ``(n, H, W, 3)``, float64."""
    x = np.asarray(x, dtype=np.float64)
    rgb = x * np.asarray(STD)[:, None, None] + np.asarray(MEAN)[:, None, None]
    return np.clip(np.moveaxis(rgb, 1, -1), 0.0, 1.0)


def colour_kmeans_maps(images, n_concepts: int, seed: int = 0) -> np.ndarray:
    """Per image, k-means with ``n_concepts`` clusters on its pixel colours (RGB ``(n, H, W, 3)``),
    each pixel labelled by its cluster; (n, H, W) int64. One seeded k-means++ start per image; an
    image with fewer distinct colours than ``n_concepts`` gets as many clusters as it has colours."""
    rgb = np.asarray(images, dtype=np.float64)
    out = np.zeros(rgb.shape[:3], dtype=np.int64)
    for i, img in enumerate(rgb):
        pixels = img.reshape(-1, 3)
        k = min(int(n_concepts), len(np.unique(pixels, axis=0)))
        if k < 2:
            continue
        # One thread: on a few thousand 3-D points OpenMP's start-up and contention on a busy
        # machine cost 20x the fit (2.4 s against 0.1 s measured here).
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", ConvergenceWarning)  # near-duplicate colours, said above
            km = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=seed).fit(pixels)
        out[i] = km.labels_.reshape(img.shape[:2])
    return out


def slic_maps(images, n_concepts: int) -> np.ndarray:
    """Per image, SLIC superpixels (:func:`skimage.segmentation.slic`, CIELAB colour, compactness 10)
    with ``n_concepts`` requested segments on RGB ``(n, H, W, 3)`` in [0, 1]; (n, H, W) int64. SLIC
    seeds a regular grid of about that many centres, so an image gets about ``n_concepts`` segments."""
    rgb = np.asarray(images, dtype=np.float64)
    if not len(rgb):
        return np.zeros(rgb.shape[:3], np.int64)
    return np.stack([slic(img, n_segments=int(n_concepts), compactness=10.0, start_label=0, channel_axis=-1)
                     for img in rgb]).astype(np.int64)


def grid_shape(n_concepts: int) -> tuple[int, int]:
    """``(rows, cols)`` with ``rows * cols = n_concepts`` and ``rows <= cols`` as close as possible
    (8 -> 2 x 4, 9 -> 3 x 3; a prime K gives K vertical stripes)."""
    k = int(n_concepts)
    rows = max(r for r in range(1, int(np.sqrt(k)) + 1) if k % r == 0)
    return rows, k // rows


def grid_label_maps(shape: tuple[int, int, int], n_concepts: int) -> np.ndarray:
    """Maps of ``shape`` (n, H, W) cut into :func:`grid_shape` equal cells (as nearest upsampling of
    a ``rows x cols`` grid, :func:`grid_cells`), labelled ``0 .. n_concepts - 1``; int64."""
    n, H, W = (int(v) for v in shape)
    rows, cols = grid_shape(n_concepts)
    labels = grid_cells(H, rows)[:, None] * cols + grid_cells(W, cols)[None, :]
    return np.broadcast_to(labels, (n, H, W)).astype(np.int64)


def floor_maps(x, n_concepts: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The structured floors (:data:`CONCEPT_FLOORS`) of normalised images ``x`` (n, 3, H, W), each a
    partition with ``n_concepts`` labels that knows nothing of the network."""
    rgb = rgb_images(x)
    return {"floor_colour": colour_kmeans_maps(rgb, n_concepts, seed=seed),
            "floor_slic": slic_maps(rgb, n_concepts),
            "floor_grid": grid_label_maps(rgb.shape[:3], n_concepts)}
