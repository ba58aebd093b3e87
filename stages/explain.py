"""explain@{dataset}-{combination}: attribution and concept maps of the k-means head on the evaluation subset."""

from __future__ import annotations

import logging

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset, combination):
    """Compute the k-means explainers of params.explain.explainers and the concept maps of one block
    combination, for every seed, on the fixed evaluation subset of the test split; write
    maps/{dataset}/{combination}/seed{s}.npz."""
    from kmx_eval.data import load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.explain import build_explainer, explainer_names
    from kmx_eval.explain.concepts import load_concepts
    from kmx_eval.pipeline.explain import evaluation_images, kmeans_head_maps
    from kmx_eval.heads import KMeansHeadModule, load_checked_kmeans_head
    from kmx_eval.models.backbone import load_backbone
    from kmx_eval.models.embeddings import load_block_stats
    from kmx_eval.seeding import seed_everything

    ds_cfg, comb, cfg, feat = params.dataset(dataset), params.combination(combination), params.explain, params.features
    names = explainer_names(cfg.explainers, "kmeans")
    backbone_cfg = params.backbone_for(dataset)
    device = resolve_device(backbone_cfg.device, backbone_cfg.threads)
    # The dataset's seed: every seed, combination and the CNN explain the same images (paired scores).
    indices, x, labels, masks = evaluation_images(load_prepared(paths.prepared(dataset))["test"], cfg.n_images,
                                                  ds_cfg.seed)
    log.info("%s %s: %d images, explainers %s + concepts", dataset, comb.name, len(indices), names)

    with io.atomic_path(paths.maps(dataset, comb.name)) as folder:
        folder.mkdir()
        for seed in params.seeds:
            seed_everything(seed)
            head_dir = paths.head_dir(dataset, comb.name, seed)
            head = load_checked_kmeans_head(head_dir, normalisation=feat.normalisation, resize=feat.resize,
                                            block_weighting=comb.weighting)
            backbone, _ = load_backbone(paths.backbone_weights(dataset, seed).parent, device)
            stats = load_block_stats(paths.embeddings_file(dataset, seed))
            module = KMeansHeadModule.from_backbone(head, backbone, comb, feat.normalisation, stats,
                                                    feat.resize).to(device)
            explainers = {name: build_explainer(name, cfg, seed) for name in names}
            concepts = {scope: load_concepts(head_dir, scope) for scope in cfg.concepts.scope}
            arrays = kmeans_head_maps(module, explainers, concepts, x=x, labels=labels, masks=masks,
                                      indices=indices, target=cfg.target, batch_size=cfg.batch_size)
            io.save_npz(folder / paths.maps_file(dataset, comb.name, seed).name, arrays)
            log.info("seed %d: k-means head accuracy %.3f on the evaluation subset", seed,
                     float((arrays["predictions"] == labels).mean()))


if __name__ == "__main__":
    raise SystemExit(main())
