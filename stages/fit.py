"""fit@{dataset}-{combination}: k-means head, linear probe and concept models of one block combination."""

from __future__ import annotations

import logging

import numpy as np

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset, combination):
    """For every seed, fit the k-means head (KMEx) and the linear probe on the cached pooled
    embeddings z_S of one block combination, and one concept model per explain.concepts.scope on
    the training images' combined maps F_S; write heads/{dataset}/{combination}/seed{s}/ and
    metrics/{dataset}/{combination}/fit.json (accuracies, agreement, each block's variance share)."""
    from kmx_eval.data import load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.explain.concepts import concept_subset, fit_concepts, save_concepts, split_features
    from kmx_eval.heads import KMeansHeadModule, save_kmeans_head, save_linear_sem, save_probe
    from kmx_eval.heads.fitting import cnn_linear_head, fit_heads
    from kmx_eval.models.backbone import load_backbone
    from kmx_eval.models.blocks import BlockExtractor, BlockStats
    from kmx_eval.models.embeddings import combination_embeddings
    from kmx_eval.seeding import seed_everything

    params.dataset(dataset)
    comb, head, cc, feat = params.combination(combination), params.head, params.explain.concepts, params.features
    device = resolve_device(params.backbone_for(dataset).device)
    train_split = load_prepared(paths.prepared(dataset))["train"]
    metrics = {}
    with io.atomic_path(paths.heads(dataset, comb.name)) as folder:
        folder.mkdir()
        for seed in params.seeds:
            seed_everything(seed)
            out = folder / paths.head_dir(dataset, comb.name, seed).name
            out.mkdir()
            cache = io.load_npz(paths.embeddings_file(dataset, seed))
            z = {s: combination_embeddings(cache, s, comb, feat.normalisation) for s in ("train", "test")}
            backbone, _ = load_backbone(paths.backbone_weights(dataset, seed).parent, device)
            # Only on z_4 without normalisation are the CNN's fc rows w_c prototypes in z_S's space.
            linear = (cnn_linear_head(backbone.fc, z["test"], cache["test/logits"], str(paths.embeddings_file(
                dataset, seed))) if comb.blocks == (4,) and feat.normalisation == "none" else None)
            fitted = fit_heads(z["train"], z["test"], cache["train/labels"], cache["test/labels"],
                               cache["train/logits"], cache["test/logits"], labels=head.labels,
                               n_prototypes=head.n_prototypes, n_init=head.n_init, max_iter=head.max_iter,
                               probe_C=head.probe_C, probe_max_iter=head.probe_max_iter, seed=seed, linear=linear)
            meta = {"dataset": dataset, "combination": comb.name, "normalisation": feat.normalisation,
                    "resize": feat.resize, "block_weighting": comb.weighting, "labels": head.labels,
                    "seed": seed, "n_classes": int(cache["train/logits"].shape[1]),
                    "n_train": int(len(z["train"])), "dimension": int(z["train"].shape[1])}
            save_kmeans_head(fitted.kmeans, out, meta=meta)
            save_probe(fitted.probe, out, meta=meta)
            if linear is not None:
                save_linear_sem(linear, out, meta={**meta, "source": "cnn fc"})
            io.save_npz(out / "neighbours.npz", fitted.neighbours)

            extractor = BlockExtractor(backbone, blocks=comb.blocks, logits=False)
            module = KMeansHeadModule.from_head(fitted.kmeans, extractor, comb, feat.normalisation,
                                                BlockStats.from_dict(cache), feat.resize).to(device)
            subset = concept_subset(len(train_split), cc.n_images, seed)
            concepts = fit_concepts(
                split_features(module, train_split, device), subset, fitted.labels[subset],
                np.stack(fitted.kmeans.nearest_prototype(z["train"][subset], fitted.labels[subset]), axis=1),
                fitted.kmeans.prototypes_.shape[:2], [(b, extractor.channels[b]) for b in comb.blocks],
                scopes=cc.scope, n_concepts=cc.n_concepts, locations_per_image=cc.locations_per_image,
                batch_size=cc.batch_size, image_batch_size=feat.batch_size, seed=seed, salt=comb.name)
            save_concepts(out, concepts, subset, meta, cc.locations_per_image)
            shares = {f"variance_share_{b}": v for b, v in concepts.variance_shares.items()}
            metrics[f"seed{seed}"] = {**fitted.metrics, **shares}
            log.info("seed %d %s: %s", seed, comb.name, ", ".join(f"{k} {v:.4f}" for k, v in metrics[f"seed{seed}"].items()))
    io.write_json(paths.fit_metrics(dataset, comb.name), metrics)


if __name__ == "__main__":
    raise SystemExit(main())
