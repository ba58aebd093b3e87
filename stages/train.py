"""train@{dataset}: train the CNN under explanation once per seed, or take the user's checkpoint."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset):
    """Train the backbone of params.backbone (with the dataset's overrides) on the prepared training
    split once per seed, starting from backbone.checkpoint where one is given (epochs: 0 keeps it
    as it is); write models/{dataset}/seed{s}/backbone.safetensors and backbone.json, and the test
    accuracies to metrics/{dataset}/train.json."""
    import torch

    from kmx_eval.data import ImageDataset, class_names, load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.errors import DataError
    from kmx_eval.models.backbone import (build_backbone, checkpoint_sha256, load_checkpoint,
                                          save_backbone, train_backbone)
    from kmx_eval.seeding import seed_everything

    params.dataset(dataset)  # a name not in params.yaml is a one-line error
    cfg = params.backbone_for(dataset)
    device = resolve_device(cfg.device, cfg.threads)
    dd = load_prepared(paths.prepared(dataset))
    names = class_names(dd)
    size = dd["train"][0]["image"].size[0]
    if size != cfg.image_size:
        raise DataError(f"{paths.prepared(dataset)} holds {size} px images but the backbone's "
                        f"image_size is {cfg.image_size}; rerun the prepare stage (dvc repro)")
    train = ImageDataset(dd["train"], augment=cfg.augment, train=True)
    test = ImageDataset(dd["test"], augment=False, train=False)
    checkpoint = None
    if cfg.checkpoint is not None:
        where = ("datasets.{}.backbone.checkpoint".format(dataset)
                 if params.dataset(dataset).backbone.checkpoint is not None else "backbone.checkpoint")
        # Checked (and hashed) before anything is written: a bad file stops here, outputs intact.
        start = load_checkpoint(cfg.checkpoint, cfg.architecture, len(names), where=where)
        checkpoint = {"file": Path(cfg.checkpoint).name, "sha256": checkpoint_sha256(cfg.checkpoint)}
    log.info("%s: %s (%s) on %d training images of %d classes, %d px, %d epochs, %s",
             dataset, cfg.architecture,
             f"checkpoint {cfg.checkpoint}" if checkpoint else f"{cfg.weights} weights", len(train),
             len(names), cfg.image_size, cfg.epochs, device)

    metrics = {}
    # The whole models/{dataset} folder appears at once, so a killed stage leaves no seed half-done.
    with io.atomic_path(paths.backbone_dir(dataset)) as folder:
        folder.mkdir()
        for seed in params.seeds:
            seed_everything(seed)
            if checkpoint is not None:  # each seed fine-tunes its own copy (epochs: 0 keeps it)
                model = copy.deepcopy(start)
            else:
                model = build_backbone(cfg.architecture, len(names), cfg.weights)
            history = train_backbone(model, train, test, cfg, seed, device)
            meta = {
                "architecture": cfg.architecture, "n_classes": len(names), "class_names": names,
                "image_size": cfg.image_size, "weights": cfg.weights, "checkpoint": checkpoint,
                "seed": seed,
                "epochs": cfg.epochs, "test_accuracy": history["test_accuracy"],
                "device": str(device),
                "history": {"loss": history["loss"], "train_accuracy": history["train_accuracy"]},
                "torch": torch.__version__,
            }
            seed_dir = paths.backbone_weights(dataset, seed).parent
            save_backbone(model, folder / seed_dir.relative_to(paths.backbone_dir(dataset)), meta)
            # Wall time goes to the log only: outputs must be byte-identical for the same
            # params and seed, or DVC would see a new backbone and rerun everything downstream.
            metrics[f"seed{seed}"] = {"test_accuracy": history["test_accuracy"]}
            if history["loss"]:  # epochs: 0 trains nothing (e.g. fixed ImageNet features)
                metrics[f"seed{seed}"].update(train_accuracy=history["train_accuracy"][-1],
                                              final_loss=history["loss"][-1])
            log.info("seed %d: test accuracy %.4f after %.0f s", seed, history["test_accuracy"],
                     history["train_seconds"])
    # A DVC metrics file: numbers only.
    io.write_json(paths.train_metrics(dataset), metrics)


if __name__ == "__main__":
    raise SystemExit(main())
