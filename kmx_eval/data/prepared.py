"""Building, saving, loading and inspecting prepared datasets (``data/{dataset}``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kmx_eval.io import atomic_path
from kmx_eval.schema import DatasetConfig
from kmx_eval.data.base import SOURCES, SPLITS
from kmx_eval.errors import DataError, KmxError


def _split(dd):
    """The train split of a DatasetDict, or a Dataset itself (the helpers accept both)."""
    return dd["train"] if hasattr(dd, "keys") and "train" in dd else dd


def class_names(dd) -> list[str]:
    """Class names in label order (from the ``label`` ClassLabel feature)."""
    return list(_split(dd).features["label"].names)


def has_masks(dd) -> bool:
    """Whether the dataset has object masks (the ``mask`` column)."""
    return "mask" in _split(dd).features


def has_parts(dd) -> bool:
    """Whether the dataset has part maps (the ``parts`` column)."""
    return "parts" in _split(dd).features


def has_keypoints(dd) -> bool:
    """Whether the dataset has named part locations (the ``keypoints`` column)."""
    return "keypoints" in _split(dd).features


def keypoint_names(dd) -> list[str]:
    """Names of the annotated parts, in the order of each row's keypoint records."""
    return list(_split(dd).features["keypoints"].feature["part"].names)


def load_keypoints(split, indices=None) -> tuple[np.ndarray, np.ndarray]:
    """Part locations of rows ``indices`` (all rows by default) of a prepared split.

    Returns ``xy`` float32 ``(n, P, 2)`` (column, row in the stored image's pixels) and ``visible``
    bool ``(n, P)``, parts in the order of :func:`keypoint_names` (docs/ARCHITECTURE.md,
    "Prepared dataset"; the column's format is in :mod:`kmx_eval.data.base`).
    """
    rows = split.select_columns(["keypoints"])
    if indices is not None:
        rows = rows.select(np.asarray(indices, dtype=np.int64).ravel().tolist())
    records = rows["keypoints"]
    n_parts = len(split.features["keypoints"].feature["part"].names)
    xy = np.zeros((len(records), n_parts, 2), dtype=np.float32)
    visible = np.zeros((len(records), n_parts), dtype=bool)
    for i, parts in enumerate(records):
        for rec in parts:
            xy[i, rec["part"]] = (rec["x"], rec["y"])
            visible[i, rec["part"]] = rec["visible"]
    return xy, visible


def validate_prepared(dd, image_size: int | None, where: str) -> None:
    """Check a DatasetDict against the prepared-dataset contract (docs/ARCHITECTURE.md).

    Only the first image of each split is decoded (every writer builds them uniformly); the rest
    of the check reads the schema.
    """
    # datasets takes seconds to import: only where a split is built or read
    from datasets import ClassLabel, DatasetDict
    from datasets import Image as ImageFeature

    if not isinstance(dd, DatasetDict) or set(dd) != set(SPLITS):
        got = ", ".join(dd) if hasattr(dd, "keys") else type(dd).__name__
        raise DataError(f"{where}: expected splits train and test, found {got}")
    first = dd["train"].features
    for split in SPLITS:
        feats = dd[split].features
        if feats != first:
            raise DataError(f"{where}: train and test have different columns or class names")
        if not isinstance(feats.get("image"), ImageFeature) or not isinstance(feats.get("label"), ClassLabel):
            raise DataError(f"{where}: needs an 'image' column (Image) and a 'label' column (ClassLabel)")
        if len(dd[split]) == 0:
            raise DataError(f"{where}: the {split} split is empty")
        if len(feats["label"].names) < 2:
            raise DataError(f"{where} has {len(feats['label'].names)} class; needs at least 2")
        row = dd[split][0]
        size = row["image"].size
        if row["image"].mode != "RGB" or size[0] != size[1] or (image_size and size[0] != image_size):
            raise DataError(f"{where}: {split} images are {row['image'].mode} {size[0]}x{size[1]}; "
                            f"expected RGB {image_size or 'square'}x{image_size or ''}")
        for col in ("mask", "parts"):
            if col in row and (row[col].mode != "L" or row[col].size != size):
                raise DataError(f"{where}: {split} {col} must be mode L at {size[0]}x{size[1]}")


def check_image_size(split, image_size: int, where) -> int:
    """The side of a prepared split's square images, checked against ``backbone.image_size``.

    The prepare stage writes images at the backbone's input size, and ``backbone.json`` records
    that size; a folder prepared for another size (params changed since prepare ran) would
    train the backbone on images other than those it claims. Only the first image is decoded
    (every writer builds them uniformly). Raises :class:`DataError` naming ``where`` (the
    prepared folder) and both sizes.
    """
    size = split[0]["image"].size[0]
    if size != image_size:
        raise DataError(f"{where} holds {size} px images but the backbone's "
                        f"image_size is {image_size}; rerun the prepare stage (dvc repro)")
    return size


def prepare_dataset(cfg: DatasetConfig, image_size: int, name: str | None = None):
    """Build the train/test ``DatasetDict`` of a dataset entry through its source (``SOURCES``).

    ``name`` (the params key) is put in front of error messages so the user knows which entry of
    ``datasets`` is at fault.
    """
    where = f"datasets.{name}" if name else f"{cfg.source} dataset"
    source = SOURCES.get(cfg.source, where=f"{where}.source")
    try:
        dd = source.build(cfg, image_size)
        validate_prepared(dd, image_size, where)
    except KmxError as exc:
        if name is None or str(exc).startswith(where):
            raise
        raise type(exc)(f"{where}: {exc}") from None
    return dd


def save_prepared(dd, path: str | os.PathLike, extras: dict | None = None) -> Path:
    """Save a prepared DatasetDict with ``save_to_disk``, atomically (all or nothing at ``path``);
    each ``datasets.Dataset`` of ``extras`` goes to the sub-folder of its name (the part-intervention
    copies, :mod:`kmx_eval.data.interventions`)."""
    with atomic_path(path) as tmp:
        dd.save_to_disk(str(tmp))
        for name, extra in (extras or {}).items():
            extra.save_to_disk(str(tmp / name))
    return Path(path)


def load_prepared(path: str | os.PathLike):
    """Load a prepared DatasetDict (memory-mapped); a missing folder is a one-line KmxError."""
    # datasets takes seconds to import: only where a split is built or read
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        what = "does not exist" if not path.exists() else "is not a prepared dataset"
        raise KmxError(f"{path} {what}; run the prepare stage first (dvc repro prepare@{path.name})")
    dd = load_from_disk(str(path))
    validate_prepared(dd, None, str(path))
    return dd


def class_counts(dd) -> dict[str, dict[str, int]]:
    """Images per class and split: ``{split: {class name: count}}``."""
    names = class_names(dd)
    return {
        split: dict(zip(names, np.bincount(np.asarray(dd[split]["label"]), minlength=len(names)).tolist()))
        for split in dd
    }
