"""``hf``: a Hugging Face dataset, from the hub or from a local copy saved with ``save_to_disk``.

Both origins go through one code path (:func:`convert`): pick the train (and test) split,
read the ``columns`` mapping (image, label, optional mask), decode and check every sample, convert
to RGB at the model's input size, and split the train split (seeded, stratified) when no test
split is named. A local copy (``load_from_disk: true``, ``name`` = its folder) is how the source
is tested offline and how users without network access run it.

Without network access (``HF_DATASETS_OFFLINE=1``, or a failed connection) loading a hub name
fails at once with an :class:`~kmx_eval.errors.UnavailableError` that says what to do.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

from PIL import Image
import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from kmx_eval.schema import DatasetConfig, Strict
from kmx_eval.data.base import SOURCES, assemble, check_class_count, stratified_split
from kmx_eval.data.images import binary_mask, open_image, resize_mask, resize_rgb, to_rgb
from kmx_eval.errors import DataError, UnavailableError


class Columns(Strict):
    """Which columns of the hub dataset hold the image, the label and (optionally) the mask."""

    image: str = "image"
    label: str = "label"
    mask: str | None = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) means 'the hub could not be reached' rather than 'bad name'."""
    names = {"ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError", "Timeout",
             "ConnectTimeout", "ReadTimeout", "ConnectError", "TimeoutError", "NameResolutionError"}
    seen = 0
    while exc is not None and seen < 8:
        if any(cls.__name__ in names for cls in type(exc).__mro__):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _offline_message(name: str) -> str:
    return (
        f"Hugging Face dataset {name!r} could not be reached (no network access, or "
        f"HF_DATASETS_OFFLINE is set): connect to the network and unset HF_DATASETS_OFFLINE, or "
        f"save a local copy with save_to_disk and set load_from_disk: true with name: <its folder>"
    )


def load_hub_split(cfg: "HuggingFace.Config", split: str):
    """One split of a hub dataset via ``datasets.load_dataset``; network problems -> UnavailableError."""
    # datasets takes seconds to import: only where a split is built or read
    from datasets import load_dataset

    kwargs: dict[str, Any] = {"revision": cfg.revision, "data_dir": cfg.data_dir, "split": split}
    if "trust_remote_code" in inspect.signature(load_dataset).parameters:
        kwargs["trust_remote_code"] = cfg.trust_remote_code
    try:
        return load_dataset(cfg.name, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the hub raises many types; each maps to one sentence
        if _is_connection_error(exc):
            raise UnavailableError(_offline_message(cfg.name)) from None
        if type(exc).__name__ in ("DatasetNotFoundError", "RepositoryNotFoundError", "GatedRepoError"):
            raise DataError(
                f"Hugging Face dataset {cfg.name!r} was not found or is gated ({_first_line(exc)}); "
                f"check datasets.<name>.name and revision, or log in with huggingface-cli login"
            ) from None
        if isinstance(exc, (ValueError, KeyError)) and "split" in str(exc).lower():
            raise DataError(f"Hugging Face dataset {cfg.name!r} has no split {split!r} "
                            f"({_first_line(exc)})") from None
        if isinstance(exc, (OSError, ValueError, KeyError, RuntimeError)):
            raise DataError(f"could not load Hugging Face dataset {cfg.name!r}: {_first_line(exc)}") from None
        raise


def load_disk_splits(cfg: "HuggingFace.Config", splits: list[str]) -> list:
    """Splits of a dataset saved with ``save_to_disk`` (a ``DatasetDict``, or one ``Dataset``)."""
    # datasets takes seconds to import: only where a split is built or read
    from datasets import Dataset, load_from_disk

    path = Path(cfg.name).expanduser()
    if not path.is_dir():
        raise DataError(f"local Hugging Face dataset {cfg.name} does not exist (load_from_disk: true "
                        f"expects the folder written by save_to_disk)")
    try:
        saved = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"{cfg.name} is not a dataset saved with save_to_disk ({_first_line(exc)})") from None
    if isinstance(saved, Dataset):
        if splits != [cfg.split_train]:
            raise DataError(f"{cfg.name} holds a single split; leave split_test unset so that it is "
                            f"split into train and test")
        return [saved]
    missing = [s for s in splits if s not in saved]
    if missing:
        raise DataError(f"{cfg.name} has no split {missing[0]!r}; it has: {', '.join(saved)}")
    return [saved[s] for s in splits]


def _label_names(feature, values: list, where: str) -> tuple[list[str], np.ndarray]:
    """Class names and integer labels from a label column (ClassLabel, integers or strings)."""
    # datasets takes seconds to import: only where a split is built or read
    from datasets import ClassLabel

    if isinstance(feature, ClassLabel):
        return list(feature.names), np.asarray(values, dtype=np.int64)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        uniq = sorted({int(v) for v in values})
        index = {v: i for i, v in enumerate(uniq)}
        return [str(v) for v in uniq], np.asarray([index[int(v)] for v in values], dtype=np.int64)
    if all(isinstance(v, str) for v in values):
        uniq = sorted(set(values))
        index = {v: i for i, v in enumerate(uniq)}
        return uniq, np.asarray([index[v] for v in values], dtype=np.int64)
    raise DataError(f"{where}: the label column must hold class labels, integers or strings")


def _to_pil(value: Any, where: str):
    """A decoded image from an ``Image`` cell (``{'bytes', 'path'}``), a PIL image or an array."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            return open_image(value["bytes"], where)
        if value.get("path"):
            return open_image(value["path"], f"{where} ({value['path']})")
        raise DataError(f"{where} is empty (no bytes and no path)")
    if value is None:
        raise DataError(f"{where} is missing (None)")
    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3):
        arr = np.moveaxis(arr, 0, 2)  # channels-first arrays
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise DataError(f"{where}: expected an image, got an array of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def convert(split_datasets: dict, cfg: "HuggingFace.Config", image_size: int, where: str):
    """Turn raw Hugging Face splits into the prepared ``DatasetDict`` (shared by hub and disk).

    ``split_datasets`` maps ``"train"`` (and ``"test"`` when a test split is named) to
    ``datasets.Dataset``. Images are decoded here, one by one, so a corrupt sample is named
    (split and row) instead of failing later inside training.
    """
    # datasets takes seconds to import: only where a split is built or read
    from datasets import Image as ImageFeature

    cols = cfg.columns
    wanted = [c for c in (cols.image, cols.label, cols.mask) if c is not None]
    for split, ds in split_datasets.items():
        for c in wanted:
            if c not in ds.column_names:
                raise DataError(
                    f"{where}: column {c!r} is not in split {split!r}; columns are "
                    f"{', '.join(ds.column_names)} (set datasets.<name>.columns)"
                )
    # Decode images ourselves (decode=False keeps the encoded bytes) to name a bad sample.
    raw = {}
    for split, ds in split_datasets.items():
        ds = ds.select_columns(wanted)
        for c in (cols.image, cols.mask):
            if c is not None and isinstance(ds.features[c], ImageFeature):
                ds = ds.cast_column(c, ImageFeature(decode=False))
        raw[split] = ds

    label_values = {s: ds[cols.label] for s, ds in raw.items()}
    feature = raw["train"].features[cols.label]
    all_values = [v for s in raw for v in label_values[s]]
    names, all_labels = _label_names(feature, all_values, where)
    check_class_count(all_labels, names, where)
    offsets = np.cumsum([0] + [len(label_values[s]) for s in raw])
    labels = {s: all_labels[offsets[i]:offsets[i + 1]] for i, s in enumerate(raw)}

    decoded = {}
    for split, ds in raw.items():
        images, masks = _decoded_rows(ds, cols, image_size=image_size, where=where, split=split)
        decoded[split] = {"images": images, "labels": labels[split], "masks": masks}

    if "test" not in decoded:
        whole = decoded.pop("train")
        train, test = stratified_split(whole["labels"], cfg.test_fraction, cfg.seed, names, where)
        for split, idx in (("train", train), ("test", test)):
            decoded[split] = {
                "images": [whole["images"][i] for i in idx],
                "labels": whole["labels"][idx],
                "masks": [whole["masks"][i] for i in idx] if whole["masks"] is not None else None,
            }
    else:
        present = np.bincount(decoded["train"]["labels"], minlength=len(names))
        if (present == 0).any():
            raise DataError(f"{where}: split {cfg.split_train!r} has no image of class "
                            f"{names[int(np.flatnonzero(present == 0)[0])]!r}")
    return assemble(decoded, names, where)


def _decoded_rows(ds, cols, *, image_size: int, where: str, split: str) -> tuple[list, list | None]:
    """The images of one raw split (and its masks, None without a mask column), decoded and resized
    one row at a time so that a corrupt row is named."""
    images, masks = [], []
    for i, row in enumerate(tqdm(ds, desc=f"{where} {split}", leave=False)):
        row_at = f"{where} split {split!r} row {i}"
        img = to_rgb(_to_pil(row[cols.image], f"{row_at} ({cols.image})"), row_at)
        images.append(resize_rgb(img, image_size))
        if cols.mask is not None:
            m = _to_pil(row[cols.mask], f"{row_at} ({cols.mask})")
            if m.size != img.size:
                raise DataError(f"{row_at}: mask is {m.size[0]}x{m.size[1]} but the image is "
                                f"{img.size[0]}x{img.size[1]}")
            masks.append(resize_mask(binary_mask(m, f"{row_at} mask"), image_size))
    return images, (masks if cols.mask is not None else None)


@SOURCES.register("hf")
class HuggingFace:
    """A Hugging Face dataset (hub name, or a local ``save_to_disk`` folder)."""

    class Config(DatasetConfig):
        """``source: hf``."""

        source: str = "hf"
        name: str
        revision: str | None = None
        data_dir: str | None = None
        load_from_disk: bool = False
        split_train: str = "train"
        split_test: str | None = None
        test_fraction: float = Field(0.2, gt=0, lt=1)
        columns: Columns = Columns()
        trust_remote_code: bool = False

    @classmethod
    def build(cls, cfg: "HuggingFace.Config", image_size: int):
        if cfg.trust_remote_code:
            warnings.warn(
                f"hf dataset {cfg.name!r}: trust_remote_code is true; a hub dataset's own loading "
                f"script would run on this machine (datasets 5 no longer runs such scripts, so "
                f"the setting has no effect with it)",
                stacklevel=2,
            )
        names = [cfg.split_train] + ([cfg.split_test] if cfg.split_test else [])
        if cfg.load_from_disk:
            loaded = load_disk_splits(cfg, names)
            where = f"local Hugging Face dataset {cfg.name}"
        else:
            local = Path(cfg.name).expanduser()
            if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
                raise DataError(f"{cfg.name} is a folder saved with save_to_disk; set load_from_disk: true")
            loaded = [load_hub_split(cfg, s) for s in names]
            where = f"Hugging Face dataset {cfg.name}"
        return convert(dict(zip(["train", "test"], loaded)), cfg, image_size, where)
