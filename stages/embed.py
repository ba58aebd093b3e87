"""embed@{dataset}: the pooled-embedding cache (every block at every grid, CNN logits) once per seed."""

from __future__ import annotations

import logging

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset):
    """Run each seed's backbone once over the train and test splits and write the pooled-embedding
    cache (z parts of every block combination, CNN logits, labels, training-split block statistics)
    to features/{dataset}/seed{s}.npz."""
    from kmx_eval.data import ImageDataset, class_names, load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.errors import DataError
    from kmx_eval.models.backbone import load_backbone
    from kmx_eval.models.blocks import BlockExtractor
    from kmx_eval.models.embeddings import extract_embedding_cache
    from kmx_eval.seeding import seed_everything

    params.dataset(dataset)
    cfg = params.backbone_for(dataset)
    device = resolve_device(cfg.device, cfg.threads)
    dd = load_prepared(paths.prepared(dataset))
    names = class_names(dd)
    size = dd["train"][0]["image"].size[0]
    train = ImageDataset(dd["train"], augment=False, train=False)
    test = ImageDataset(dd["test"], augment=False, train=False)

    with io.atomic_path(paths.embeddings(dataset)) as folder:
        folder.mkdir()
        for seed in params.seeds:
            seed_everything(seed)
            seed_dir = paths.backbone_weights(dataset, seed).parent
            backbone, meta = load_backbone(seed_dir, device)
            if list(meta.get("class_names", names)) != names or meta.get("image_size", size) != size:
                raise DataError(
                    f"{seed_dir} was trained on {meta.get('image_size')} px images of classes "
                    f"{meta.get('class_names')}, but {paths.prepared(dataset)} has {size} px images "
                    f"of classes {names}; rerun the train stage (dvc repro)")
            cache = extract_embedding_cache(BlockExtractor(backbone), train, test,
                                            batch_size=params.features.batch_size,
                                            resize=params.features.resize, device=device,
                                            num_workers=cfg.num_workers)
            io.save_npz(folder / paths.embeddings_file(dataset, seed).name, cache)
            accuracy = float((cache["test/logits"].argmax(1) == cache["test/labels"]).mean())
            log.info("seed %d: %d arrays; CNN test accuracy from the cache %.4f", seed, len(cache),
                     accuracy)


if __name__ == "__main__":
    raise SystemExit(main())
