"""explain@{dataset}-{combination}: attribution and concept maps of the k-means head on the evaluation subset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kmx_eval import io, paths
from kmx_eval.cli import stage
from kmx_eval.errors import DataError, KmxError

log = logging.getLogger("kmx_eval")

#: Concept ids are stored as int16 in the maps file (docs/ARCHITECTURE.md, "Maps").
MAX_CONCEPT_ID = np.iinfo(np.int16).max


def _block_stats(path: Path):
    """Only the ``stats/B{b}/...`` arrays of the embedding cache (the rest is never read here)."""
    from kmx_eval.models.blocks import BlockStats

    if not path.exists():
        raise KmxError(f"{path} does not exist; run the embed stage first (dvc repro)")
    with np.load(path, allow_pickle=False) as cache:
        return BlockStats.from_dict({k: cache[k] for k in cache.files if k.startswith("stats/")})


@stage
def main(params, dataset, combination):
    """Compute the k-means explainers of params.explain.explainers and the concept maps of one block
    combination, for every seed, on the fixed evaluation subset of the test split; write
    maps/{dataset}/{combination}/seed{s}.npz."""
    from kmx_eval.data import load_batch, load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.explain import build_explainer, evaluation_subset, explainer_names
    from kmx_eval.explain.controls import explain_with_controls
    from kmx_eval.explain.concepts import concept_key, concept_maps, load_concepts
    from kmx_eval.heads import KMeansHeadModule, check_fitted_with, load_kmeans_head
    from kmx_eval.models.backbone import load_backbone
    from kmx_eval.models.blocks import BlockExtractor
    from kmx_eval.seeding import seed_everything

    ds_cfg = params.dataset(dataset)
    comb = params.combination(combination)
    cfg = params.explain
    names = explainer_names(cfg.explainers, "kmeans")
    backbone_cfg = params.backbone_for(dataset)
    device = resolve_device(backbone_cfg.device, backbone_cfg.threads)

    test = load_prepared(paths.prepared(dataset))["test"]
    # The dataset's seed, not the training seed: every seed, combination and the CNN explain the
    # same images, so their scores are paired.
    indices = evaluation_subset(len(test), cfg.n_images, ds_cfg.seed)
    x, labels, masks, _ = load_batch(test, indices)
    labels = np.asarray(labels, dtype=np.int64)
    log.info("%s %s: %d images, explainers %s + concepts", dataset, comb.name, len(indices), names)

    with io.atomic_path(paths.maps(dataset, comb.name)) as folder:
        folder.mkdir()
        for seed in params.seeds:
            seed_everything(seed)
            head_dir = paths.head_dir(dataset, comb.name, seed)
            head = load_kmeans_head(head_dir)
            normalisation = params.features.normalisation
            check_fitted_with(head_dir, "kmeans", {"features.normalisation": normalisation,
                                                   "features.resize": params.features.resize,
                                                   "features.block_weighting": comb.weighting})
            n_classes = head.prototypes_.shape[0]
            if not np.array_equal(np.asarray(head.classes_), np.arange(n_classes)):
                raise DataError(f"{head_dir}: head classes {head.classes_} are not 0..{n_classes - 1}")
            backbone, _ = load_backbone(paths.backbone_weights(dataset, seed).parent, device)
            stats = _block_stats(paths.embeddings_file(dataset, seed))
            module = KMeansHeadModule(
                BlockExtractor(backbone, blocks=comb.blocks, logits=False), comb, normalisation,
                stats, head.prototypes_, params.features.resize,
            ).to(device)

            explainers = {name: build_explainer(name, cfg, seed) for name in names}
            arrays = explain_with_controls(module, explainers, x, labels, masks, indices, cfg.target,
                                           cfg.batch_size)
            targets = arrays["targets"]
            # Concept maps are assigned for the explained class, like the attribution maps.
            for scope in cfg.concepts.scope:
                ids = concept_maps(module, load_concepts(head_dir, scope), x, targets, cfg.batch_size)
                if ids.max(initial=0) > MAX_CONCEPT_ID:
                    raise DataError(
                        f"concept id {ids.max()} does not fit the maps file's int16 (at most "
                        f"{MAX_CONCEPT_ID}); lower explain.concepts.n_concepts"
                    )
                arrays[concept_key(scope)] = ids.astype(np.int16)
            io.save_npz(folder / paths.maps_file(dataset, comb.name, seed).name, arrays)
            log.info("seed %d: k-means head accuracy %.3f on the evaluation subset", seed,
                     float((arrays["predictions"] == labels).mean()))


if __name__ == "__main__":
    raise SystemExit(main())
