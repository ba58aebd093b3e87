"""explain_cnn@{dataset}: post-hoc baseline maps (CAM, Grad-CAM, IG, ..., random) of the original CNN."""

from __future__ import annotations

import logging

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset):
    """Compute the CNN explainers of params.explain.explainers (cam, gradcam, integrated_gradients,
    saliency, random) for every seed on the fixed evaluation subset of the test split; write
    maps/{dataset}/cnn/seed{s}.npz."""
    from kmx_eval.data import load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.explain import applicable_explainers, build_explainer, explainer_names
    from kmx_eval.explain.controls import explain_with_controls
    from kmx_eval.pipeline.explain import evaluation_images
    from kmx_eval.models.architectures import get_architecture
    from kmx_eval.models.backbone import load_backbone
    from kmx_eval.seeding import seed_everything

    ds_cfg = params.dataset(dataset)
    cfg = params.explain
    backbone_cfg = params.backbone_for(dataset)
    arch = get_architecture(backbone_cfg.architecture)
    names, skipped = applicable_explainers(explainer_names(cfg.explainers, "cnn"), arch)
    for name, why in skipped.items():  # the evaluate stage reports the reason in place of scores
        log.info("%s: %s skipped (%s)", dataset, name, why)
    device = resolve_device(backbone_cfg.device, backbone_cfg.threads)
    # Same images as every combination (the dataset's seed).
    indices, x, labels, masks = evaluation_images(load_prepared(paths.prepared(dataset))["test"], cfg.n_images,
                                                  ds_cfg.seed)
    log.info("%s CNN: %d images, explainers %s", dataset, len(indices), names)

    with io.atomic_path(paths.maps(dataset, paths.BASELINES)) as folder:
        folder.mkdir()
        for seed in params.seeds:
            seed_everything(seed)
            backbone, _ = load_backbone(paths.backbone_weights(dataset, seed).parent, device)
            explainers = {name: build_explainer(name, cfg, seed) for name in names}
            # CAM and Grad-CAM live on B4's grid (oracle), pixel-level maps on the pixels (oracle_pixel)
            arrays = explain_with_controls(backbone, explainers, x, labels=labels, masks=masks, indices=indices,
                                           target=cfg.target, batch_size=cfg.batch_size, pixel_oracle=True)
            io.save_npz(folder / paths.maps_file(dataset, paths.BASELINES, seed).name, arrays)
            log.info("seed %d: CNN accuracy %.3f on the evaluation subset", seed,
                     float((arrays["predictions"] == labels).mean()))


if __name__ == "__main__":
    raise SystemExit(main())
