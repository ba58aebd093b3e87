"""Explanation quality through Quantus 0.6 (docs/METHOD.md, section 4), per sample, with reasons.

- :mod:`.spec`: :class:`QuantusSpec` (category, direction, needs, invariances), the
  :data:`QUANTUS_METRICS` registry, chance levels;
- :mod:`.metrics`: one declaration per metric (registers them);
- :mod:`.settings`: :class:`QuantusSettings` (plain settings from params) and the arithmetic that
  derives Quantus arguments from them and the image size;
- :mod:`.scaling`: per-sample map rescalings and the reasons a map or mask cannot be scored;
- :mod:`.runner`: :func:`run_quantus`, one metric on one explainer's maps.
"""

from . import metrics as _metrics  # noqa: F401  (registers every metric)
from .metrics import ssim_2d
from .runner import (NO_MASKS, SAMPLE_ERRORS, QuantusRun, class_scores, fully_perturbed, rescaled_explain_func,
                     run_quantus)
from .scaling import (SCALING_NOTES, SCALINGS, affine_equivalent, centred_positive, map_problems, mask_problems,
                      minmax, positive_part)
from .settings import (DETERMINISTIC_BASELINES, QuantusSettings, features_in_step, monotonicity_repeats,
                       patch_size, subset_size, top_k)
from .spec import (MAP_AFFINE, QUANTUS_METRICS, Built, Category, Direction, Invariance, QuantusSpec,
                   chance_level, headline_refusal, mask_share, plain)

__all__ = [
    "QUANTUS_METRICS", "QuantusSpec", "Built", "Category", "Direction", "Invariance", "MAP_AFFINE",
    "QuantusSettings", "run_quantus", "QuantusRun", "class_scores", "chance_level", "mask_share", "NO_MASKS",
    "SAMPLE_ERRORS", "SCALINGS", "SCALING_NOTES", "minmax", "positive_part", "map_problems",
    "mask_problems", "rescaled_explain_func", "features_in_step", "top_k", "patch_size", "subset_size",
    "monotonicity_repeats", "DETERMINISTIC_BASELINES", "ssim_2d", "plain", "headline_refusal", "affine_equivalent", "centred_positive", "fully_perturbed",
]
