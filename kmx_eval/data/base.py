"""What every dataset source shares: the registry, the on-disk schema and the stratified split.

A source turns its config into plain arrays (uint8 RGB images at the model's input size, integer
labels, optional 0/1 object masks and part maps); :func:`assemble` turns those arrays into the
``datasets.DatasetDict`` described in ``docs/ARCHITECTURE.md`` ("Prepared dataset"):

- ``image``: ``datasets.Image``, RGB, square ``image_size`` x ``image_size``;
- ``label``: ``ClassLabel`` with the class names;
- ``mask`` (optional): ``datasets.Image``, mode L, 0 background / 255 object;
- ``parts`` (optional): ``datasets.Image``, mode L, 0 background, 1..P part ids;
- ``keypoints`` (optional): one ``{"part", "x", "y", "visible"}`` record per named part, in the
  order of the part names, which the ``part`` ClassLabel holds (``List`` of a struct). ``x`` (column)
  and ``y`` (row) are float32 pixel coordinates in the stored image; ``visible`` is False where the
  part is not annotated (its ``x``, ``y`` are then 0). :func:`kmx_eval.data.prepared.load_keypoints`
  reads them as arrays.

Images are stored as PNG (lossless), so masks, part maps and images stay aligned pixel for pixel.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from kmx_eval.errors import DataError
from kmx_eval.registry import Registry
from kmx_eval.seeding import rng

#: Dataset sources by their params name (``datasets.<name>.source``).
SOURCES: Registry = Registry("dataset source")

SPLITS = ("train", "test")


def features(class_names: Sequence[str], masks: bool, parts: bool,
             keypoint_names: Sequence[str] | None = None):
    """The ``datasets.Features`` of a prepared split (see the module docstring)."""
    # datasets takes seconds to import: only where a split is built or read
    from datasets import ClassLabel, Features, List, Value
    from datasets import Image as ImageFeature

    spec: dict[str, Any] = {"image": ImageFeature(), "label": ClassLabel(names=list(class_names))}
    if masks:
        spec["mask"] = ImageFeature()
    if parts:
        spec["parts"] = ImageFeature()
    if keypoint_names is not None:
        spec["keypoints"] = List({"part": ClassLabel(names=list(keypoint_names)), "x": Value("float32"),
                                  "y": Value("float32"), "visible": Value("bool")})
    return Features(spec)


def keypoint_records(keypoints: np.ndarray) -> list[dict]:
    """One image's ``(P, 3)`` array of ``x, y, visible`` as the ``keypoints`` column's records."""
    return [{"part": p, "x": float(x), "y": float(y), "visible": bool(v)}
            for p, (x, y, v) in enumerate(np.asarray(keypoints, dtype=np.float64))]


def encode_png(array: np.ndarray) -> dict:
    """PNG-encode a uint8 ``(H, W, 3)`` (RGB) or ``(H, W)`` (L) array as a ``datasets.Image`` value.

    Encoding here, not in ``datasets``, keeps memory at the size of the compressed images while a
    source walks a large dataset, and makes the stored bytes independent of PIL image attributes.
    """
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    buf = io.BytesIO()
    # compress_level 1: PNG stays lossless, and encoding is several times faster than the default.
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def check_class_count(labels: np.ndarray, class_names: Sequence[str], where: str) -> None:
    """Refuse a dataset whose labels cover fewer than two classes (nothing to classify)."""
    present = np.unique(np.asarray(labels))
    if len(class_names) < 2 or present.size < 2:
        shown = ", ".join(repr(class_names[i]) for i in present[:3]) or "none"
        raise DataError(
            f"{where} has {present.size} class(es) ({shown}); a classification benchmark needs at "
            f"least 2 classes with images"
        )


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int, class_names: Sequence[str], where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test split.

    For each class ``c`` with ``n_c`` images, ``n_test_c = clip(round(test_fraction * n_c), 1,
    n_c - 1)`` images drawn without replacement (a permutation seeded by ``(seed, c)``) go to the
    test split and the rest to the train split, so that every class is in both splits and the class
    proportions are kept up to rounding. Returns sorted ``(train_indices, test_indices)``.

    Raises
    ------
    DataError
        When a class has fewer than 2 images (it cannot be in both splits).
    """
    labels = np.asarray(labels)
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"{where}: test_fraction must be between 0 and 1 (got {test_fraction})")
    train, test = [], []
    for c, name in enumerate(class_names):
        members = np.flatnonzero(labels == c)
        n = members.size
        if n < 2:
            raise DataError(
                f"{where}: class {name!r} has {n} image(s); a train/test split needs at least 2 "
                f"per class (add images or remove the class)"
            )
        n_test = int(np.clip(round(test_fraction * n), 1, n - 1))
        order = rng(seed, "split", c).permutation(members)
        test.append(order[:n_test])
        train.append(order[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _column(items: Sequence[np.ndarray], desc: str, mode: str) -> list[dict]:
    out = []
    # One bar per split (images); masks and part maps encode in a fraction of that time.
    for arr in tqdm(items, desc=desc, leave=False, disable=len(items) < 64 or mode != "RGB"):
        arr = np.asarray(arr)
        if arr.dtype != np.uint8:
            raise TypeError(f"{desc}: expected uint8 arrays, got {arr.dtype}")
        if mode == "RGB" and (arr.ndim != 3 or arr.shape[2] != 3):
            raise ValueError(f"{desc}: expected (H, W, 3) RGB arrays, got shape {arr.shape}")
        if mode == "L" and arr.ndim != 2:
            raise ValueError(f"{desc}: expected (H, W) arrays, got shape {arr.shape}")
        out.append(encode_png(arr))
    return out


def assemble(
    splits: dict[str, dict[str, Any]], class_names: Sequence[str], where: str,
    keypoint_names: Sequence[str] | None = None,
):
    """Build the prepared ``DatasetDict`` from arrays.

    Parameters
    ----------
    splits
        ``{"train": {...}, "test": {...}}``; each holds ``images`` (sequence of uint8 (S, S, 3)),
        ``labels`` (int sequence in ``0..len(class_names)-1``), optionally ``masks`` (sequence of
        (S, S) arrays, nonzero = object; stored as 0/255) and ``parts`` (sequence of (S, S) uint8
        part ids, 0 = background). Either every split has masks (parts) or none has. With
        ``keypoint_names``, each split also holds ``keypoints``: one ``(P, 3)`` array of ``x, y,
        visible`` per image, P = ``len(keypoint_names)``.
    class_names
        Names of the classes, in label order.
    where
        Names the dataset in error messages (a path, a hub name, a source).
    """
    # datasets takes seconds to import: only where a split is built or read
    from datasets import Dataset, DatasetDict

    if set(splits) != set(SPLITS):
        raise ValueError(f"assemble: needs splits {SPLITS}, got {sorted(splits)}")
    has_mask = {"masks" in s and s["masks"] is not None for s in splits.values()}
    has_parts = {"parts" in s and s["parts"] is not None for s in splits.values()}
    if len(has_mask) != 1 or len(has_parts) != 1:
        raise ValueError("assemble: masks and parts must be given for both splits or for neither")
    masks, parts = has_mask.pop(), has_parts.pop()
    all_labels = np.concatenate([np.asarray(splits[s]["labels"], dtype=np.int64) for s in SPLITS])
    check_class_count(all_labels, class_names, where)
    if all_labels.min() < 0 or all_labels.max() >= len(class_names):
        raise ValueError(f"assemble: labels must lie in 0..{len(class_names) - 1}")
    feats = features(class_names, masks, parts, keypoint_names)
    out = {}
    for name in SPLITS:
        s = splits[name]
        n = len(s["images"])
        if n == 0:
            raise DataError(f"{where}: the {name} split has no images")
        sizes = {np.asarray(im).shape[:2] for im in s["images"]}
        if len(sizes) != 1 or (size := sizes.pop())[0] != size[1]:
            raise ValueError(f"assemble: {name} images must all be square and of one size")
        for key in ("masks", "parts"):
            if s.get(key) is not None and {np.asarray(m).shape for m in s[key]} != {size}:
                raise ValueError(f"assemble: {name} {key} must be {size} like the images")
        columns: dict[str, Any] = {
            "image": _column(s["images"], f"{where} {name} images", "RGB"),
            "label": [int(v) for v in s["labels"]],
        }
        if masks:
            # Stored 0/255 (visible when opened); readers threshold at 127 (load_batch).
            binary = [np.where(np.asarray(m) > 0, 255, 0).astype(np.uint8) for m in s["masks"]]
            columns["mask"] = _column(binary, f"{where} {name} masks", "L")
        if parts:
            columns["parts"] = _column(s["parts"], f"{where} {name} parts", "L")
        if keypoint_names is not None:
            columns["keypoints"] = [keypoint_records(k) for k in s["keypoints"]]
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"assemble: {name} columns differ in length: {lengths}")
        out[name] = Dataset.from_dict(columns, features=feats)
    return DatasetDict(out)
