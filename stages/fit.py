"""fit@{dataset}-{combination}: k-means head, linear probe and concept models of one block combination."""

from __future__ import annotations

import logging

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset, combination):
    """For every seed, fit the k-means head (KMEx) and the linear probe on the cached pooled
    embeddings z_S of one block combination (on the deepest block alone also KMEx's reference head,
    head.kmex_reference), and one concept model per explain.concepts.scope on
    the training images' combined maps F_S; write heads/{dataset}/{combination}/seed{s}/ and
    metrics/{dataset}/{combination}/fit.json (accuracies, agreement, each block's variance share)."""
    from kmx_eval.data import load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.pipeline.fit import fit_combination, save_fitted_combination
    from kmx_eval.models.backbone import load_backbone
    from kmx_eval.seeding import seed_everything

    params.dataset(dataset)
    comb, head, cc, feat = params.combination(combination), params.head, params.explain.concepts, params.features
    backbone_cfg = params.backbone_for(dataset)
    device = resolve_device(backbone_cfg.device, backbone_cfg.threads)
    train_split = load_prepared(paths.prepared(dataset))["train"]
    metrics = {}
    with io.atomic_path(paths.heads(dataset, comb.name)) as folder:
        folder.mkdir()
        for seed in params.seeds:
            seed_everything(seed)
            backbone, _ = load_backbone(paths.backbone_weights(dataset, seed).parent, device)
            fitted = fit_combination(
                io.load_npz(paths.embeddings_file(dataset, seed)), backbone, train_split, comb,
                normalisation=feat.normalisation, resize=feat.resize, labels=head.labels,
                n_prototypes=head.n_prototypes, n_init=head.n_init, max_iter=head.max_iter,
                probe_C=head.probe_C, probe_max_iter=head.probe_max_iter, scopes=cc.scope,
                n_concepts=cc.n_concepts, concept_images=cc.n_images,
                locations_per_image=cc.locations_per_image, concept_batch_size=cc.batch_size,
                image_batch_size=feat.batch_size, seed=seed, device=device,
                source=str(paths.embeddings_file(dataset, seed)), kmex_reference=head.kmex_reference)
            out = folder / paths.head_dir(dataset, comb.name, seed).name
            out.mkdir()
            save_fitted_combination(out, fitted, {"dataset": dataset, **fitted.meta}, cc.locations_per_image)
            metrics[f"seed{seed}"] = fitted.metrics
            log.info("seed %d %s: %s", seed, comb.name, ", ".join(f"{k} {v:.4f}" for k, v in fitted.metrics.items()))
    io.write_json(paths.fit_metrics(dataset, comb.name), metrics)


if __name__ == "__main__":
    raise SystemExit(main())
