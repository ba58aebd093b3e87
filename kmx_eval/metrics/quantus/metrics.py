"""One declaration per Quantus metric (docs/METHOD.md, section 4).

Each :func:`~.spec.register` call below is the whole description of one metric: category,
direction, needs, invariances, map scaling, chance level and how Quantus is configured from
:class:`~.settings.QuantusSettings`. Common Quantus arguments (:func:`common`):
``normalise=False, abs=True`` (maps arrive rescaled to [0, 1], :mod:`.scaling`),
``return_aggregate=False``, no warnings, no progress bar. AttributionLocalisation runs without
``weighted``/``max_size`` (Quantus 0.6 slices the batch axis for the image size there).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from kmx_eval.metrics.faithfulness import (FLAT_RESPONSE, REFUSED_SPAN, GridPerturbation, bounded_curves,
                                           symmetric_score)

from .runner import class_scores, fully_perturbed
from .settings import (QuantusSettings, features_in_step, monotonicity_repeats, patch_size, subset_size,
                       top_k)
from .spec import (MAP_AFFINE, Built, Category, Direction, Invariance, QuantusSpec, half, mask_share, plain,
                   register)

LOC, FAITH = Category.LOCALISATION, Category.FAITHFULNESS
HIGHER, LOWER = Direction.HIGHER, Direction.LOWER
#: Localisation and complexity metrics never call the model: its outputs cannot matter.
NO_MODEL = frozenset({Invariance.OUTPUT_AFFINE})


def common(**extra) -> dict[str, Any]:
    """Arguments shared by every Quantus metric here (module docstring)."""
    return dict(abs=True, normalise=False, return_aggregate=False, disable_warnings=True,
                display_progressbar=False, **extra)


def _quantus(name: str, **kwargs):
    # quantus takes seconds to import: the registry (read by the resolve stage) must not need it
    import quantus

    return getattr(quantus, name)(**common(**kwargs))


def _fixed(name: str, **kwargs) -> Callable[..., Built]:
    """Builder of a metric whose Quantus arguments do not depend on the settings."""

    def build(settings: QuantusSettings, image_size: int, n_channels: int = 3, n_classes: int = 2,
              seed: int = 0) -> Built:
        return Built(_quantus(name, **kwargs), {}, plain)

    return build


# ----------------------------------------------------------------------------- localisation
register(QuantusSpec(
    "PointingGame", LOC, HIGHER, needs_masks=True, needs_model=False, needs_explain_func=False,
    invariances=MAP_AFFINE | NO_MODEL, scaling="rank", build=_fixed("PointingGame"), chance=mask_share,
    proportion=True, description="hit if the map's maximum falls inside the object mask"))

register(QuantusSpec(
    "AttributionLocalisation", LOC, HIGHER, needs_masks=True, needs_model=False, needs_explain_func=False,
    invariances=MAP_AFFINE | NO_MODEL, scaling="centred",
    build=_fixed("AttributionLocalisation", weighted=False), chance=mask_share,
    # Quantus 0.6 without ``weighted``: inside / (total + 1e-9), RelevanceMassAccuracy's formula
    alias_of="RelevanceMassAccuracy",
    description="share of the map's mass above its mean that lies inside the mask"))

register(QuantusSpec(
    "RelevanceMassAccuracy", LOC, HIGHER, needs_masks=True, needs_model=False, needs_explain_func=False,
    invariances=MAP_AFFINE | NO_MODEL, scaling="centred", build=_fixed("RelevanceMassAccuracy"),
    chance=mask_share,
    description="share of the map's mass above its mean that lies inside the mask"))

register(QuantusSpec(
    "RelevanceRankAccuracy", LOC, HIGHER, needs_masks=True, needs_model=False, needs_explain_func=False,
    invariances=MAP_AFFINE | NO_MODEL, scaling="rank", build=_fixed("RelevanceRankAccuracy"),
    chance=mask_share, description="share of the |S| highest-ranked pixels that lie inside the mask"))


def _build_top_k(settings: QuantusSettings, image_size: int, n_channels: int = 3, n_classes: int = 2,
                 seed: int = 0) -> Built:
    k = top_k(image_size, image_size, settings.top_k_fraction)
    return Built(_quantus("TopKIntersection", concept_influence=False, k=k), {"k": k}, plain)


register(QuantusSpec(
    "TopKIntersection", LOC, HIGHER, needs_masks=True, needs_model=False, needs_explain_func=False,
    invariances=MAP_AFFINE | NO_MODEL, scaling="rank", build=_build_top_k, chance=mask_share,
    description="share of the k highest-ranked pixels that lie inside the mask"))

register(QuantusSpec(
    "AUC", LOC, HIGHER, needs_masks=True, needs_model=False, needs_explain_func=False,
    invariances=MAP_AFFINE | NO_MODEL, scaling="rank", build=_fixed("AUC"), chance=half,
    chance_without_masks=0.5, description="ROC AUC of the map as a pixel classifier of the mask"))


# ----------------------------------------------------------------------------- faithfulness
#: Why a PixelFlipping or RegionPerturbation sample is NaN: its span is refused (bounded_curves).
NOT_DECREASING = REFUSED_SPAN


def normalised_curves(curves: np.ndarray, *, tolerance: float) -> np.ndarray:
    """Per-sample ``clip((c_k - c_L) / (c_0 - c_L), 0, 1)``, NaN rows where the span is refused
    (:func:`kmx_eval.metrics.faithfulness.bounded_curves`: below ``tolerance`` times the curve's range).

    Bounded in [0, 1] (clipped to the end points); invariant to ``c -> alpha c + beta`` (``alpha > 0``).
    """
    return bounded_curves(curves, tolerance=tolerance)[0]


def _build_faithfulness_correlation(settings: QuantusSettings, image_size: int, n_channels: int = 3,
                                    n_classes: int = 2, seed: int = 0) -> Built:
    size = subset_size(image_size, image_size, settings.subset_fraction)
    metric = _quantus("FaithfulnessCorrelation", nr_runs=settings.nr_runs, subset_size=size,
                      perturb_baseline=settings.perturb_baseline)
    return Built(metric, {"nr_runs": settings.nr_runs, "subset_size": size,
                          "perturb_baseline": settings.perturb_baseline}, plain)


register(QuantusSpec(
    # Pearson correlation of relevance sums and score drops: invariant to alpha f + beta.
    "FaithfulnessCorrelation", FAITH, HIGHER, needs_masks=False, needs_model=True, needs_explain_func=False,
    invariances=MAP_AFFINE | {Invariance.OUTPUT_AFFINE}, scaling="rank",
    build=_build_faithfulness_correlation,
    description="Pearson correlation between the relevance of random pixel subsets "
                "and the drop in class score when they are removed"))


def _build_pixel_flipping(settings: QuantusSettings, image_size: int, n_channels: int = 3, n_classes: int = 2,
                          seed: int = 0) -> Built:
    fis, steps = features_in_step(n_channels, image_size, image_size, settings.n_steps)
    n_features = n_channels * image_size * image_size
    fractions = np.concatenate([[0.0], np.minimum(np.arange(1, steps + 1) * fis, n_features) / n_features])
    metric = _quantus("PixelFlipping", features_in_step=fis, perturb_baseline=settings.perturb_baseline,
                      return_auc_per_sample=False)

    def finish(raw, reference):
        # c_k = f(x with the k*fis most relevant values replaced)_y, k = 0 (unperturbed) .. L (all
        # replaced); the curve is (c_k - c_L) / (c_0 - c_L), so alpha f + beta gives the same curve.
        # Clipped to [0, 1], so the area lies in [0, 1]; a span below span_tolerance times the
        # curve's range is refused (docs/METHOD.md, section 4).
        raw_curves = np.concatenate([np.asarray(reference["original"], dtype=np.float64)[:, None],
                                     np.asarray(raw, dtype=np.float64)], axis=1)
        curves = normalised_curves(raw_curves, tolerance=settings.span_tolerance)
        return np.trapezoid(curves, fractions, axis=1), curves

    return Built(metric, {"features_in_step": fis, "n_steps": steps, "perturb_baseline": settings.perturb_baseline,
                          "curve": "clip((f(x_k) - f(x_L)) / (f(x_0) - f(x_L)), 0, 1) per sample",
                          "span_tolerance": settings.span_tolerance}, finish, fractions,
                 nan_reason=NOT_DECREASING)


register(QuantusSpec(
    "PixelFlipping", FAITH, LOWER, needs_masks=False, needs_model=True, needs_explain_func=False,
    invariances=MAP_AFFINE | {Invariance.OUTPUT_AFFINE}, scaling="rank", build=_build_pixel_flipping,
    needs_reference=True,
    description="area under the class score, rescaled per image from 1 (unperturbed) to 0 (all values "
                "removed) and clipped to [0, 1], as the most relevant values are removed first (lower is better)"))


def _build_region_perturbation(settings: QuantusSettings, image_size: int, n_channels: int = 3,
                               n_classes: int = 2, seed: int = 0) -> Built:
    size = patch_size(image_size, settings.patch_fraction)
    n_patches = math.ceil(image_size / size) ** 2
    regions = min(settings.regions_evaluation, n_patches)
    metric = _quantus("RegionPerturbation", patch_size=size, regions_evaluation=regions, order="morf",
                      perturb_baseline=settings.perturb_baseline)

    def finish(raw, reference):
        # Quantus returns f(x)_y - f(x^k)_y for k = 1..L; AOPC (Samek et al. 2017) averages over
        # k = 0..L, where the k = 0 term is 0. Each drop is divided by f(x)_y - f(x^base)_y, the
        # drop when every value is replaced, and clipped to [0, 1] (bounded_curves: the curve
        # c_0, c_1..c_L, c_base between its end points), so alpha f + beta gives the same number
        # and AOPC lies in [0, L / (L + 1)].
        original = np.asarray(reference["original"], np.float64)[:, None]
        raw_curves = np.concatenate([original, original - np.asarray(raw, dtype=np.float64),
                                     np.asarray(reference["perturbed"], np.float64)[:, None]], axis=1)
        share_kept = normalised_curves(raw_curves, tolerance=settings.span_tolerance)[:, 1:-1]
        return (1.0 - share_kept).sum(axis=1) / (share_kept.shape[1] + 1), None

    return Built(metric, {"patch_size": size, "regions_evaluation": regions, "order": "morf",
                          "perturb_baseline": settings.perturb_baseline, "span_tolerance": settings.span_tolerance,
                          "drops": "divided by f(x_0) - f(x fully perturbed) per sample, clipped to [0, 1]"},
                 finish,
                 nan_reason=NOT_DECREASING)


register(QuantusSpec(
    "RegionPerturbation", FAITH, HIGHER, needs_masks=False, needs_model=True, needs_explain_func=False,
    invariances=MAP_AFFINE | {Invariance.OUTPUT_AFFINE}, scaling="rank", build=_build_region_perturbation,
    needs_reference="both",
    description="AOPC: mean drop in class score as the most relevant patches are removed, as a share "
                "of the drop when the whole image is removed, clipped to [0, 1]"))


def _grid_finish(raw, reference) -> tuple[np.ndarray, None]:
    """``S = mean_k (l_k - m_k) / R`` per sample (:func:`~kmx_eval.metrics.faithfulness.symmetric_score`)."""
    return symmetric_score(reference["original"], raw["morf"], raw["lerf"])[0], None


def _grid_built(metric: GridPerturbation, image_size: int, **record) -> Built:
    """The :class:`Built` of a grid score: its grid, the cells removed at each point and the model calls
    per image, then ``record`` (the metric's own settings), finished by :func:`_grid_finish`."""
    return Built(metric, {"grid": list(metric.grid), "cells_removed": metric.counts(image_size, image_size).tolist(),
                          "model_calls_per_image": metric.model_calls(image_size, image_size), **record},
                 _grid_finish, nan_reason=FLAT_RESPONSE)


def _build_symmetric(settings: QuantusSettings, image_size: int, n_channels: int = 3, n_classes: int = 2,
                     seed: int = 0, grid: tuple[int, int] = (1, 1)) -> Built:
    metric = GridPerturbation(grid=tuple(grid), class_scores=class_scores, fully_perturbed=fully_perturbed,
                              n_steps=settings.n_steps, perturb_baseline=settings.perturb_baseline)
    return _grid_built(metric, image_size, perturb_baseline=settings.perturb_baseline,
                       score="mean_k (LeRF_k - MoRF_k) / range of the class scores, in [-1, 1]")


register(QuantusSpec(
    # Differences of class scores over their own range: invariant to alpha f + beta; only the order
    # of the cells' mean relevance matters: invariant to a per-image alpha a + c.
    "SymmetricMoRFLeRF", FAITH, HIGHER, needs_masks=False, needs_model=True, needs_explain_func=False,
    invariances=MAP_AFFINE | {Invariance.OUTPUT_AFFINE}, scaling="rank", build=_build_symmetric,
    needs_reference=True, needs_grid=True, chance_without_masks=0.0,
    description="cells of the map's own grid removed least- minus most-relevant first: mean gap between "
                "the two class-score curves over their range, in [-1, 1] (0 = a random order)"))


def _build_road(settings: QuantusSettings, image_size: int, n_channels: int = 3, n_classes: int = 2,
                seed: int = 0, grid: tuple[int, int] = (1, 1)) -> Built:
    metric = GridPerturbation(grid=tuple(grid), class_scores=class_scores, fully_perturbed=fully_perturbed,
                              percentages=tuple(settings.road_percentages), imputation="noisy_linear",
                              noise=settings.road_noise)
    return _grid_built(metric, image_size, percentages=list(settings.road_percentages), noise=settings.road_noise,
                       imputation="noisy linear (Quantus noisy_linear_imputation's system, all channels)",
                       score="mean_p (LeRF_p - MoRF_p) / range of the class scores, in [-1, 1]")


register(QuantusSpec(
    # ROAD's removal with the symmetric score of SymmetricMoRFLeRF: the same invariances.
    "ROAD", FAITH, HIGHER, needs_masks=False, needs_model=True, needs_explain_func=False,
    invariances=MAP_AFFINE | {Invariance.OUTPUT_AFFINE}, scaling="rank", build=_build_road,
    needs_reference=True, needs_grid=True, chance_without_masks=0.0,
    description="ROAD (remove and debias): cells of the map's own grid filled by noisy linear imputation, "
                "least- minus most-relevant first at a few percentages, over the scores' range, in [-1, 1]"))


def _build_monotonicity(settings: QuantusSettings, image_size: int, n_channels: int = 3, n_classes: int = 2,
                        seed: int = 0) -> Built:
    fis, steps = features_in_step(n_channels, image_size, image_size, settings.n_steps)
    repeats = monotonicity_repeats(settings.perturb_baseline, settings.nr_samples)
    metric = _quantus("MonotonicityCorrelation", features_in_step=fis, nr_samples=repeats,
                      perturb_baseline=settings.perturb_baseline)
    return Built(metric, {"features_in_step": fis, "n_steps": steps, "nr_samples": repeats,
                          "perturb_baseline": settings.perturb_baseline}, plain)


register(QuantusSpec(
    # Spearman correlation: invariant to any increasing change of f, affine ones included.
    "MonotonicityCorrelation", FAITH, HIGHER, needs_masks=False, needs_model=True, needs_explain_func=False,
    invariances=MAP_AFFINE | {Invariance.OUTPUT_AFFINE}, scaling="rank", build=_build_monotonicity,
    description="Spearman correlation between the relevance of feature groups and the "
                "change in class score when they are perturbed"))


# ----------------------------------------------------------------------------- complexity, randomisation
register(QuantusSpec(
    "Sparseness", Category.COMPLEXITY, HIGHER, needs_masks=False, needs_model=False, needs_explain_func=False,
    invariances=MAP_AFFINE | NO_MODEL, scaling="centred", build=_fixed("Sparseness"),
    description="Gini index of the map's part above its mean (1 = all relevance on one pixel)"))


def ssim_2d(height: int, width: int) -> Callable[..., list[float]]:
    """SSIM between maps reshaped to (H, W), for RandomLogit.

    Quantus 0.6 compares flattened vectors, i.e. a 1-D SSIM along the raster order; the 2-D
    structure is what SSIM is meant to compare. ``data_range`` spans both maps.
    """
    # skimage: only RandomLogit's similarity needs it
    from skimage.metrics import structural_similarity

    def similarity(a, b, batched: bool = True, **kwargs) -> list[float]:
        pairs = zip(a, b) if batched else [(a, b)]
        out = []
        for aa, bb in pairs:
            A = np.asarray(aa, dtype=np.float64).reshape(height, width)
            B = np.asarray(bb, dtype=np.float64).reshape(height, width)
            span = float(max(A.max(), B.max()) - min(A.min(), B.min())) or 1.0
            out.append(float(structural_similarity(A, B, data_range=span)))
        return out if batched else out[0]

    return similarity


def _build_random_logit(settings: QuantusSettings, image_size: int, n_channels: int = 3, n_classes: int = 2,
                        seed: int = 0) -> Built:
    metric = _quantus("RandomLogit", num_classes=int(n_classes), seed=int(seed),
                      similarity_func=ssim_2d(image_size, image_size))
    return Built(metric, {"num_classes": int(n_classes), "similarity": "ssim (2-D)"}, plain)


register(QuantusSpec(
    "RandomLogit", Category.RANDOMISATION, LOWER, needs_masks=False, needs_model=True, needs_explain_func=True,
    invariances=MAP_AFFINE, scaling="rank", build=_build_random_logit, subset=True, magnitude=True,
    description="|SSIM| between the map of the explained class and that of a random other "
                "class (0 = unrelated; lower = the explanation depends on the class)"))


# ----------------------------------------------------------------------------- sanity and stability
def _build_mprt(settings: QuantusSettings, image_size: int, n_channels: int = 3, n_classes: int = 2,
                seed: int = 0) -> Built:
    # sanity loads torch, scipy and the model zoo: only when MPRT is built
    from .sanity import BlockMPRT

    return Built(BlockMPRT(seed=seed), {"randomised": "the architecture's blocks, deepest first (cumulative)",
                                        "similarity": "Spearman, mean over the cascade"}, plain)


register(QuantusSpec(
    "MPRT", Category.RANDOMISATION, LOWER, needs_masks=False, needs_model=True, needs_explain_func=True,
    invariances=MAP_AFFINE, scaling="rank", build=_build_mprt, chance_without_masks=0.0, subset=True,
    magnitude=True,
    description="|Spearman correlation| between the map and the map after the backbone's blocks are "
                "re-initialised from B4 down (mean over the cascade; 0 = unrelated, lower is better)"))


def _build_max_sensitivity(settings: QuantusSettings, image_size: int, n_channels: int = 3, n_classes: int = 2,
                           seed: int = 0) -> Built:
    metric = _quantus("MaxSensitivity", nr_samples=settings.stability_samples, lower_bound=0.2,
                      return_nan_when_prediction_changes=False)
    return Built(metric, {"nr_samples": settings.stability_samples, "lower_bound": 0.2}, plain)


register(QuantusSpec(
    "MaxSensitivity", Category.ROBUSTNESS, LOWER, needs_masks=False, needs_model=True, needs_explain_func=True,
    invariances=MAP_AFFINE, scaling="rank", build=_build_max_sensitivity, subset=True,
    description="largest relative change of the (min-max rescaled) map under small uniform input "
                "perturbations (lower is better)"))
