"""From prepared splits to normalised tensors: :class:`ImageDataset` (training) and :func:`load_batch`.

Normalisation is ``x = (rgb / 255 - MEAN) / STD`` per channel with the ImageNet statistics, for
pretrained and scratch backbones alike, so one convention holds everywhere (explainers and
Quantus perturbation baselines see the same inputs as the model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

#: ImageNet channel means and standard deviations (RGB), on the 0..1 scale.
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_MEAN = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)

#: Decoded images of a split are kept in memory up to this size (bytes); above, decoded per item.
PRELOAD_BYTES = 2 * 1024**3
_CHUNK = 256


def normalise(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 images ``(..., H, W, 3)`` (channels last) -> float32 ``(..., 3, H, W)``,
    ``x = (rgb / 255 - MEAN) / STD``."""
    t = torch.as_tensor(np.asarray(images))
    t = t.movedim(-1, -3).to(torch.float32).div_(255.0)
    return t.sub_(_MEAN).div_(_STD)


def decode_column(split, column: str = "image", indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode one Image column of a prepared split into a uint8 array ``(n, H, W[, 3])``.

    Decoding goes through ``with_format("numpy")`` in chunks (one stacked array per chunk).
    """
    fmt = split.select_columns([column]).with_format("numpy")
    idx = np.arange(len(split)) if indices is None else np.asarray(indices, dtype=np.int64).ravel()
    if idx.size == 0:
        first = np.asarray(fmt[0][column]) if len(split) else np.zeros((0, 0), np.uint8)
        return np.zeros((0, *first.shape), dtype=np.uint8)
    chunks = []
    for start in tqdm(range(0, idx.size, _CHUNK), desc=f"decode {column}", leave=False,
                      disable=idx.size <= 4 * _CHUNK):
        part = idx[start:start + _CHUNK]
        chunks.append(np.asarray(fmt[part.tolist()][column], dtype=np.uint8))
    return np.concatenate(chunks)


class ImageDataset(torch.utils.data.Dataset):
    """A prepared split as a torch Dataset of ``(x, label, index)``.

    ``x`` is float32 ``(3, H, W)`` normalised (:func:`normalise`), ``label`` an int, ``index`` the
    row in the split (so per-sample outputs can be matched to the split).

    Parameters
    ----------
    split
        A prepared ``datasets.Dataset`` (one split of the DatasetDict).
    augment
        Random horizontal flip, vertical flip and rotation by ``k * 90`` degrees, k uniform in
        {0, 1, 2, 3}: the eight symmetries of the square, which keep the image's pixels (no
        interpolation) and its size.
    train
        ``docs/ARCHITECTURE.md`` spelling: ``train=False`` turns augmentation off whatever
        ``augment`` says (evaluation), ``train=True`` or ``None`` leaves ``augment`` in charge.
    generator
        torch Generator for the augmentation draws. ``None`` uses torch's global generator, which
        ``seed_everything`` seeds and which DataLoader re-seeds per worker; pass a generator only
        with ``num_workers=0`` (each worker would get a copy of the same stream).

    Notes
    -----
    Training reads every image each epoch, so the split is decoded once into a uint8 array when
    it fits in :data:`PRELOAD_BYTES`, and per item otherwise.
    """

    def __init__(self, split, augment: bool = False, train: bool | None = None,
                 generator: torch.Generator | None = None):
        self.split = split
        self.augment = bool(augment) and train is not False
        self.generator = generator
        self.labels = np.asarray(split["label"], dtype=np.int64)
        n = len(split)
        side = split[0]["image"].size[0] if n else 0
        if n * side * side * 3 <= PRELOAD_BYTES:
            self.images: np.ndarray | None = decode_column(split, "image")
        else:
            self.images = None
            self._fmt = split.select_columns(["image"]).with_format("numpy")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        index = int(index)
        img = self.images[index] if self.images is not None else self._fmt[index]["image"]
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)  # uint8 (3, H, W)
        if self.augment:
            flip_h, flip_v, k = torch.randint(0, 4, (3,), generator=self.generator).tolist()
            if flip_h % 2:
                t = t.flip(-1)
            if flip_v % 2:
                t = t.flip(-2)
            if k:
                t = torch.rot90(t, k, dims=(-2, -1))
        x = t.to(torch.float32).div_(255.0).sub_(_MEAN).div_(_STD)
        return x, int(self.labels[index]), index


def load_batch(split, indices: Sequence[int]):
    """Rows ``indices`` of a prepared split as arrays for explainers and metrics.

    Returns
    -------
    x : torch.Tensor float32 (n, 3, H, W), normalised (:func:`normalise`)
    y : torch.Tensor int64 (n,)
    masks : numpy uint8 (n, H, W) with 0/1 values (stored 0/255; ``> 127``), or None
    parts : numpy int64 (n, H, W) part ids (0 background), or None
    """
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= len(split)):
        raise IndexError(f"load_batch: indices must lie in 0..{len(split) - 1}")
    cols = [c for c in ("image", "label", "mask", "parts") if c in split.column_names]
    fmt = split.select_columns(cols).with_format("numpy")
    if idx.size == 0:
        side = split[0]["image"].size[0] if len(split) else 0
        empty = np.zeros((0, side, side), dtype=np.uint8)
        return (torch.zeros((0, 3, side, side)), torch.zeros((0,), dtype=torch.int64),
                empty if "mask" in cols else None, empty.astype(np.int64) if "parts" in cols else None)
    rows = fmt[idx.tolist()]
    x = normalise(np.asarray(rows["image"], dtype=np.uint8))
    y = torch.as_tensor(np.asarray(rows["label"], dtype=np.int64))
    masks = (np.asarray(rows["mask"]) > 127).astype(np.uint8) if "mask" in cols else None
    parts = np.asarray(rows["parts"]).astype(np.int64) if "parts" in cols else None
    return x, y, masks, parts
