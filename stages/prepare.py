"""prepare@{dataset}: build the dataset's train/test splits at the model's input size and save them."""

import logging

from kmx_eval import paths
from kmx_eval.cli import stage
from kmx_eval.data import class_counts, has_masks, has_parts, prepare_dataset, save_prepared
from kmx_eval.data.interventions import FOLDER, build_interventions

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset):
    """Build DATASET from its source (params.yaml `datasets`) and save it to data/DATASET."""
    cfg = params.dataset(dataset)
    image_size = params.backbone_for(dataset).image_size
    dd = prepare_dataset(cfg, image_size, name=dataset)
    copies = build_interventions(cfg, image_size)  # part interventions, where the source renders them
    out = save_prepared(dd, paths.prepared(dataset), extras={FOLDER: copies} if copies is not None else None)
    counts = class_counts(dd)
    extras = [c for c, present in (("masks", has_masks(dd)), ("parts", has_parts(dd))) if present]
    log.info("%s: %d train + %d test images, %d classes, %d px%s -> %s", dataset, len(dd["train"]),
             len(dd["test"]), len(counts["train"]), image_size,
             f", with {' and '.join(extras)}" if extras else "", out)
    if copies is not None:
        log.info("  part interventions: %d copies of the %d test images -> %s", len(copies), len(dd["test"]),
                 out / FOLDER)
    for name in counts["train"]:
        log.info("  %-24s train %5d  test %5d", name, counts["train"][name], counts["test"][name])


if __name__ == "__main__":
    raise SystemExit(main())
