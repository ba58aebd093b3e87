"""train@{dataset}: train the CNN under explanation once per seed, or take the user's checkpoint."""

from __future__ import annotations

import logging

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset):
    """Train the backbone of params.backbone (with the dataset's overrides) on the prepared training
    split once per seed, starting from backbone.checkpoint where one is given (epochs: 0 keeps it
    as it is); write models/{dataset}/seed{s}/backbone.safetensors and backbone.json, and the test
    accuracies to metrics/{dataset}/train.json."""
    from kmx_eval.data import ImageDataset, check_image_size, class_names, load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.models.backbone import save_backbone
    from kmx_eval.pipeline.train import train_seed_backbone, user_checkpoint
    from kmx_eval.seeding import seed_everything

    own = params.dataset(dataset).backbone.checkpoint  # a name not in params.yaml is a one-line error
    cfg = params.backbone_for(dataset)
    device = resolve_device(cfg.device, cfg.threads)
    dd = load_prepared(paths.prepared(dataset))
    names = class_names(dd)
    check_image_size(dd["train"], cfg.image_size, paths.prepared(dataset))
    train = ImageDataset(dd["train"], augment=cfg.augment, train=True)
    test = ImageDataset(dd["test"], augment=False, train=False)
    start, checkpoint = None, None
    if cfg.checkpoint is not None:  # checked (and hashed) before anything is written
        where = f"datasets.{dataset}.backbone.checkpoint" if own is not None else "backbone.checkpoint"
        start, checkpoint = user_checkpoint(cfg.checkpoint, cfg.architecture, len(names), where=where)
    weights = f"checkpoint {cfg.checkpoint}" if checkpoint else f"{cfg.weights} weights"
    log.info("%s: %s (%s) on %d training images of %d classes, %d px, %d epochs, %s", dataset,
             cfg.architecture, weights, len(train), len(names), cfg.image_size, cfg.epochs, device)

    metrics = {}
    # The whole models/{dataset} folder appears at once, so a killed stage leaves no seed half-done.
    with io.atomic_path(paths.backbone_dir(dataset)) as folder:
        folder.mkdir()
        for seed in params.seeds:
            seed_everything(seed)
            trained = train_seed_backbone(cfg, names, train=train, test=test, seed=seed, device=device,
                                          start=start, checkpoint=checkpoint)
            save_backbone(trained.model, folder / paths.backbone_weights(dataset, seed).parent.name, trained.meta)
            metrics[f"seed{seed}"] = trained.metrics
            log.info("seed %d: test accuracy %.4f after %.0f s", seed, trained.metrics["test_accuracy"],
                     trained.seconds)
    # A DVC metrics file: numbers only. Wall time goes to the log only: outputs must be
    # byte-identical for the same params and seed, or DVC would rerun everything downstream.
    io.write_json(paths.train_metrics(dataset), metrics)


if __name__ == "__main__":
    raise SystemExit(main())
