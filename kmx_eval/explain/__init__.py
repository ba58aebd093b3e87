"""Explanations of the k-means head and of the original CNN (docs/METHOD.md, section 3).

- :mod:`.attribution`: pure tensor functions for the attribution maps (margin, centred margin,
  distance, CAM) and their completeness identities.
- :mod:`.kmeans`: gradient-free explainers of the k-means head (``margin``, ``margin_centred``,
  ``distance``).
- :mod:`.baselines`: post-hoc baselines on the CNN (``cam``, ``gradcam``,
  ``integrated_gradients``, ``saliency``) and the ``random`` control.
- :mod:`.concepts`: concept maps (MiniBatchKMeans on per-location vectors of F_S).
- :mod:`.core`: the :data:`EXPLAINERS` registry, the explainer interface, the Quantus adapter and
  the fixed evaluation subset.
"""

from .core import (
    ANY,
    EXPLAINERS,
    MAP_KEYS,
    KINDS,
    Explainer,
    applicable_explainers,
    build_explainer,
    eval_mode,
    evaluation_subset,
    explain,
    explain_subset,
    explainer_names,
    model_device,
    predict,
    quantus_explain_func,
    quantus_explain_funcs,
    register,
)
from . import kmeans as _kmeans  # noqa: F401  (registers margin, margin_centred, distance)
from . import baselines as _baselines  # noqa: F401  (registers cam, gradcam, ..., random)

__all__ = [
    "ANY",
    "EXPLAINERS",
    "MAP_KEYS",
    "KINDS",
    "Explainer",
    "applicable_explainers",
    "build_explainer",
    "eval_mode",
    "evaluation_subset",
    "explain",
    "explain_subset",
    "explainer_names",
    "model_device",
    "predict",
    "quantus_explain_func",
    "quantus_explain_funcs",
    "register",
]
