"""One seed's CNN under explanation: trained from scratch or from the user's checkpoint (the ``train``
stage's library part).

- :func:`user_checkpoint`: the user's trained model (``backbone.checkpoint``), checked, and the
  record of the file (name and sha256) that goes into every seed's ``backbone.json``.
- :func:`train_seed_backbone`: the backbone of one seed, trained (:func:`~kmx_eval.models.backbone.train_backbone`),
  with the metadata of ``backbone.json`` and the numbers of ``metrics/{dataset}/train.json``.

The caller seeds torch first (:func:`kmx_eval.seeding.seed_everything`): a backbone built from
scratch draws its initial weights from torch's global generator.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from kmx_eval.models.backbone import build_backbone, checkpoint_sha256, load_checkpoint, train_backbone

__all__ = ["TrainedBackbone", "user_checkpoint", "train_seed_backbone"]


def user_checkpoint(path: str | Path, architecture: str, n_classes: int,
                    where: str = "backbone.checkpoint") -> tuple[nn.Module, dict[str, str]]:
    """The user's checkpoint as a model (:func:`~.backbone.load_checkpoint`) and its record.

    The record ``{"file": name, "sha256": digest}`` identifies the weights every seed starts from
    (``checkpoint`` in ``backbone.json``; the file's name, not its path, so that the same file in
    another folder gives the same bytes). Loading checks the file before anything is written:
    a bad checkpoint stops the stage with its outputs intact. ``where`` is the params key named in
    error messages.
    """
    start = load_checkpoint(path, architecture, n_classes, where=where)
    return start, {"file": Path(path).name, "sha256": checkpoint_sha256(path)}


@dataclass
class TrainedBackbone:
    """What :func:`train_seed_backbone` returns for one seed.

    Attributes
    ----------
    model : nn.Module, the trained backbone
    meta : dict, the contents of ``backbone.json`` (docs/ARCHITECTURE.md, "Backbone")
    metrics : dict of str to float, ``test_accuracy`` and, where an epoch ran,
        ``train_accuracy`` and ``final_loss`` of the last epoch (a DVC metrics entry: numbers only)
    seconds : float, training wall time (for the log only: outputs must not depend on it)
    """

    model: nn.Module
    meta: dict[str, Any]
    metrics: dict[str, float]
    seconds: float


def train_seed_backbone(cfg, class_names: Sequence[str], *, train: Dataset, test: Dataset, seed: int,
                        device: torch.device | str, start: nn.Module | None = None,
                        checkpoint: dict[str, str] | None = None) -> TrainedBackbone:
    """Train the backbone of one seed: ``cfg.architecture`` with ``len(class_names)`` outputs.

    Starts from a copy of ``start`` (the user's checkpoint, :func:`user_checkpoint`; each seed
    fine-tunes its own copy and ``cfg.epochs: 0`` keeps it as it is) or, without one, from
    :func:`~.backbone.build_backbone` with ``cfg.weights``; then minimises the cross-entropy of
    :func:`~kmx_eval.models.backbone.train_backbone` with the seed's shuffling order.

    Parameters
    ----------
    cfg : kmx_eval.config.BackboneConfig
        The dataset's backbone settings (overrides applied).
    class_names : list of str, in label order
    train, test : Dataset
        Items ``(x, label, index)``; ``train`` with the augmentation of ``cfg.augment``.
    seed : int
    device : torch.device or str
    start : nn.Module, optional
    checkpoint : dict, optional
        The record of ``start`` (``{"file", "sha256"}``), written into the metadata.
    """
    if start is not None:
        model = copy.deepcopy(start)
    else:
        model = build_backbone(cfg.architecture, len(class_names), cfg.weights)
    history = train_backbone(model, train, test, cfg=cfg, seed=seed, device=device)
    meta = {
        "architecture": cfg.architecture, "n_classes": len(class_names), "class_names": class_names,
        "image_size": cfg.image_size, "weights": cfg.weights, "checkpoint": checkpoint,
        "seed": seed,
        "epochs": cfg.epochs, "test_accuracy": history["test_accuracy"],
        "device": str(device),
        "history": {"loss": history["loss"], "train_accuracy": history["train_accuracy"]},
        "torch": torch.__version__,
    }
    metrics = {"test_accuracy": history["test_accuracy"]}
    if history["loss"]:  # epochs: 0 trains nothing (e.g. fixed ImageNet features)
        metrics.update(train_accuracy=history["train_accuracy"][-1], final_loss=history["loss"][-1])
    return TrainedBackbone(model, meta, metrics, history["train_seconds"])
