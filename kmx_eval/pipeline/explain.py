"""The arrays of a maps file (docs/ARCHITECTURE.md, "Maps"): what the explain stages compute.

- :func:`evaluation_images`: the fixed evaluation subset of the test split, loaded once and
  shared by every seed, combination and the CNN (so their scores are paired).
- :func:`kmeans_head_maps`: one seed's maps of a k-means head: its attribution maps with the
  controls (:func:`~kmx_eval.explain.controls.explain_with_controls`) and one concept map per
  concept scope, assigned for the explained class (docs/METHOD.md, section 3).

The CNN's maps are :func:`~kmx_eval.explain.controls.explain_with_controls` with
``pixel_oracle=True``: it has no concepts.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from kmx_eval.data import load_batch
from kmx_eval.explain.concepts import ConceptModel, concept_key, concept_maps, stored_concept_ids
from kmx_eval.explain.controls import explain_with_controls
from kmx_eval.explain.core import Explainer, evaluation_subset

__all__ = ["evaluation_images", "kmeans_head_maps"]


def evaluation_images(test_split, n_images: int, seed: int
                      ) -> tuple[np.ndarray, torch.Tensor, np.ndarray, np.ndarray | None]:
    """The evaluation subset of a prepared test split, ready to explain.

    ``seed`` is the dataset's seed, not the training seed (:func:`~.core.evaluation_subset`):
    every seed, combination and the CNN explain the same images, so their scores are paired.

    Returns
    -------
    indices : (n,) int64, positions in the test split
    x : Tensor (n, 3, H, W), normalised images
    labels : (n,) int64, ground truth
    masks : (n, H, W) uint8 0/1 object masks, or None where the dataset has none
    """
    indices = evaluation_subset(len(test_split), n_images, seed)
    x, labels, masks, _ = load_batch(test_split, indices)
    return indices, x, np.asarray(labels, dtype=np.int64), masks


def kmeans_head_maps(module: torch.nn.Module, explainers: Mapping[str, Explainer],
                     concepts: Mapping[str, ConceptModel], *, x: Any, labels: np.ndarray,
                     masks: np.ndarray | None, indices: np.ndarray, target: str,
                     batch_size: int = 32) -> dict[str, np.ndarray]:
    """The maps file of a k-means head for one seed.

    ``module`` is the head as a :class:`~kmx_eval.heads.module.KMeansHeadModule`, ``explainers``
    its built explainers by name, ``concepts`` its concept model of each scope. The arrays are
    those of :func:`~kmx_eval.explain.controls.explain_with_controls` (attribution maps of the
    classes ``target`` names, controls, indices, targets, predictions, labels) plus
    ``concepts_{scope}`` (n, H, W) int16 (:func:`~.concepts.stored_concept_ids`): each location's
    nearest concept, ``k_ij = argmin_k ||f_ij - q_k||^2``, among those of the explained class for
    the ``class`` scope, so concept and attribution maps explain the same decision.
    """
    arrays = explain_with_controls(module, explainers, x, labels=labels, masks=masks, indices=indices, target=target,
                                   batch_size=batch_size)
    targets = arrays["targets"]
    for scope, model in concepts.items():
        ids = concept_maps(module, model, x, labels=targets, batch_size=batch_size)
        arrays[concept_key(scope)] = stored_concept_ids(ids)
    return arrays
