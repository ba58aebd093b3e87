"""What a Quantus metric is, declared once per metric (docs/METHOD.md, section 4).

A :class:`QuantusSpec` names the metric's :class:`Category`, its :class:`Direction`, what it
needs (object masks, the explained model, an explanation function) and the
:class:`Invariance` set it has, so that the report can decide from the declaration alone which
numbers may be compared across models, bolded or used in a headline. The spec also carries how
the suite configures the Quantus class (``build``) and its chance level. :data:`QUANTUS_METRICS`
maps the params name (``evaluate.quantus``) to the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable

import numpy as np

from kmx_eval.registry import Registry


class Category(StrEnum):
    """Evaluation category (the ``category`` column of ``metrics.csv``)."""

    LOCALISATION = "localisation"
    FAITHFULNESS = "faithfulness"
    COMPLEXITY = "complexity"
    RANDOMISATION = "randomisation"
    ROBUSTNESS = "robustness"


class Direction(StrEnum):
    """Which way is better."""

    HIGHER = "higher"
    LOWER = "lower"


class Invariance(StrEnum):
    """Changes of the inputs of a metric that provably leave its per-sample score unchanged
    (docs/METHOD.md, section 6).

    - ``MAP_SHIFT``: ``a -> a + c`` with a per-image constant ``c`` (``margin`` versus
      ``margin_centred``);
    - ``MAP_SCALE``: ``a -> alpha a`` with a per-image ``alpha > 0``;
    - ``OUTPUT_AFFINE``: ``f -> alpha f + beta`` for the explained model's class scores, ``alpha > 0``
      (a k-means head's squared distances versus a CNN's logits). Holds with ``softmax: false``.
    """

    MAP_SHIFT = "map_shift"
    MAP_SCALE = "map_scale"
    OUTPUT_AFFINE = "output_affine"


MAP_AFFINE = frozenset({Invariance.MAP_SHIFT, Invariance.MAP_SCALE})
ALL_INVARIANCES = frozenset(Invariance)


@dataclass
class Built:
    """A configured Quantus metric and how to turn its raw output into one score per sample.

    ``finish(raw, reference)`` gets the raw Quantus output for m samples and the unperturbed and
    fully perturbed class scores (``reference``: dict with ``original`` and ``perturbed``, (m,)
    each, or None when the spec does not ask for them) and returns ``(scores (m,), curves
    (m, L+1) or None)``.
    """

    metric: Any
    settings: dict[str, Any]
    finish: Callable[[Any, Any], tuple[np.ndarray, np.ndarray | None]]
    fractions: np.ndarray | None = None  # x-axis of the curves, when the metric has curves
    nan_reason: str | None = None  # why ``finish`` gave NaN for a sample, when it can


def plain(raw, reference) -> tuple[np.ndarray, None]:
    """Quantus's per-sample output as float64 scores, no curves."""
    return np.asarray(raw, dtype=np.float64).reshape(-1), None


@dataclass(frozen=True)
class QuantusSpec:
    """What a Quantus metric measures and how the suite configures it.

    Attributes
    ----------
    name : str
        The params name (and Quantus class name).
    category : Category
    direction : Direction
    needs_masks : bool
        Scores against ground-truth object masks (``s_batch``).
    needs_model : bool
        Calls the explained model (faithfulness); the localisation and complexity metrics do not.
    needs_explain_func : bool
        Re-explains inputs (RandomLogit, robustness): needs the explainer as an ``explain_func``.
    invariances : frozenset of Invariance
        What provably does not change the score (:class:`Invariance`); property-tested.
    scaling : {"rank", "centred"}
        How each map is rescaled before the metric (:mod:`.scaling`).
    build : callable
        ``build(settings: QuantusSettings, image_size, n_channels, n_classes, seed) -> Built``.
    chance : callable or None
        ``chance(masks (n, H, W)) -> (n,)``: the expected score of a uniform random map per sample.
    chance_without_masks : float or None
        The chance level where it does not depend on the mask (0.5 for AUC).
    needs_reference : bool or "both"
        ``finish`` needs the unperturbed class scores (True), and also those of the fully
        perturbed input ("both").
    needs_grid : bool
        Perturbs the cells of the grid the map lives on (:mod:`kmx_eval.metrics.faithfulness`):
        ``build`` also takes ``grid=(gh, gw)``.
    subset : bool
        Costly re-explanations: scored on the first ``QuantusSettings.sanity_images`` images only.
    magnitude : bool
        The metric is a similarity whose sign carries no merit (MPRT's Spearman correlation,
        RandomLogit's SSIM): 0 means "unrelated", and an anti-correlated map depends on the model or
        class no less than an unrelated one. The per-sample score is then ``|similarity|`` (the run
        takes the absolute value of what ``finish`` returns), so with ``direction`` LOWER a map
        cannot win by anti-correlating; its floor is 0 (docs/METHOD.md, section 6, "Sanity and
        stability").
    alias_of : str or None
        The metric computes the same formula as metric ``alias_of`` (as configured here), so a
        ranking counts the two once: it keeps ``alias_of`` and drops this one where both are scored
        (docs/METHOD.md, section 6, "A ranking of distinct maps and metrics").
    proportion : bool
        Each per-sample score is a 0/1 outcome (PointingGame's hit), so the mean is a proportion
        and gets a Wilson interval instead of a percentile bootstrap, which collapses to [1, 1]
        when every sample scores 1 (docs/METHOD.md, section 6, "Intervals";
        :func:`kmx_eval.metrics.evaluation.is_proportion`).
    description : str
        One sentence for the report.
    """

    name: str
    category: Category
    direction: Direction
    needs_masks: bool
    needs_model: bool
    needs_explain_func: bool
    invariances: frozenset
    scaling: str
    build: Callable[..., Built]
    chance: Callable[[np.ndarray], np.ndarray] | None = None
    chance_without_masks: float | None = None
    needs_reference: bool | str = False
    subset: bool = False
    needs_grid: bool = False
    magnitude: bool = False
    alias_of: str | None = None
    proportion: bool = False
    description: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.direction is Direction.HIGHER

    def invariances_with(self, softmax: bool) -> frozenset:
        """The invariances that hold for a run with ``softmax``: a softmax over the class scores
        is not invariant to ``alpha f + beta``, so ``OUTPUT_AFFINE`` is lost for metrics that call
        the model."""
        if softmax and self.needs_model:
            return frozenset(self.invariances) - {Invariance.OUTPUT_AFFINE}
        return frozenset(self.invariances)

    def refusal_as_headline(self) -> str | None:
        """Why this metric cannot be the headline's fidelity measure (:func:`headline_refusal`)."""
        return headline_refusal(self.name)

    def invariant_to(self, *changes: Invariance, softmax: bool = False) -> bool:
        """True when the score is invariant to every change in ``changes``."""
        return set(changes) <= set(self.invariances_with(softmax))


QUANTUS_METRICS: Registry[QuantusSpec] = Registry("Quantus metric")


def register(spec: QuantusSpec) -> QuantusSpec:
    """Add ``spec`` to :data:`QUANTUS_METRICS` under its name."""
    return QUANTUS_METRICS.register(spec.name)(spec)


def mask_share(masks: np.ndarray) -> np.ndarray:
    """Share of the image covered by each mask, ``|S| / (H*W)``, shape (n,)."""
    m = np.asarray(masks).reshape(len(masks), -1) > 0
    return m.mean(axis=1)


def half(masks: np.ndarray) -> np.ndarray:
    """The chance level 0.5 for every sample (AUC)."""
    return np.full(len(masks), 0.5)


def metric_aliases() -> dict[str, str]:
    """``{metric: the metric it is an alias of}`` for every registered spec with ``alias_of``."""
    return {name: QUANTUS_METRICS.get(name).alias_of for name in QUANTUS_METRICS.names()
            if QUANTUS_METRICS.get(name).alias_of}


def chance_level(name: str, masks: np.ndarray | None) -> np.ndarray | None:
    """Per-sample expected score of a uniform random map for metric ``name`` (None if undefined)."""
    spec = QUANTUS_METRICS.get(name)
    if spec.chance is None or masks is None:
        return None
    return spec.chance(masks)


def headline_refusal(name: str) -> str | None:
    """Why metric ``name`` cannot be the headline's fidelity measure, or None when it can.

    The headline and the trade-off figure compare maps of different models, so the measure must be
    a localisation metric whose value a per-image constant or scale of the map cannot move
    (``MAP_SHIFT`` and ``MAP_SCALE``).
    """
    spec = QUANTUS_METRICS.get(name, where="report.fidelity_metric")
    if spec.category is not Category.LOCALISATION:
        return f"{name} is a {spec.category.value} metric, not a localisation measure"
    missing = [i.value for i in (Invariance.MAP_SHIFT, Invariance.MAP_SCALE) if i not in spec.invariances]
    if missing:
        return (f"{name} is not invariant to {' and '.join(missing)} of the map, so a per-image "
                "constant could move it")
    return None
