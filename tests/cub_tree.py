"""A tiny CUB-200-2011 in exactly the layout Caltech distributes (for the cub source's tests).

``write_cub_tree(dest)`` writes ``dest/CUB_200_2011/`` (images of 3 classes, every list file,
``parts/``) and ``dest/segmentations/`` (soft grey PNGs, as CUB's are); ``write_archives`` packs
them as ``CUB_200_2011.tgz`` and ``segmentations.tgz``, the two downloads the README names.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross")
PARTS = ("beak", "left eye", "tail")
PER_CLASS = 3  # the first two of each class train, the third tests
W, H = 40, 30  # not square: stored images are stretched, masks and part locations alike
BOX = (4.0, 3.0, 30.0, 24.0)  # x, y, width, height of every bounding box
#: The image without a segmentation file, and the (image id, part id) annotated as not visible.
NO_SEGMENTATION = 5
NOT_VISIBLE = (2, 3)
#: Annotators' agreement values written in each segmentation (5 annotators: multiples of 51).
SOFT = (0, 102, 153, 255)


def image_rel(image_id: int) -> str:
    c = (image_id - 1) // PER_CLASS
    return f"{CLASSES[c]}/{CLASSES[c].split('.')[1]}_{image_id:04d}_{100 + image_id}.jpg"


def part_location(image_id: int, part_id: int) -> tuple[float, float]:
    """Inside the bounding box, distinct per image and part."""
    return 6.0 + 8.0 * part_id + image_id % 3, 5.0 + 5.0 * part_id + image_id % 2


def soft_segmentation(image_id: int) -> np.ndarray:
    """Four vertical bands of agreement 0, 2/5, 3/5, 5/5, shifted per image."""
    band = (np.arange(W) + image_id) * len(SOFT) // (W + PER_CLASS * len(CLASSES))
    return np.broadcast_to(np.asarray(SOFT, dtype=np.uint8)[band], (H, W)).copy()


def write_cub_tree(dest: Path) -> Path:
    """Write the tiny tree under ``dest``; returns ``dest / "CUB_200_2011"``."""
    root, seg = dest / "CUB_200_2011", dest / "segmentations"
    rng = np.random.default_rng(0)
    n = PER_CLASS * len(CLASSES)
    lists = {name: [] for name in ("images", "image_class_labels", "train_test_split", "bounding_boxes")}
    locs = []
    for i in range(1, n + 1):
        rel = image_rel(i)
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "images" / rel, quality=95)
        if i != NO_SEGMENTATION:
            (seg / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(soft_segmentation(i)).save((seg / rel).with_suffix(".png"))
        lists["images"].append(f"{i} {rel}")
        lists["image_class_labels"].append(f"{i} {(i - 1) // PER_CLASS + 1}")
        lists["train_test_split"].append(f"{i} {int((i - 1) % PER_CLASS < 2)}")
        lists["bounding_boxes"].append(f"{i} " + " ".join(f"{v:.1f}" for v in BOX))
        for p in range(1, len(PARTS) + 1):
            visible = (i, p) != NOT_VISIBLE
            x, y = part_location(i, p) if visible else (0.0, 0.0)
            locs.append(f"{i} {p} {x:.1f} {y:.1f} {int(visible)}")
    for name, lines in lists.items():
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("".join(f"{c + 1} {name}\n" for c, name in enumerate(CLASSES)))
    (root / "parts").mkdir()
    (root / "parts" / "parts.txt").write_text("".join(f"{p + 1} {name}\n" for p, name in enumerate(PARTS)))
    (root / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    (root / "README").write_text("A tiny stand-in for CUB-200-2011, written by tests/cub_tree.py\n")
    return root


def write_archives(dest: Path) -> None:
    """``dest/CUB_200_2011.tgz`` and ``dest/segmentations.tgz``, packed as Caltech packs them."""
    tree = dest / "tree"
    write_cub_tree(tree)
    (tree / "attributes.txt").write_text("1 has_bill_shape::curved_(up_or_down)\n")
    with tarfile.open(dest / "CUB_200_2011.tgz", "w:gz") as tar:
        tar.add(tree / "CUB_200_2011", arcname="CUB_200_2011")
        tar.add(tree / "attributes.txt", arcname="attributes.txt")
    with tarfile.open(dest / "segmentations.tgz", "w:gz") as tar:
        tar.add(tree / "segmentations", arcname="segmentations")
