"""fit@{dataset}-{combination}: k-means head, linear probe and concept model of one block combination."""

from __future__ import annotations

import logging

import numpy as np

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset, combination):
    """For every seed, fit the k-means head (KMEx) and the linear probe on the cached pooled
    embeddings z_S of one block combination, and the concept model on the training images'
    combined maps F_S; write heads/{dataset}/{combination}/seed{s}/ and
    metrics/{dataset}/{combination}/fit.json."""
    import torch

    from kmx_eval.data import load_batch, load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.errors import DataError, ParamsError
    from kmx_eval.explain.concepts import ConceptModel
    from kmx_eval.heads import (
        KMeansHeadModule,
        LinearSEM,
        save_kmeans_head,
        save_linear_sem,
        save_probe,
    )
    from kmx_eval.heads.fitting import fit_heads
    from kmx_eval.models.backbone import load_backbone
    from kmx_eval.models.blocks import BlockExtractor, BlockStats
    from kmx_eval.models.combination import parse_combination
    from kmx_eval.models.embeddings import combination_embeddings
    from kmx_eval.seeding import rng, seed_everything

    params.dataset(dataset)
    comb = parse_combination(combination, where="combination")
    if comb.name not in params.combinations:
        raise ParamsError(f"combination {comb.name!r} is not in params combinations "
                          f"({', '.join(params.combinations)})")
    head_cfg, concept_cfg = params.head, params.explain.concepts
    normalisation, resize = params.features.normalisation, params.features.resize
    device = resolve_device(params.backbone_for(dataset).device)
    train_split = load_prepared(paths.prepared(dataset))["train"]
    # The CNN's own fc maps z_4 without normalisation to its logits: only there are its rows w_c
    # prototypes in the space of z_S.
    cnn_space = comb.blocks == (4,) and normalisation == "none"

    metrics: dict[str, dict[str, float]] = {}
    with io.atomic_path(paths.heads(dataset, comb.name)) as folder:
        folder.mkdir()
        for seed in params.seeds:
            seed_everything(seed)
            out = folder / paths.head_dir(dataset, comb.name, seed).name
            out.mkdir()
            cache = io.load_npz(paths.embeddings_file(dataset, seed))
            z = {s: combination_embeddings(cache, s, comb, normalisation) for s in ("train", "test")}
            backbone, _ = load_backbone(paths.backbone_weights(dataset, seed).parent, device)
            linear = LinearSEM.from_linear(backbone.fc) if cnn_space else None

            fitted = fit_heads(
                z["train"], z["test"], cache["train/labels"], cache["test/labels"],
                cache["train/logits"], cache["test/logits"], labels=head_cfg.labels,
                n_prototypes=head_cfg.n_prototypes, n_init=head_cfg.n_init,
                max_iter=head_cfg.max_iter, probe_C=head_cfg.probe_C,
                probe_max_iter=head_cfg.probe_max_iter, seed=seed, linear=linear,
            )
            meta = {"dataset": dataset, "combination": comb.name, "normalisation": normalisation,
                    "resize": resize, "labels": head_cfg.labels, "seed": seed,
                    "n_classes": int(cache["train/logits"].shape[1]),
                    "n_train": int(len(z["train"])), "dimension": int(z["train"].shape[1])}
            save_kmeans_head(fitted.kmeans, out, meta=meta)
            save_probe(fitted.probe, out, meta=meta)
            if linear is not None:
                # The cache and the backbone must belong together: the fc on the cached z_4 has to
                # reproduce the cached logits, or the linear prototypes describe another model.
                cnn_test = cache["test/logits"].argmax(axis=1)
                same = float(np.mean(linear.predict(z["test"]) == cnn_test))
                if same < 0.99:
                    raise DataError(
                        f"{paths.embeddings_file(dataset, seed)}: the backbone's fc on the cached "
                        f"B4 embeddings reproduces only {same:.1%} of the cached CNN predictions; "
                        f"rerun the embed stage")
                save_linear_sem(linear, out, meta={**meta, "source": "cnn fc"})
            io.save_npz(out / "neighbours.npz", fitted.neighbours)

            # Concept model: MiniBatchKMeans on per-location vectors of F_S of a seeded subset of
            # training images (the same subset for every combination), streamed batch by batch.
            stats = BlockStats.from_dict(cache)
            module = KMeansHeadModule.from_head(
                fitted.kmeans, BlockExtractor(backbone, blocks=comb.blocks, logits=False), comb,
                normalisation, stats, resize).to(device)
            n_images = min(concept_cfg.n_images, len(train_split))
            subset = np.sort(rng(seed, "concepts").choice(len(train_split), n_images, replace=False))
            batch = params.features.batch_size

            def feature_batches():
                for start in range(0, n_images, batch):
                    idx = subset[start:start + batch]
                    x = load_batch(train_split, idx)[0]
                    with torch.no_grad():
                        yield module.features(x.to(device)), fitted.labels[idx]

            concepts = ConceptModel(concept_cfg.n_concepts, concept_cfg.scope, seed,
                                    concept_cfg.batch_size)
            concepts.fit_stream(feature_batches(), concept_cfg.locations_per_image,
                                rng(seed, "concept-locations", comb.name))
            assignments = np.concatenate([concepts.assign(F, y) for F, y in feature_batches()])
            # Each training image belongs to the nearest prototype of its own class (its cluster).
            proto_class, proto_index = fitted.kmeans.nearest_prototype(z["train"][subset],
                                                                       fitted.labels[subset])
            shares = concepts.prototype_concepts(
                assignments, np.stack([proto_class, proto_index], axis=1),
                n_classes=fitted.kmeans.prototypes_.shape[0],
                n_prototypes=fitted.kmeans.prototypes_.shape[1])
            io.save_npz(out / "concepts.npz", {**concepts.to_arrays(), "prototype_concepts": shares,
                                               "images": subset.astype(np.int64)})
            io.write_json(out / "concepts.json", {
                **meta, "n_concepts": concept_cfg.n_concepts, "scope": concept_cfg.scope,
                "n_images": int(n_images), "locations_per_image": concept_cfg.locations_per_image,
                "n_ids": int(concepts.n_ids)})

            metrics[f"seed{seed}"] = fitted.metrics
            m = fitted.metrics
            log.info(
                "seed %d %s: test accuracy k-means %.4f, probe %.4f, CNN %.4f; agreement with the "
                "CNN k-means %.4f, probe %.4f (labels: %s, normalisation: %s)", seed, comb.name,
                m["kmeans_accuracy"], m["probe_accuracy"], m["cnn_accuracy"], m["kmeans_agreement"],
                m["probe_agreement"], head_cfg.labels, normalisation)
    io.write_json(paths.fit_metrics(dataset, comb.name), metrics)


if __name__ == "__main__":
    raise SystemExit(main())
