"""Plain settings of the Quantus metrics and the arithmetic that turns them into Quantus arguments.

:class:`QuantusSettings` holds what ``params.evaluate`` says (:meth:`~QuantusSettings.from_config`); the functions
below derive the per-image-size arguments, recorded with every result (``settings.json``):

- PixelFlipping and MonotonicityCorrelation perturb ``features_in_step`` of the ``C*H*W`` values
  per step. Quantus requires it to divide ``H*W``; among those divisors the one whose step count
  ``C*H*W / features_in_step`` is nearest to ``n_steps`` is used (:func:`features_in_step`).
- MonotonicityCorrelation repeats each perturbation ``nr_samples`` times; with a deterministic
  baseline (black, white, mean) the repeats are identical, so one is run.
- RegionPerturbation: ``patch_size = round(patch_fraction * H)``, ``regions_evaluation`` patches
  (at most all of them).
- FaithfulnessCorrelation: ``subset_size = max(1, round(subset_fraction * H * W))`` values drawn
  from the ``C*H*W`` input values, ``nr_runs`` runs.
- TopKIntersection: ``k = round(top_k_fraction * H * W)`` pixels.
- PixelFlipping and RegionPerturbation: a span below ``span_tolerance`` times the curve's range is
  refused (:func:`kmx_eval.metrics.faithfulness.bounded_curves`).
- SymmetricMoRFLeRF: ``n_steps`` steps over the cells of the map's grid; ROAD: ``road_percentages``
  of the cells, imputation noise ``road_noise``; pixel-level maps use a ``pixel_grid`` x
  ``pixel_grid`` patch grid (:mod:`kmx_eval.metrics.faithfulness`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DETERMINISTIC_BASELINES = ("black", "white", "mean")


@dataclass(frozen=True)
class QuantusSettings:
    """Settings every Quantus metric reads (``params.evaluate`` and ``params.evaluate.faithfulness``).

    ``softmax`` is passed explicitly to every call: Quantus's defaults differ per metric.
    """

    softmax: bool = False
    top_k_fraction: float = 0.1
    perturb_baseline: str = "black"
    nr_runs: int = 8
    subset_fraction: float = 0.05
    n_steps: int = 6
    nr_samples: int = 3
    patch_fraction: float = 0.125
    regions_evaluation: int = 8
    sanity_images: int = 8
    stability_samples: int = 2
    span_tolerance: float = 0.1
    road_percentages: tuple[float, ...] = (20.0, 40.0, 60.0, 80.0)
    road_noise: float = 0.01
    pixel_grid: int = 12

    @classmethod
    def from_config(cls, evaluate: Any) -> "QuantusSettings":
        """The settings of ``params.evaluate`` (an ``EvaluateConfig``): its ``softmax`` and
        ``top_k_fraction``, every key of ``faithfulness``, and ``sanity.n_images`` and
        ``sanity.nr_samples`` as ``sanity_images`` and ``stability_samples``."""
        faithfulness = evaluate.faithfulness.model_dump()
        faithfulness["road_percentages"] = tuple(float(p) for p in faithfulness["road_percentages"])
        return cls(softmax=evaluate.softmax, top_k_fraction=evaluate.top_k_fraction,
                   **faithfulness, sanity_images=evaluate.sanity.n_images,
                   stability_samples=evaluate.sanity.nr_samples)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def monotonicity_repeats(perturb_baseline: str, nr_samples: int) -> int:
    """One repeat for a deterministic baseline (the repeats would be identical), else ``nr_samples``."""
    return 1 if perturb_baseline in DETERMINISTIC_BASELINES else nr_samples
