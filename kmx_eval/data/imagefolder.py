"""``imagefolder``: your own images, one sub-folder per class, optional parallel folder of masks.

Layout (the Hugging Face ``imagefolder`` convention)::

    path/cat/001.jpg  path/dog/002.png ...                 (seeded stratified split)
    path/train/cat/001.jpg ... path/test/cat/101.jpg ...   (the given split; ``validation/``
                                                            stands in for a missing ``test/``)
    masks/cat/001.png ...                                  (same relative path, any image
                                                            extension; values {0,1} or {0,255})

Files are listed and labelled by ``datasets.load_dataset("imagefolder", data_dir=path)``; every
image (and mask) is then decoded here, so that an empty or corrupt file is reported by name
before any training starts. Images in any mode become RGB (:func:`kmx_eval.data.images.to_rgb`)
and are resized to the model's square input size; masks are resized with nearest neighbour.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from kmx_eval.schema import DatasetConfig
from kmx_eval.data.base import SOURCES, assemble, check_class_count, stratified_split
from kmx_eval.data.images import (
    IMAGE_EXTENSIONS,
    binary_mask,
    open_image,
    resize_mask,
    resize_rgb,
    to_rgb,
)
from kmx_eval.errors import DataError

log = logging.getLogger("kmx_eval")


def _list_files(root: Path) -> dict[str, "object"]:
    """Splits, file paths and labels as listed by ``datasets``' imagefolder builder."""
    # datasets takes seconds to import: only where a split is built or read
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    # A private cache: nothing stale from an earlier listing of the same folder is reused, and
    # nothing is left behind in the user's cache (the listing is cheap to redo).
    cache = tempfile.mkdtemp(prefix="kmx-imagefolder-")
    try:
        try:
            dd = load_dataset("imagefolder", data_dir=str(root), cache_dir=cache)
        except (FileNotFoundError, ValueError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{root}: no images could be listed ({why}); expected class sub-folders "
                            f"of image files") from None
        out = {}
        for split, ds in dd.items():
            if "label" not in ds.features:
                raise DataError(
                    f"{root} has 1 class (no class sub-folders); put the images of each class in "
                    f"its own sub-folder, with at least 2 classes"
                )
            ds = ds.cast_column("image", ImageFeature(decode=False))
            names = list(ds.features["label"].names)
            paths = [Path(im["path"]) for im in ds["image"]]
            labels = np.asarray(ds["label"], dtype=np.int64)
            order = np.argsort([str(p) for p in paths], kind="stable")  # listing order is not a contract
            out[str(split)] = ([paths[i] for i in order], labels[order], names)
        return out
    finally:
        shutil.rmtree(cache, ignore_errors=True)


#: Folder names that ``datasets``' imagefolder builder reads as splits (root/train/<class>/...).
SPLIT_FOLDERS = {"train", "training", "test", "testing", "eval", "evaluation", "valid", "validation",
                 "val", "dev"}


def check_layout(root: Path) -> None:
    """Refuse images that sit deeper than ``root/<class>/`` (or ``root/<split>/<class>/``).

    The builder takes each image's parent folder as its class, so ``cat/photos/1.png`` and
    ``dog/photos/2.png`` would make one class ``photos`` (or, with other sub-folder names, classes
    named after them): the class folders must hold their images directly.
    """
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        parts = path.relative_to(root).parts
        depth = 3 if parts[0].lower() in SPLIT_FOLDERS else 2
        if len(parts) > depth:
            class_dir = root.joinpath(*parts[:depth - 1])
            raise DataError(
                f"{root}: image {path.relative_to(root)} sits in a sub-folder of its class folder "
                f"{class_dir.name}/; each class folder must hold its images directly "
                f"(<path>/<class>/<image> or <path>/train/<class>/<image>): move them up a level")


def find_mask(masks: Path, relative: Path) -> Path | None:
    """The mask of the image at ``relative``: ``masks/relative`` with any image extension.

    A ``.png`` is preferred when several extensions exist (it is lossless).
    """
    stem = masks / relative.with_suffix("")
    found = [stem.with_suffix(ext) for ext in IMAGE_EXTENSIONS if stem.with_suffix(ext).is_file()]
    if not found:
        found = [p for p in stem.parent.glob(stem.name + ".*") if p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found, key=lambda p: (p.suffix.lower() != ".png", str(p)))[0] if found else None


def load_images(paths: list[Path], root: Path, masks: Path | None, size: int):
    """Decode, convert and resize images (and their masks); errors name the offending file."""
    images, mask_arrays = [], []
    for path in tqdm(paths, desc=f"imagefolder {root.name}", leave=False):
        img = to_rgb(open_image(path, str(path)), str(path))
        images.append(resize_rgb(img, size))
        if masks is None:
            continue
        relative = path.relative_to(root)
        mpath = find_mask(masks, relative)
        if mpath is None:
            raise DataError(
                f"mask of {path} is missing: expected {masks / relative.with_suffix('.png')} "
                f"(any image extension)"
            )
        m = open_image(mpath, str(mpath))
        if m.size != img.size:
            raise DataError(
                f"mask {mpath} is {m.size[0]}x{m.size[1]} but its image {path} is "
                f"{img.size[0]}x{img.size[1]}; masks must have their image's size"
            )
        mask_arrays.append(resize_mask(binary_mask(m, f"mask {mpath}"), size))
    return images, (mask_arrays if masks is not None else None)


@SOURCES.register("imagefolder")
class ImageFolder:
    """Local images in class sub-folders, optionally with object masks."""

    class Config(DatasetConfig):
        """``source: imagefolder``; ``path`` and ``masks`` are relative to the working directory."""

        source: str = "imagefolder"
        path: str
        masks: str | None = None
        test_fraction: float = Field(0.2, gt=0, lt=1)

    @classmethod
    def build(cls, cfg: "ImageFolder.Config", image_size: int):
        # resolve(): the listing gives the files' real paths, so a path through a symlink must be
        # resolved too for each image's path relative to it (its mask's path) to exist.
        root = Path(cfg.path).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"imagefolder path {cfg.path} does not exist or is not a folder")
        masks = None
        if cfg.masks is not None:
            masks = Path(cfg.masks).expanduser().resolve()
            if not masks.is_dir():
                raise DataError(f"imagefolder masks folder {cfg.masks} does not exist or is not a folder")
        check_layout(root)
        listed = _list_files(root)
        names = listed[next(iter(listed))][2]
        where = f"imagefolder {root}"
        test_name = "test" if "test" in listed else "validation" if "validation" in listed else None
        if "train" in listed and test_name is not None:
            for split in ("train", test_name):
                if listed[split][2] != names:
                    raise DataError(f"{root}: train/ and {test_name}/ have different class folders")
            check_class_count(np.concatenate([listed["train"][1], listed[test_name][1]]), names, where)
            present = np.bincount(listed["train"][1], minlength=len(names))
            if (present == 0).any():
                missing = names[int(np.flatnonzero(present == 0)[0])]
                raise DataError(f"{root}/train has no image of class {missing!r}; every class needs "
                                f"training images")
            parts = {"train": listed["train"][:2], "test": listed[test_name][:2]}
        else:
            if len(listed) > 1:
                log.warning("%s: splits %s found; using all of them and splitting anew", root,
                            ", ".join(listed))
            paths = [p for split in listed.values() for p in split[0]]
            labels = np.concatenate([split[1] for split in listed.values()])
            check_class_count(labels, names, where)
            train, test = stratified_split(labels, cfg.test_fraction, cfg.seed, names, where)
            parts = {"train": ([paths[i] for i in train], labels[train]),
                     "test": ([paths[i] for i in test], labels[test])}
        splits = {}
        for split, (paths, labels) in parts.items():
            images, mask_arrays = load_images(paths, root, masks, image_size)
            splits[split] = {"images": images, "labels": labels, "masks": mask_arrays}
        return assemble(splits, names, where)
