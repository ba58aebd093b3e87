"""Is a map sharper than the study's coarsest grid? (docs/METHOD.md, section 6, "Sharpness").

The paper's claim is that maps of combinations with shallower blocks (B234) are sharper than those
of the deepest block (B4). A finer grid upsampled to the input size is not sharper by itself, so
every number here is computed twice: on the map ``a`` and on its *coarse twin*
``coarse(a) = up(avgpool_g(a))``, the same map average-pooled to the coarsest grid ``g`` of the
study (B4's) and upsampled back bilinearly, as every explained map is (:func:`coarse_maps`). What
the map holds beyond its coarse twin is what a grid as coarse as B4's could not have shown.

Per image (``a`` a map ``(H, W)``, ``S`` the object mask, ``g = (h, w)``):

- ``mass_in_mask``: the share of the map's mass above its own mean that lies on the object,
  ``sum(S * max(a - mean a, 0)) / sum(max(a - mean a, 0))`` in [0, 1] (the suite's
  RelevanceMassAccuracy convention, section 6), for the map and its coarse twin, and
  ``mass_in_mask_gain`` = map - coarse twin, in [-1, 1]: the localisation that the resolution
  beyond ``g`` adds (its interval over images is the paired one);
- ``fine_energy``: the share of the map's mean-removed spectral energy beyond the coarse grid's
  Nyquist limit, with the orthonormal 2-D DCT-II ``c_kl`` of ``a - mean a`` (no wrap-around edge, so
  no spurious high frequencies at the borders):
  ``sum_{k >= h or l >= w} c_kl^2 / sum_{(k, l) != (0, 0)} c_kl^2`` in [0, 1]; index ``k`` is
  ``k / 2`` cycles per image, and a grid of ``h`` cells holds indices ``0 .. h - 1`` only. The
  coarse twin's value is what bilinear upsampling alone leaks there;
- ``half_max_area``: pixels at or above the map's half maximum, ``a >= (max a + min a) / 2``, over
  the object's pixels, in (0, H W / |S|]; lower is more concentrated (not better localised);
- ``part_pointing`` (where part maps exist): for each part ``p`` of the image, inside the pixels
  nearer to ``p`` than to any other part (its Voronoi region ``R_p``, Euclidean distance transform),
  the share of the map's maximal pixels that fall on ``p``; averaged over the image's parts, in
  [0, 1]. Chance (a map whose maximum falls anywhere in ``R_p``): the mean of ``|p| / |R_p|``.

Invariance (property-tested): every number is unchanged when a map is replaced by ``s a + c``
(``s > 0``, ``c`` any constant, per image): mean removal and the ratios cancel both, the half
maximum and the arg-max move with the map, and pooling and bilinear upsampling commute with them
(``coarse(s a + c) = s coarse(a) + c``). A constant map has no mass above its mean, no energy and no
half maximum: NaN with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
from scipy import fft, ndimage

from kmx_eval.explain.attribution import upsample

#: The per-image scores of :func:`sharpness_scores`, in table order, with ``higher_is_better``
#: (``half_max_area``: lower is more concentrated; ``fine_energy``: higher holds more detail).
SHARPNESS_METRICS = {
    "mass_in_mask_gain": True, "mass_in_mask": True, "mass_in_mask_coarse": True,
    "fine_energy": True, "fine_energy_coarse": True,
    "half_max_area": False, "half_max_area_coarse": False,
    "part_pointing": True, "part_pointing_coarse": True,
}
CONSTANT = "constant map"
EMPTY_MASK = "empty object mask"
NO_PART = "no part in the image"


def _as_maps(maps) -> np.ndarray:
    a = np.asarray(maps, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"maps must be (n, H, W), got {a.shape}")
    return a


def coarse_maps(maps, grid: tuple[int, int]) -> np.ndarray:
    """``up(avgpool_grid(a))``: maps ``(n, H, W)`` average-pooled onto ``grid`` and upsampled
    bilinearly back (as :func:`~kmx_eval.explain.attribution.upsample` does for every map), float64."""
    a = torch.as_tensor(_as_maps(maps))
    size = tuple(a.shape[-2:])
    pooled = nnf.adaptive_avg_pool2d(a[:, None], tuple(int(g) for g in grid))[:, 0]
    return upsample(pooled, size).numpy()


def _constant(a: np.ndarray) -> np.ndarray:
    flat = a.reshape(len(a), -1)
    span = flat.max(axis=1) - flat.min(axis=1)
    return span <= 1e-12 * np.maximum(np.abs(flat).max(axis=1), 1e-300)


def mass_in_mask(maps, masks) -> np.ndarray:
    """Per image, ``sum(S max(a - mean a, 0)) / sum(max(a - mean a, 0))`` in [0, 1], shape (n,);
    NaN for a constant map or an empty mask."""
    a = _as_maps(maps)
    s = np.asarray(masks) > 0
    above = np.maximum(a - a.mean(axis=(1, 2), keepdims=True), 0.0)
    total = above.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (above * s).sum(axis=(1, 2)) / total
    return np.where(_constant(a) | ~s.any(axis=(1, 2)), np.nan, out)


def fine_energy(maps, grid: tuple[int, int]) -> np.ndarray:
    """Per image, the share of mean-removed DCT-II energy at indices ``k >= h`` or ``l >= w``, (n,)."""
    a = _as_maps(maps)
    c = fft.dctn(a - a.mean(axis=(1, 2), keepdims=True), type=2, norm="ortho", axes=(1, 2))
    energy = c ** 2
    energy[:, 0, 0] = 0.0
    h, w = (int(g) for g in grid)
    fine = energy.sum(axis=(1, 2)) - energy[:, :h, :w].sum(axis=(1, 2))
    total = energy.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.clip(fine / total, 0.0, 1.0)
    return np.where(_constant(a), np.nan, out)


def half_max_area(maps, masks) -> np.ndarray:
    """Per image, ``|{a >= (max a + min a) / 2}| / |S|``, shape (n,); NaN for a constant map or an
    empty mask."""
    a = _as_maps(maps)
    s = np.asarray(masks) > 0
    half = (a.max(axis=(1, 2)) + a.min(axis=(1, 2))) / 2
    area = (a >= half[:, None, None]).sum(axis=(1, 2))
    objects = s.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = area / objects
    return np.where(_constant(a) | (objects == 0), np.nan, out)


@dataclass(frozen=True)
class PartRegions:
    """Each image's parts and their Voronoi regions (:func:`part_regions`), computed once per
    image set and reused for every map.

    ``parts[i]`` is a list of ``(part, region)`` boolean ``(H, W)`` pairs (empty without parts)."""

    parts: list[list[tuple[np.ndarray, np.ndarray]]]

    def chance(self) -> np.ndarray:
        """Per image, ``mean_p |p| / |R_p|``: where a maximum drawn uniformly in ``R_p`` lands; (n,)."""
        return np.array([np.mean([p.sum() / r.sum() for p, r in pairs]) if pairs else np.nan
                         for pairs in self.parts])


def part_regions(part_map) -> PartRegions:
    """For each image of ``part_map`` (n, H, W; 0 background, 1..P parts), each present part and the
    pixels nearer to it than to any other part (ties to the lower id)."""
    out = []
    for pm in np.asarray(part_map):
        ids = [int(p) for p in np.unique(pm) if p > 0]
        if not ids:
            out.append([])
            continue
        dist = np.stack([ndimage.distance_transform_edt(pm != p) for p in ids])
        nearest = dist.argmin(axis=0)
        out.append([(pm == p, nearest == j) for j, p in enumerate(ids)])
    return PartRegions(out)


def part_pointing(maps, regions: PartRegions) -> np.ndarray:
    """Per image, the mean over its parts ``p`` of the share of the map's maximal pixels within
    ``R_p`` that lie on ``p``, in [0, 1], shape (n,); NaN for an image without parts."""
    a = _as_maps(maps)
    out = np.full(len(a), np.nan)
    for i, pairs in enumerate(regions.parts):
        hits = []
        for part, region in pairs:
            top = region & (a[i] == a[i][region].max())
            hits.append((top & part).sum() / top.sum())
        if hits:
            out[i] = float(np.mean(hits))
    return out


def sharpness_scores(maps, *, grid: tuple[int, int], masks=None, regions: PartRegions | None = None
                     ) -> dict[str, np.ndarray]:
    """Every score of :data:`SHARPNESS_METRICS` for maps ``(n, H, W)`` and their coarse twins on
    ``grid`` (the study's coarsest); the mask scores are absent without ``masks``, the part scores
    without ``regions``."""
    a = _as_maps(maps)
    twin = coarse_maps(a, grid)
    out = {"fine_energy": fine_energy(a, grid), "fine_energy_coarse": fine_energy(twin, grid)}
    if masks is not None:
        out["mass_in_mask"], out["mass_in_mask_coarse"] = mass_in_mask(a, masks), mass_in_mask(twin, masks)
        out["mass_in_mask_gain"] = out["mass_in_mask"] - out["mass_in_mask_coarse"]
        out["half_max_area"], out["half_max_area_coarse"] = half_max_area(a, masks), half_max_area(twin, masks)
    if regions is not None:
        out["part_pointing"], out["part_pointing_coarse"] = part_pointing(a, regions), part_pointing(twin, regions)
    return {m: out[m] for m in SHARPNESS_METRICS if m in out}


def missing_reasons(maps, *, masks=None, regions: PartRegions | None = None) -> dict[str, list[str | None]]:
    """Why a score of :func:`sharpness_scores` is NaN, per image: a constant map, an empty mask, an
    image without parts (the first that applies), keyed by what each score needs."""
    constant = _constant(_as_maps(maps))
    n = len(constant)
    empty = np.zeros(n, bool) if masks is None else ~(np.asarray(masks) > 0).any(axis=(1, 2))
    no_part = np.zeros(n, bool) if regions is None else np.array([not p for p in regions.parts])

    def first(*conds):
        return [next((why for c, why in conds if c[i]), None) for i in range(n)]

    return {"map": first((constant, CONSTANT)),
            "mask": first((constant, CONSTANT), (empty, EMPTY_MASK)),
            "parts": first((no_part, NO_PART))}
