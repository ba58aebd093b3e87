"""Explanation quality through Quantus 0.6 (METHOD.md section 4), per sample, with reasons.

:data:`QUANTUS_METRICS` maps a params name (``evaluate.quantus``) to a :class:`QuantusSpec`: its
category, direction, whether it needs ground-truth masks or an explanation function, its chance
level, and a builder that configures the Quantus metric from :class:`~kmx_eval.config.EvaluateConfig`
and the image size. :func:`run_quantus` scores one explainer's maps and returns one value per
sample, NaN with a reason where a sample cannot be scored, instead of losing the batch.

Choices that hold for every metric and every explainer
------------------------------------------------------
- Maps are signed (METHOD.md section 3) and their zero can carry meaning (``margin``: the
  decision margin is their mean; ``margin_centred``: the image's average evidence) or not
  (``distance = -||f_ij - p||^2`` is never positive). Each metric sees one of two per-sample
  rescalings, fixed per metric (:data:`SCALINGS`), after which Quantus is told
  ``normalise=False`` and ``abs=True`` (a no-op on the non-negative result):

  * ``rank``: min-max to [0, 1], ``a' = (a - min a) / (max a - min a)``. Strictly increasing, so
    it changes nothing for metrics that only use the order of the values or are invariant to an
    affine rescaling: PointingGame, RelevanceRankAccuracy, TopKIntersection, AUC, PixelFlipping,
    RegionPerturbation (sums over patches of equal size), MonotonicityCorrelation (sums over
    groups of equal size, Spearman), FaithfulnessCorrelation (Pearson of subset sums of equal
    size), RandomLogit (SSIM of the two rescaled maps, whose offsets are arbitrary). It also keeps
    Quantus's "all values negative" assertion from rejecting ``distance`` maps.
  * ``positive``: the positive part, ``a' = max(a, 0) / max a``: relevance is evidence *for* the
    explained class, as in relevance mass accuracy (Arras et al. 2022, positive relevance) and
    attribution localisation (Kohlbrenner et al. 2020, ``positive_attributions``). Used by the
    mass metrics RelevanceMassAccuracy and AttributionLocalisation and by Sparseness, the only
    metrics here that depend on the map's zero; this is where ``margin`` and ``margin_centred``
    (equal up to a constant) differ. A map with no positive value is NaN with the reason "no
    positive relevance".

  Quantus's own defaults (max-abs normalisation of the signed map, ``abs`` varying per metric)
  would make mass ratios ``sum_S a / sum a`` unbounded for ``margin_centred`` (whose sum is 0) and
  would rank locations by magnitude in MonotonicityCorrelation, reading strong evidence against
  the class as relevance.
- ``softmax`` comes from ``evaluate.softmax`` and is passed explicitly to every call (Quantus
  defaults differ per metric).
- ``np.random.seed(seed)`` right before every Quantus call (perturbations draw from the global
  RNG), ``return_aggregate=False``, ``disable_warnings=True``, ``display_progressbar=False``.
- A map that is not finite or is constant (all zero included) is NaN with its reason; localisation
  skips empty masks and masks that cover the whole image (Quantus scores an empty mask as a
  PointingGame hit). If Quantus still raises on the batch, every sample is retried alone.
- AttributionLocalisation runs without ``weighted``/``max_size`` (Quantus 0.6 slices the batch
  axis for the image size there).

Settings derived from params (recorded in the ``settings`` of each result):

- PixelFlipping and MonotonicityCorrelation perturb ``features_in_step`` of the ``C*H*W`` values
  per step. Quantus requires it to divide ``H*W``; among those divisors the one whose step count
  ``C*H*W / features_in_step`` is nearest to ``faithfulness.n_steps`` is used.
- MonotonicityCorrelation repeats each perturbation ``nr_samples`` times; with a deterministic
  baseline (black, white, mean) the repeats are identical, so one is run.
- RegionPerturbation: ``patch_size = round(patch_fraction * H)``, ``regions_evaluation`` patches
  (at most all of them), AOPC from its curves.
- FaithfulnessCorrelation: ``subset_size = max(1, round(subset_fraction * H * W))`` values drawn
  from the ``C*H*W`` input values, ``nr_runs`` runs.
- TopKIntersection: ``k = round(top_k_fraction * H * W)`` pixels.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kmx_eval.errors import KmxError
from kmx_eval.registry import Registry

QUANTUS_METRICS: Registry["QuantusSpec"] = Registry("Quantus metric")

#: Exceptions that Quantus raises for data it cannot score (assertions on maps and masks, NumPy
#: shape errors on degenerate samples) and that an explainer raises for an input it cannot explain
#: (KmxError, e.g. non-finite maps for RandomLogit's other class); anything else propagates.
SAMPLE_ERRORS = (AssertionError, ValueError, FloatingPointError, ZeroDivisionError, IndexError, KmxError)

NO_MASKS = "not applicable: dataset has no masks"
DETERMINISTIC_BASELINES = ("black", "white", "mean")


# ----------------------------------------------------------------------------- settings
def features_in_step(n_channels: int, height: int, width: int, n_steps: int) -> tuple[int, int]:
    """Features per perturbation step for PixelFlipping / MonotonicityCorrelation.

    Quantus asserts ``H*W % features_in_step == 0`` and runs ``ceil(C*H*W / features_in_step)``
    steps. Among the divisors ``d`` of ``H*W`` this returns the one whose step count ``C*H*W/d``
    is nearest to ``n_steps`` (ties: fewer steps, the cheaper).

    Returns
    -------
    (features_in_step, steps) : tuple of int
        e.g. ``(1536, 18)`` for 3 x 96 x 96 and 16 steps.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be at least 1, got {n_steps}")
    hw, chw = height * width, n_channels * height * width
    divisors = [d for d in range(1, hw + 1) if hw % d == 0]
    best = min(divisors, key=lambda d: (abs(chw / d - n_steps), chw / d))
    return best, chw // best


def top_k(height: int, width: int, fraction: float) -> int:
    """TopKIntersection's ``k = round(fraction * H * W)``, kept in ``1 .. H*W - 1`` (Quantus)."""
    return int(min(max(1, round(fraction * height * width)), height * width - 1))


def patch_size(height: int, fraction: float) -> int:
    """RegionPerturbation's square patch side ``round(fraction * H)``, kept in ``1 .. H``."""
    return int(min(max(1, round(fraction * height)), height))


def subset_size(height: int, width: int, fraction: float) -> int:
    """FaithfulnessCorrelation's ``max(1, round(fraction * H * W))``, below ``H*W`` (Quantus)."""
    return int(min(max(1, round(fraction * height * width)), height * width - 1))


# ----------------------------------------------------------------------------- specs
@dataclass
class Built:
    """A configured Quantus metric and how to turn its raw output into one score per sample.

    ``finish(raw, reference)`` gets the raw Quantus output for m samples and the unperturbed
    class scores ``f(x)_y`` (m,) and returns ``(scores (m,), curves (m, L+1) or None)``.
    """

    metric: Any
    settings: dict[str, Any]
    finish: Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray | None]]
    fractions: np.ndarray | None = None  # x-axis of the curves, when the metric has curves


def _plain(raw, reference) -> tuple[np.ndarray, None]:
    return np.asarray(raw, dtype=np.float64).reshape(-1), None


@dataclass(frozen=True)
class QuantusSpec:
    """What a Quantus metric measures and how the suite configures it.

    Attributes
    ----------
    name : str
        The params name (and Quantus class name).
    category : str
        ``localisation`` | ``faithfulness`` | ``complexity`` | ``randomisation``.
    higher_is_better : bool
    needs_masks : bool
        Scores against ground-truth object masks (``s_batch``).
    needs_explain_func : bool
        Re-explains inputs (RandomLogit): needs the explainer as a Quantus ``explain_func``.
    build : callable
        ``build(cfg, image_size, n_channels=3, n_classes=2, seed=0) -> Built``.
    chance : callable or None
        ``chance(masks (n, H, W)) -> (n,)``: the expected score of a uniform random map per
        sample, or None where no such level is defined.
    chance_without_masks : float or None
        The chance level where it does not depend on the mask (0.5 for AUC).
    scaling : {"rank", "positive"}
        How each map is rescaled before the metric (module docstring, :data:`SCALINGS`).
    description : str
        One sentence for the report.
    """

    name: str
    category: str
    higher_is_better: bool
    needs_masks: bool
    needs_explain_func: bool
    build: Callable[..., Built]
    chance: Callable[[np.ndarray], np.ndarray] | None = None
    chance_without_masks: float | None = None
    description: str = ""
    scaling: str = "rank"
    needs_reference: bool = field(default=False)


def mask_share(masks: np.ndarray) -> np.ndarray:
    """Share of the image covered by each mask, ``|S| / (H*W)``, shape (n,)."""
    m = np.asarray(masks).reshape(len(masks), -1) > 0
    return m.mean(axis=1)


def _half(masks: np.ndarray) -> np.ndarray:
    return np.full(len(masks), 0.5)


def _common(**extra) -> dict[str, Any]:
    # normalise=False, abs=True: maps arrive rescaled to [0, 1] (module docstring)
    return dict(abs=True, normalise=False, return_aggregate=False, disable_warnings=True,
                display_progressbar=False, **extra)


def _register(spec: QuantusSpec) -> QuantusSpec:
    return QUANTUS_METRICS.register(spec.name)(spec)


def _loc_builder(cls_name: str, **fixed) -> Callable[..., Built]:
    def build(cfg, image_size: int, n_channels: int = 3, n_classes: int = 2, seed: int = 0) -> Built:
        import quantus

        kwargs = dict(fixed)
        settings: dict[str, Any] = {}
        if cls_name == "TopKIntersection":
            kwargs["k"] = top_k(image_size, image_size, cfg.top_k_fraction)
            settings["k"] = kwargs["k"]
        return Built(getattr(quantus, cls_name)(**_common(**kwargs)), settings, _plain)

    return build


# Metrics that read the map's values as a mass of relevance: positive part (module docstring).
_MASS = {"AttributionLocalisation": "positive", "RelevanceMassAccuracy": "positive"}

for _name, _chance, _fixed, _desc in [
    ("PointingGame", mask_share, {},
     "hit if the map's maximum falls inside the object mask"),
    ("AttributionLocalisation", mask_share, {"weighted": False},
     "share of the map's (positive) mass inside the mask"),
    ("RelevanceMassAccuracy", mask_share, {},
     "share of the map's mass inside the mask"),
    ("RelevanceRankAccuracy", mask_share, {},
     "share of the |S| highest-ranked pixels that lie inside the mask"),
    ("TopKIntersection", mask_share, {"concept_influence": False},
     "share of the k highest-ranked pixels that lie inside the mask"),
    ("AUC", _half, {},
     "ROC AUC of the map as a pixel classifier of the mask"),
]:
    _register(QuantusSpec(_name, "localisation", True, True, False, _loc_builder(_name, **_fixed),
                          chance=_chance, chance_without_masks=0.5 if _name == "AUC" else None,
                          description=_desc, scaling=_MASS.get(_name, "rank")))


def _build_faithfulness_correlation(cfg, image_size, n_channels=3, n_classes=2, seed=0) -> Built:
    import quantus

    f = cfg.faithfulness
    size = subset_size(image_size, image_size, f.subset_fraction)
    metric = quantus.FaithfulnessCorrelation(
        **_common(nr_runs=f.nr_runs, subset_size=size, perturb_baseline=f.perturb_baseline))
    return Built(metric, {"nr_runs": f.nr_runs, "subset_size": size,
                          "perturb_baseline": f.perturb_baseline}, _plain)


def _build_pixel_flipping(cfg, image_size, n_channels=3, n_classes=2, seed=0) -> Built:
    import quantus

    f = cfg.faithfulness
    fis, steps = features_in_step(n_channels, image_size, image_size, f.n_steps)
    n_features = n_channels * image_size * image_size
    fractions = np.concatenate([[0.0], np.minimum(np.arange(1, steps + 1) * fis, n_features) / n_features])
    metric = quantus.PixelFlipping(**_common(features_in_step=fis, perturb_baseline=f.perturb_baseline,
                                             return_auc_per_sample=False))

    def finish(raw, reference):
        # curve_k = f(x with the k*fis most relevant values replaced)_y, k = 0 (unperturbed) .. L
        curves = np.concatenate([np.asarray(reference, dtype=np.float64)[:, None],
                                 np.asarray(raw, dtype=np.float64)], axis=1)
        return np.trapezoid(curves, fractions, axis=1), curves

    return Built(metric, {"features_in_step": fis, "n_steps": steps,
                          "perturb_baseline": f.perturb_baseline}, finish, fractions)


def _build_region_perturbation(cfg, image_size, n_channels=3, n_classes=2, seed=0) -> Built:
    import quantus

    f = cfg.faithfulness
    size = patch_size(image_size, f.patch_fraction)
    n_patches = math.ceil(image_size / size) ** 2
    regions = min(f.regions_evaluation, n_patches)
    metric = quantus.RegionPerturbation(**_common(patch_size=size, regions_evaluation=regions, order="morf",
                                                  perturb_baseline=f.perturb_baseline))

    def finish(raw, reference):
        # Quantus returns f(x)_y - f(x^k)_y for k = 1..L; AOPC (Samek et al. 2017) averages over
        # k = 0..L, where the k = 0 term is 0.
        drops = np.asarray(raw, dtype=np.float64)
        return drops.sum(axis=1) / (drops.shape[1] + 1), None

    return Built(metric, {"patch_size": size, "regions_evaluation": regions, "order": "morf",
                          "perturb_baseline": f.perturb_baseline}, finish)


def _build_monotonicity(cfg, image_size, n_channels=3, n_classes=2, seed=0) -> Built:
    import quantus

    f = cfg.faithfulness
    fis, steps = features_in_step(n_channels, image_size, image_size, f.n_steps)
    repeats = 1 if f.perturb_baseline in DETERMINISTIC_BASELINES else f.nr_samples
    metric = quantus.MonotonicityCorrelation(**_common(features_in_step=fis, nr_samples=repeats,
                                                       perturb_baseline=f.perturb_baseline))
    return Built(metric, {"features_in_step": fis, "n_steps": steps, "nr_samples": repeats,
                          "perturb_baseline": f.perturb_baseline}, _plain)


def _build_sparseness(cfg, image_size, n_channels=3, n_classes=2, seed=0) -> Built:
    import quantus

    return Built(quantus.Sparseness(**_common()), {}, _plain)


def ssim_2d(height: int, width: int) -> Callable[..., list[float]]:
    """SSIM between maps reshaped to (H, W), for RandomLogit.

    Quantus 0.6 compares flattened vectors, i.e. a 1-D SSIM along the raster order; the 2-D
    structure is what SSIM is meant to compare. ``data_range`` spans both maps.
    """
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


def _build_random_logit(cfg, image_size, n_channels=3, n_classes=2, seed=0) -> Built:
    import quantus

    metric = quantus.RandomLogit(**_common(num_classes=int(n_classes), seed=int(seed),
                                           similarity_func=ssim_2d(image_size, image_size)))
    return Built(metric, {"num_classes": int(n_classes), "similarity": "ssim (2-D)"}, _plain)


_register(QuantusSpec("FaithfulnessCorrelation", "faithfulness", True, False, False,
                      _build_faithfulness_correlation,
                      description="Pearson correlation between the relevance of random pixel subsets "
                                  "and the drop in class score when they are removed"))
_register(QuantusSpec("PixelFlipping", "faithfulness", False, False, False, _build_pixel_flipping,
                      needs_reference=True,
                      description="area under the class score as the most relevant values are removed "
                                  "(fraction of values on the x-axis; lower is better)"))
_register(QuantusSpec("RegionPerturbation", "faithfulness", True, False, False, _build_region_perturbation,
                      description="AOPC: mean drop in class score as the most relevant patches are removed"))
_register(QuantusSpec("MonotonicityCorrelation", "faithfulness", True, False, False, _build_monotonicity,
                      description="Spearman correlation between the relevance of feature groups and the "
                                  "change in class score when they are perturbed"))
_register(QuantusSpec("Sparseness", "complexity", True, False, False, _build_sparseness,
                      description="Gini index of the positive part of the map (1 = all relevance on "
                                  "one pixel)", scaling="positive"))
_register(QuantusSpec("RandomLogit", "randomisation", False, False, True, _build_random_logit,
                      description="SSIM between the map of the explained class and that of a random other "
                                  "class (lower = the explanation depends on the class)"))


def chance_level(name: str, masks: np.ndarray | None) -> np.ndarray | None:
    """Per-sample expected score of a uniform random map for metric ``name`` (None if undefined)."""
    spec = QUANTUS_METRICS.get(name)
    if spec.chance is None or masks is None:
        return None
    return spec.chance(masks)


# ----------------------------------------------------------------------------- running
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


def rescaled_explain_func(explain_func: Callable, scaling: str = "rank") -> Callable:
    """Wrap a Quantus ``explain_func`` so that its maps are (n, H, W) and rescaled like the
    stored maps (:data:`SCALINGS`)."""

    def wrapped(model, inputs, targets, **kwargs):
        a = explain_func(model=model, inputs=inputs, targets=targets, **kwargs)
        if hasattr(a, "detach"):  # a torch tensor
            a = a.detach().cpu().numpy()
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 4:  # (n, 1, H, W) or channel-wise maps: sum the channels
            a = a.sum(axis=1)
        return SCALINGS[scaling](a)

    return wrapped


def _reference_scores(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, softmax: bool,
                      device: str, batch_size: int) -> np.ndarray:
    """``f(x)_y`` through Quantus's own model wrapper, so it matches the perturbed scores."""
    from quantus.helpers.utils import get_wrapped_model

    wrapped = get_wrapped_model(model, channel_first=True, softmax=softmax, device=device)
    out = []
    for start in range(0, len(x), batch_size):
        pred = wrapped.predict(x[start:start + batch_size])
        out.append(pred[np.arange(len(pred)), y[start:start + batch_size]])
    return np.concatenate(out).astype(np.float64)


def run_quantus(
    name: str,
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    s: np.ndarray | None,
    cfg,
    seed: int,
    device: str | torch.device = "cpu",
    explain_func: Callable | None = None,
    *,
    n_classes: int | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, list[str | None], dict[str, Any]]:
    """Score one explainer's maps with Quantus metric ``name``, one value per sample.

    Parameters
    ----------
    name : str
        Key of :data:`QUANTUS_METRICS`.
    model : torch.nn.Module
        The model under explanation (k-means head module or CNN); put in eval mode here, already
        on ``device`` (Quantus moves inputs, not the model).
    x : float array (n, 3, H, W)
        Normalised inputs, square.
    y : int array (n,)
        Explained classes.
    a : float array (n, H, W)
        Attribution maps at input resolution (any sign; rescaled here per the spec's ``scaling``).
    s : 0/1 array (n, H, W) or None
        Object masks; None when the dataset has none.
    cfg : EvaluateConfig
        ``softmax``, ``top_k_fraction`` and ``faithfulness`` settings.
    seed : int
        ``np.random.seed(seed)`` runs right before every Quantus call.
    explain_func : callable, optional
        Quantus-style ``explain_func(model, inputs, targets, **kw) -> (n, H, W)`` of the same
        explainer; needed by metrics with ``needs_explain_func``.
    n_classes : int, optional
        Number of classes (RandomLogit); default ``model``'s output width.

    Returns
    -------
    scores : float array (n,)
        NaN where a sample was not scored.
    reasons : list of str or None
        Why each NaN is missing (None for scored samples).
    extra : dict
        ``settings`` (what was run: features_in_step, nr_runs, subset size, k, n images...),
        ``seconds``, ``chance`` (per-sample chance level or None) and, for PixelFlipping,
        ``fractions`` (L+1,) and ``curves`` (n, L+1) (NaN rows for missing samples).
    """
    import torch

    spec = QUANTUS_METRICS.get(name)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    y = np.asarray(y).astype(np.int64).ravel()
    a = np.asarray(a, dtype=np.float32)
    n = len(x)
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"{name}: inputs must be square images (n, C, H, H), got {x.shape}")
    if a.shape != (n, *x.shape[2:]) or y.shape != (n,):
        raise ValueError(f"{name}: maps {a.shape} and targets {y.shape} must be (n, H, W) and (n,) "
                         f"for inputs {x.shape}")
    device = str(device)
    model.eval()
    if n_classes is None:
        with torch.no_grad():
            n_classes = int(model(torch.from_numpy(x[:1]).to(device)).shape[1])
    built = spec.build(cfg, x.shape[2], n_channels=x.shape[1], n_classes=n_classes, seed=seed)
    settings = {**built.settings, "n_images": n, "softmax": bool(cfg.softmax),
                "map_scaling": SCALING_NOTES[spec.scaling]}
    scores = np.full(n, np.nan)
    reasons: list[str | None] = list(map_problems(a, spec.scaling))
    curves = None if built.fractions is None else np.full((n, len(built.fractions)), np.nan)
    extra: dict[str, Any] = {"settings": settings, "chance": None}
    if curves is not None:
        extra["fractions"] = built.fractions

    masks = None
    if spec.needs_masks:
        if s is None:
            extra["seconds"] = 0.0
            return scores, [NO_MASKS] * n, extra
        masks = (np.asarray(s) > 0).astype(np.uint8)
        if masks.shape != a.shape:
            raise ValueError(f"{name}: masks {masks.shape} must match the maps {a.shape}")
        extra["chance"] = spec.chance(masks) if spec.chance else None
        reasons = [r or m for r, m in zip(reasons, mask_problems(masks))]
    if spec.needs_explain_func:
        if explain_func is None:
            extra["seconds"] = 0.0
            return scores, ["no explanation function for this explainer"] * n, extra
        if n_classes < 2:
            extra["seconds"] = 0.0
            return scores, ["needs at least two classes"] * n, extra

    start_time = time.perf_counter()
    valid = np.array([r is None for r in reasons])
    idx = np.flatnonzero(valid)
    a_scaled = SCALINGS[spec.scaling](a)
    efunc = rescaled_explain_func(explain_func, spec.scaling) if spec.needs_explain_func else None

    def call(ix: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        s_batch = None if masks is None else masks[ix][:, None]
        np.random.seed(seed % 2**32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = built.metric(model=model, x_batch=x[ix], y_batch=y[ix],
                               a_batch=a_scaled[ix].copy()[:, None], s_batch=s_batch,
                               channel_first=True, explain_func=efunc, softmax=bool(cfg.softmax),
                               device=device, batch_size=batch_size)
        reference = (_reference_scores(model, x[ix], y[ix], bool(cfg.softmax), device, batch_size)
                     if spec.needs_reference else None)
        return built.finish(raw, reference)

    if idx.size:
        try:
            out, out_curves = call(idx)
            scores[idx] = out
            if curves is not None:
                curves[idx] = out_curves
        except SAMPLE_ERRORS:
            for i in idx:  # one bad sample must not cost the batch: retry each alone
                try:
                    out, out_curves = call(np.array([i]))
                    scores[i] = out[0]
                    if curves is not None:
                        curves[i] = out_curves[0]
                except SAMPLE_ERRORS as exc:
                    msg = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
                    reasons[i] = f"quantus {type(exc).__name__}: {msg}".rstrip(": ")
    for i in idx:
        if reasons[i] is None and not np.isfinite(scores[i]):
            scores[i] = np.nan
            reasons[i] = "undefined for this sample (Quantus returned NaN)"
    extra["seconds"] = time.perf_counter() - start_time
    if curves is not None:
        extra["curves"] = curves
    return scores, reasons, extra
