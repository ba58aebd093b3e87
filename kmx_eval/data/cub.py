"""``cub``: Caltech-UCSD Birds-200-2011 (CUB-200-2011) read in the layout Caltech distributes.

``CUB_200_2011.tgz`` extracts to ``CUB_200_2011/`` and the separate ``segmentations.tgz`` to
``segmentations/``; ``path`` is the ``CUB_200_2011`` folder (or the folder holding it)::

    CUB_200_2011/images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg ...
    CUB_200_2011/images.txt              <image_id> <path under images/>
    CUB_200_2011/classes.txt             <class_id> <NNN.Name>  (else named by the image folders)
    CUB_200_2011/image_class_labels.txt  <image_id> <class_id>
    CUB_200_2011/train_test_split.txt    <image_id> <1: train, 0: test>
    CUB_200_2011/bounding_boxes.txt      <image_id> <x> <y> <width> <height>
    CUB_200_2011/parts/parts.txt         <part_id> <part name>
    CUB_200_2011/parts/part_locs.txt     <image_id> <part_id> <x> <y> <visible>
    segmentations/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.png ...

What the source makes of it:

- the official split (``train_test_split.txt``), classes named without their ``NNN.`` prefix;
- ``classes``: all 200, the first ``n`` by class id, or a list of ids and names (quick studies);
- ``crop: bbox``: each image (mask, part locations) cut to its ``bounding_boxes.txt`` box first;
- masks from ``segmentations`` (default: a ``segmentations/`` folder beside ``CUB_200_2011/``,
  when there is one). A CUB segmentation is a soft grey PNG, each pixel the share of annotators who
  put it on the bird; the object is where that share exceeds ``mask_threshold`` (default 0.5: more
  than half of them). An image without a segmentation file gets an empty mask: the localisation
  metrics skip empty masks and count them (``n_missing``, "empty mask"), and the prepare log
  says how many there were;
- part locations as the ``keypoints`` column (:mod:`kmx_eval.data.base`): the 15 named parts of
  ``parts.txt``, ``x``/``y`` scaled to the stored image (after the crop), ``visible`` as annotated
  (a part outside the crop is not visible). :func:`kmx_eval.metrics.parts.part_pointing_game`
  reads them.

A file that is missing or malformed, an image listed but absent, or a class id outside
``classes.txt`` stops with one line naming the file (and line). ``python -m
kmx_eval.data.cub_check CUB_200_2011`` checks a download that way before a study
(:mod:`kmx_eval.data.cub_check`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field
from tqdm.auto import tqdm

from kmx_eval.data.base import SOURCES, assemble
from kmx_eval.data.images import open_image, resize_mask, resize_rgb, to_rgb
from kmx_eval.errors import DataError, ParamsError, did_you_mean
from kmx_eval.schema import DatasetConfig

log = logging.getLogger("kmx_eval")

#: The files of ``CUB_200_2011/`` the source reads (``classes.txt`` is optional).
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt",
         "parts/parts.txt", "parts/part_locs.txt")


@dataclass(frozen=True)
class CubTree:
    """The lists of a ``CUB_200_2011`` folder, checked against each other and the image files."""

    root: Path
    images: dict[int, str]  # image id -> path under images/
    labels: dict[int, int]  # image id -> class id
    classes: dict[int, str]  # class id -> name (without the NNN. prefix)
    train: dict[int, bool]  # image id -> in the official training split
    boxes: dict[int, tuple[float, float, float, float]]  # image id -> x, y, width, height
    part_names: tuple[str, ...]  # in part id order
    part_locs: dict[int, np.ndarray]  # image id -> (P, 3) x, y, visible


def _rows(path: Path, columns: int, what: str, *, rest: bool = False) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of a whitespace-separated CUB list; ``rest``: the last field
    takes the rest of the line (names with spaces)."""
    if not path.is_file():
        raise DataError(f"{path} does not exist; a CUB_200_2011 folder as distributed holds "
                        f"{', '.join(FILES)} and images/")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1) if rest else line.split()
        if len(fields) != columns:
            raise DataError(f"{path} line {n}: expected {columns} fields ({what}), got {line.strip()!r}")
        out.append((n, fields))
    return out


def _number(path: Path, n: int, value: str, kind=int):
    try:
        return kind(value)
    except ValueError:
        raise DataError(f"{path} line {n}: {value!r} is not a{'n integer' if kind is int else ' number'}") from None


def _per_image(path: Path, rows, images: dict[int, str], convert) -> dict:
    """``{image id: convert(line, fields)}`` for a list with one line per image of images.txt."""
    out = {}
    for n, fields in rows:
        image = _number(path, n, fields[0])
        if image not in images:
            raise DataError(f"{path} line {n}: image id {image} is not in images.txt")
        out[image] = convert(n, fields[1:])
    missing = sorted(set(images) - set(out))
    if missing:
        raise DataError(f"{path} has no line for image id {missing[0]} ({images[missing[0]]})"
                        f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}")
    return out


def find_root(path: str) -> Path:
    """The ``CUB_200_2011`` folder: ``path`` itself, or its ``CUB_200_2011`` sub-folder."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"cub path {path} does not exist or is not a folder; give the CUB_200_2011 "
                        f"folder that CUB_200_2011.tgz extracts to")
    if not (root / "images.txt").exists() and (root / "CUB_200_2011" / "images.txt").is_file():
        return root / "CUB_200_2011"
    return root


def read_classes(root: Path, images: dict[int, str]) -> dict[int, str]:
    """Class ids and names from ``classes.txt``, else from the image folders (``NNN.Name``)."""
    path = root / "classes.txt"
    if path.is_file():
        named = {_number(path, n, f[0]): f[1] for n, f in _rows(path, 2, "class id, name", rest=True)}
    else:
        folders = {Path(p).parts[0] for p in images.values() if len(Path(p).parts) > 1}
        named = {}
        for folder in folders:
            head = folder.split(".", 1)[0]
            if not head.isdigit():
                raise DataError(f"{root / 'images.txt'}: folder {folder} is not named NNN.Name and "
                                f"there is no classes.txt to name the classes")
            named[int(head)] = folder
    short = {c: name.split(".", 1)[1] if name.split(".", 1)[0].isdigit() and "." in name else name
             for c, name in sorted(named.items())}
    # Names without their NNN. prefix, unless that makes two classes one (labels need unique names).
    return short if len(set(short.values())) == len(short) else dict(sorted(named.items()))


def read_parts(root: Path, images: dict[int, str]) -> tuple[tuple[str, ...], dict[int, np.ndarray]]:
    """Part names (part id order) and each image's ``(P, 3)`` array of ``x, y, visible``."""
    names_path, locs_path = root / "parts" / "parts.txt", root / "parts" / "part_locs.txt"
    names = {_number(names_path, n, f[0]): f[1].strip()
             for n, f in _rows(names_path, 2, "part id, name", rest=True)}
    ids = sorted(names)
    index = {p: i for i, p in enumerate(ids)}
    locs = {i: np.zeros((len(ids), 3), dtype=np.float32) for i in images}
    for n, (image, part, x, y, visible) in _rows(locs_path, 5, "image id, part id, x, y, visible"):
        image, part = _number(locs_path, n, image), _number(locs_path, n, part)
        if image not in locs:
            raise DataError(f"{locs_path} line {n}: image id {image} is not in images.txt")
        if part not in index:
            raise DataError(f"{locs_path} line {n}: part id {part} is not in parts.txt "
                            f"({ids[0]}..{ids[-1]})" if ids else f"{names_path} lists no part")
        seen = _number(locs_path, n, visible) != 0
        xy = (_number(locs_path, n, x, float), _number(locs_path, n, y, float)) if seen else (0.0, 0.0)
        locs[image][index[part]] = (*xy, float(seen))
    return tuple(names[p] for p in ids), locs


def read_tree(path: str) -> CubTree:
    """Read and cross-check every list of a ``CUB_200_2011`` folder (module docstring)."""
    root = find_root(path)
    images_path = root / "images.txt"
    images = {}
    for n, (image, rel) in _rows(images_path, 2, "image id, path"):
        image = _number(images_path, n, image)
        if image in images:
            raise DataError(f"{images_path} line {n}: image id {image} is listed twice")
        if not (root / "images" / rel).is_file():
            raise DataError(f"{root / 'images' / rel} does not exist, but {images_path} lists it "
                            f"(line {n}); extract CUB_200_2011.tgz again")
        images[image] = rel
    if not images:
        raise DataError(f"{images_path} lists no image")
    classes = read_classes(root, images)
    labels_path = root / "image_class_labels.txt"

    def label(n: int, fields: list[str]) -> int:
        c = _number(labels_path, n, fields[0])
        if c not in classes:
            raise DataError(f"{labels_path} line {n}: class id {c} is out of range (the classes are "
                            f"{min(classes)}..{max(classes)}, from {'classes.txt' if (root / 'classes.txt').is_file() else 'the image folders'})")
        return c

    labels = _per_image(labels_path, _rows(labels_path, 2, "image id, class id"), images, label)
    split_path = root / "train_test_split.txt"
    train = _per_image(split_path, _rows(split_path, 2, "image id, 1 or 0"), images,
                       lambda n, f: _number(split_path, n, f[0]) == 1)
    box_path = root / "bounding_boxes.txt"
    boxes = _per_image(box_path, _rows(box_path, 5, "image id, x, y, width, height"), images,
                       lambda n, f: tuple(_number(box_path, n, v, float) for v in f))
    part_names, part_locs = read_parts(root, images)
    return CubTree(root, images, labels, classes, train, boxes, part_names, part_locs)


def select_classes(tree: CubTree, classes: int | list[int | str] | None, where: str) -> list[int]:
    """Class ids of the study: all, the first ``n`` by id, or those listed (ids or names)."""
    ids = sorted(tree.classes)
    if classes is None:
        return ids
    if isinstance(classes, int):
        if not 2 <= classes <= len(ids):
            raise ParamsError(f"{where}.classes: {classes}; the tree has {len(ids)} classes, and a study "
                              f"needs at least 2")
        return ids[:classes]
    by_name = {name.casefold(): c for c, name in tree.classes.items()}
    chosen = []
    for item in classes:
        key = str(item).split(".", 1)[1] if str(item).split(".", 1)[0].isdigit() and "." in str(item) else item
        c = key if isinstance(key, int) else by_name.get(str(key).casefold())
        if c not in tree.classes:
            raise ParamsError(f"{where}.classes: {item!r} is not a class of {tree.root} (ids "
                              f"{ids[0]}..{ids[-1]}, or names such as {tree.classes[ids[0]]!r})"
                              f"{did_you_mean(str(item), tree.classes.values())}")
        if c not in chosen:
            chosen.append(c)
    if len(chosen) < 2:
        raise ParamsError(f"{where}.classes lists {len(chosen)} class; a study needs at least 2")
    return sorted(chosen)


def crop_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The bounding box as whole pixels ``(left, top, right, bottom)`` inside the image."""
    x, y, w, h = box
    left, top = max(0, math.floor(x)), max(0, math.floor(y))
    right, bottom = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    return (left, top, right, bottom) if right > left and bottom > top else (0, 0, width, height)


def soft_mask(path: Path, size: tuple[int, int], threshold: float) -> np.ndarray:
    """A CUB segmentation thresholded: object where the annotators' share exceeds ``threshold``."""
    img = open_image(path, str(path))
    if img.size != size:
        raise DataError(f"segmentation {path} is {img.size[0]}x{img.size[1]} but its image is "
                        f"{size[0]}x{size[1]}; segmentations must have their image's size")
    return np.asarray(img.convert("L"), dtype=np.float32) > threshold * 255.0


@dataclass(frozen=True)
class Sample:
    """One image as the prepared dataset stores it."""

    image: np.ndarray  # (S, S, 3) uint8
    mask: np.ndarray | None  # (S, S) bool; None without a segmentations folder
    keypoints: np.ndarray  # (P, 3) x, y, visible in the stored image's pixels
    has_segmentation: bool


def load_sample(tree: CubTree, image_id: int, *, size: int, segmentations: Path | None,
                crop: str, threshold: float) -> Sample:
    """Decode one image, its mask and its part locations; crop and resize them alike."""
    rel = tree.images[image_id]
    path = tree.root / "images" / rel
    img = to_rgb(open_image(path, str(path)), str(path))
    mask, found = None, False
    if segmentations is not None:
        seg = segmentations / Path(rel).with_suffix(".png")
        found = seg.is_file()
        mask = soft_mask(seg, img.size, threshold) if found else np.zeros(img.size[::-1], dtype=bool)
    box = crop_box(tree.boxes[image_id], *img.size) if crop == "bbox" else (0, 0, *img.size)
    left, top, right, bottom = box
    if box != (0, 0, *img.size):
        img = img.crop(box)
        mask = None if mask is None else mask[top:bottom, left:right]
    kp = tree.part_locs[image_id].copy()
    inside = (kp[:, 0] >= left) & (kp[:, 0] < right) & (kp[:, 1] >= top) & (kp[:, 1] < bottom)
    kp[:, 2] *= inside
    scale = np.array([size / (right - left), size / (bottom - top)], dtype=np.float32)
    kp[:, :2] = np.where(kp[:, 2:] > 0, (kp[:, :2] - (left, top)) * scale, 0.0)
    return Sample(resize_rgb(img, size), None if mask is None else resize_mask(mask, size), kp, found)


def find_segmentations(cfg: "CUB.Config", root: Path) -> Path | None:
    """The segmentations folder: the one given, else ``segmentations/`` beside the tree, if any."""
    if cfg.segmentations is not None:
        seg = Path(cfg.segmentations).expanduser()
        if not seg.is_dir():
            raise DataError(f"cub segmentations folder {cfg.segmentations} does not exist or is not a "
                            f"folder; give the segmentations/ folder that segmentations.tgz extracts to")
        return seg
    beside = root.parent / "segmentations"
    if beside.is_dir():
        return beside
    log.warning("cub: no segmentations/ folder beside %s: the dataset has no masks, and its "
                "localisation rows say 'not applicable' (extract segmentations.tgz there)", root)
    return None


@SOURCES.register("cub")
class CUB:
    """CUB-200-2011 in its distributed layout: official split, masks, named part locations."""

    class Config(DatasetConfig):
        """``source: cub``; paths are relative to the working directory (module docstring)."""

        source: str = "cub"
        path: str
        segmentations: str | None = None
        mask_threshold: float = Field(0.5, ge=0, lt=1)
        classes: int | list[int | str] | None = None
        crop: Literal["none", "bbox"] = "none"

    @classmethod
    def build(cls, cfg: "CUB.Config", image_size: int):
        tree = read_tree(cfg.path)
        chosen = select_classes(tree, cfg.classes, "cub")
        segmentations = find_segmentations(cfg, tree.root)
        label_of = {c: i for i, c in enumerate(chosen)}
        splits, missing = {}, []
        for split in ("train", "test"):
            ids = [i for i in sorted(tree.images) if tree.labels[i] in label_of and tree.train[i] == (split == "train")]
            samples = [load_sample(tree, i, size=image_size, segmentations=segmentations, crop=cfg.crop,
                                   threshold=cfg.mask_threshold)
                       for i in tqdm(ids, desc=f"cub {split}", leave=False)]
            missing += [tree.images[i] for i, s in zip(ids, samples) if segmentations is not None and not s.has_segmentation]
            splits[split] = {"images": [s.image for s in samples],
                             "labels": [label_of[tree.labels[i]] for i in ids],
                             "masks": None if segmentations is None else [s.mask for s in samples],
                             "keypoints": [s.keypoints for s in samples]}
        if missing:
            log.warning("cub: %d image(s) have no segmentation in %s (first: %s); their masks are empty, "
                        "and the localisation metrics skip and count them", len(missing), segmentations,
                        missing[0])
        return assemble(splits, [tree.classes[c] for c in chosen], f"cub {tree.root}",
                        keypoint_names=tree.part_names)
