"""Controls on every explained model (docs/METHOD.md, section 6): the floor and the ceiling.

- ``random_grid`` (:class:`~kmx_eval.explain.baselines.RandomGridExplainer`, ``explains = "any"``):
  i.i.d. uniform values per cell of the explained grid (:func:`explained_grid`), upsampled bilinearly
  like the maps: the floor of every map on that grid; ``random`` (i.i.d. per pixel) is the pixel
  floor, for pixel-level maps. Both run on every explained model (each combination's k-means head
  and the CNN), so every number has a chance level measured on the same model.
- ``oracle``: the ground-truth object mask averaged onto the grid the explained map lives on and
  upsampled the same way (bilinear), ``oracle = up(avgpool_{h x w}(S))``. The k-means maps live on
  the grid of ``F_S`` (the shallowest block of the combination), CAM and Grad-CAM on block B4's grid
  (``oracle`` in the CNN's maps file), pixel-level maps such as Integrated Gradients on the pixels
  (``oracle_pixel``: the mask itself). A reference, not the ceiling: a map with all its mass on the
  cell with the largest mask share beats it; the ceiling of each localisation metric on a grid is
  :mod:`kmx_eval.metrics.ceilings` (docs/METHOD.md, section 6). Not a ceiling for faithfulness
  either: the mask is not what the model reads.
- ``explain.target``: the explained class is the model's own prediction (``predicted``, the
  default: the method explains the model's decision) or the ground-truth ``label``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision.models.feature_extraction import create_feature_extractor

from kmx_eval.models.architectures import architecture_of

from .attribution import upsample
from .core import Explainer, eval_mode, explain_subset, model_device, predict

#: Valid values of ``explain.target``.
TARGETS = ("predicted", "label")
#: Names of the control maps that need masks.
ORACLE, ORACLE_PIXEL = "oracle", "oracle_pixel"


def oracle_maps(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``up(avgpool_grid(S))``: masks ``(n, H, W)`` (0/1) averaged onto ``grid`` and upsampled
    bilinearly back to ``(H, W)``, float32. ``grid == (H, W)`` returns the mask itself."""
    m = torch.as_tensor(np.asarray(masks) > 0, dtype=torch.float32)
    if m.dim() != 3:
        raise ValueError(f"masks must be (n, H, W), got {tuple(m.shape)}")
    size = tuple(m.shape[-2:])
    pooled = m if tuple(grid) == size else nnf.adaptive_avg_pool2d(m[:, None], tuple(grid))[:, 0]
    return upsample(pooled, size).numpy().astype(np.float32)


def explained_grid(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """The grid of the maps that explain ``model``: ``F_S``'s for a k-means head module (it has
    ``features``), the CAM layer's for the CNN (its architecture's ``cam_layer``: a ResNet's
    ``layer4``, a VGG's last convolution)."""
    with torch.no_grad(), eval_mode(model):
        if hasattr(model, "features") and hasattr(model, "scores_from_features"):
            return tuple(int(v) for v in model.features(x[:1]).shape[-2:])
        layer = architecture_of(model).cam_layer
        a = create_feature_extractor(model, {layer: "A"})(x[:1])["A"]
        return tuple(int(v) for v in a.shape[-2:])


def explained_classes(model: torch.nn.Module, x, labels: np.ndarray, target: str, batch_size: int = 32) -> np.ndarray:
    """The class each map explains: the model's prediction (``predicted``) or the ``label``."""
    if target not in TARGETS:
        raise ValueError(f"explain.target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target == "label":
        return np.asarray(labels, dtype=np.int64)
    with eval_mode(model):
        return predict(model, x, batch_size)


def explain_with_controls(model: torch.nn.Module, explainers: Mapping[str, Explainer], x, *, labels, masks,
                          indices, target: str, batch_size: int = 32, pixel_oracle: bool = False,
                          progress: bool = True) -> dict[str, np.ndarray]:
    """The arrays of a maps file: :func:`~.core.explain_subset` for the explained classes of
    ``target``, plus ``labels`` (ground truth), ``target`` (the setting, a 0-d string array) and,
    where ``masks`` exist, the ``oracle`` map on the explained model's grid (and ``oracle_pixel``)."""
    targets = explained_classes(model, x, labels, target, batch_size)
    arrays = explain_subset(model, explainers, x, targets=targets, indices=indices, batch_size=batch_size,
                            progress=progress)
    arrays["labels"] = np.asarray(labels, dtype=np.int64)
    arrays["target"] = np.array(target)
    if masks is not None:
        xt = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)
        xt = xt.to(model_device(model))
        arrays[ORACLE] = oracle_maps(masks, explained_grid(model, xt))
        if pixel_oracle:
            arrays[ORACLE_PIXEL] = oracle_maps(masks, tuple(np.asarray(masks).shape[-2:]))
    return arrays
