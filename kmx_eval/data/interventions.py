"""Part-intervention copies of the test split, stored beside the prepared dataset.

A source that can render an image again with one part removed and with only its object kept
(``interventions(cfg, image_size)``, the synthetic source:
:func:`kmx_eval.data.synthetic.intervention_copies`) gets them written by the prepare stage to
``data/{dataset}/interventions`` (docs/ARCHITECTURE.md, "Prepared dataset"), for every image of
the test split: the evaluation subset is drawn later (explain.n_images), and writing the whole
split keeps the prepare stage, and with it training, independent of that setting. One row per
copy: ``index`` (position in the test split), ``removed`` (the part k = 1..P left out, or 0 for
the object over a new background) and ``image`` (PNG, lossless). The evaluate stage reads the rows
of its evaluation subset (:func:`load_interventions`) for the metrics of
:mod:`kmx_eval.metrics.interventions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kmx_eval.data.base import SOURCES, encode_png
from kmx_eval.errors import DataError

#: The folder of the copies inside a prepared dataset's folder.
FOLDER = "interventions"
#: ``removed`` of the object-only copy (part ids start at 1).
OBJECT_ONLY = 0


@dataclass
class Interventions:
    """The copies of some test images: ``without_part`` (n, P, S, S, 3) uint8, image i with part k+1
    removed; ``object_only`` (n, S, S, 3) uint8, its object over a new background."""

    without_part: np.ndarray
    object_only: np.ndarray

    @property
    def n_parts(self) -> int:
        return int(self.without_part.shape[1])


def build_interventions(cfg, image_size: int):
    """The copies of the test split as a ``datasets.Dataset`` (module docstring), or None for a source
    that cannot render them (only the synthetic source can: it knows what lies behind each part)."""
    source = SOURCES.get(cfg.source)
    if not hasattr(source, "interventions"):
        return None
    copies = source.interventions(cfg, image_size)
    return copies_dataset(copies.indices, Interventions(copies.without_part, copies.object_only))


def copies_dataset(indices, copies: Interventions):
    """The stored form (module docstring) of ``copies`` of the test images ``indices``."""
    # datasets takes seconds to import: only where a split is built or read
    from datasets import Dataset, Features, Image, Value

    index, removed, images = [], [], []
    for j, i in enumerate(np.asarray(indices).ravel()):
        per_image = [*(copies.without_part[j]), copies.object_only[j]]
        index += [int(i)] * len(per_image)
        removed += [*range(1, len(per_image)), OBJECT_ONLY]
        images += [encode_png(im) for im in per_image]
    features = Features({"index": Value("int64"), "removed": Value("int64"), "image": Image()})
    return Dataset.from_dict({"index": index, "removed": removed, "image": images}, features=features)


def load_interventions(prepared: str | Path, indices) -> Interventions | None:
    """The copies of test images ``indices`` from a prepared dataset's folder; None where it has none.

    Raises DataError naming the folder when an image of ``indices`` has no complete set of copies
    (a folder written by another version of the prepare stage: rerun it).
    """
    # datasets takes seconds to import: only where a split is built or read
    from datasets import load_from_disk

    folder = Path(prepared) / FOLDER
    if not (folder / "dataset_info.json").is_file():
        return None
    ds = load_from_disk(str(folder)).with_format("numpy")
    index, removed = np.asarray(ds["index"]), np.asarray(ds["removed"])
    n_parts = int(removed.max()) if len(removed) else 0
    rows = {(int(i), int(k)): r for r, (i, k) in enumerate(zip(index, removed))}
    wanted = [(int(i), k) for i in np.asarray(indices).ravel() for k in [*range(1, n_parts + 1), OBJECT_ONLY]]
    missing = [key for key in wanted if key not in rows]
    if missing:
        raise DataError(f"{folder} has no copy of test image {missing[0][0]} (removed={missing[0][1]}); "
                        f"rerun the prepare stage (dvc repro)")
    images = np.asarray(ds.select([rows[key] for key in wanted])["image"], dtype=np.uint8)
    images = images.reshape((-1, n_parts + 1) + images.shape[1:])
    return Interventions(images[:, :n_parts], images[:, n_parts])
