"""Datasets: sources (``SOURCES`` registry), the prepared on-disk form, and torch access.

A params entry ``datasets.<name>: {source: ..., ...}`` names a source registered in
:data:`SOURCES`; each source is a class with a ``Config`` (a
:class:`~kmx_eval.schema.DatasetConfig` subclass; unknown keys are errors) and
``build(cfg, image_size) -> datasets.DatasetDict`` with splits ``train`` and ``test`` and columns
``image`` (RGB, square, at the model's input size), ``label`` (ClassLabel), optional ``mask``
(L, 0/255 object mask), optional ``parts`` (L, part ids 1..P, 0 background) and optional
``keypoints`` (named part locations, :func:`load_keypoints`).

Sources:

- ``synthetic`` (:mod:`.synthetic`): objects made of parts on cluttered backgrounds, with exact
  masks and part maps; the embedded default, no download.
- ``digits`` (:mod:`.digits`): scikit-learn's bundled handwritten digits, ink as mask.
- ``imagefolder`` (:mod:`.imagefolder`): your images in class folders, optional mask folder.
- ``hf`` (:mod:`.hf`): a Hugging Face dataset, from the hub or a local ``save_to_disk`` copy.
- ``cub`` (:mod:`.cub`): CUB-200-2011 in its distributed layout, with segmentations as masks and
  the 15 annotated part locations as ``keypoints``.

Adding a source is one module with one registered class, imported below.
"""

from kmx_eval.data.base import SOURCES, stratified_split
from kmx_eval.data.prepared import (
    check_image_size,
    class_counts,
    class_names,
    has_masks,
    has_keypoints,
    has_parts,
    keypoint_names,
    load_keypoints,
    load_prepared,
    prepare_dataset,
    save_prepared,
)
from kmx_eval.data.torch_data import MEAN, STD, ImageDataset, decode_column, load_batch, normalise

# Imported for their registration in SOURCES.
from kmx_eval.data import cub, digits, hf, imagefolder, synthetic  # noqa: E402,F401  isort: skip

__all__ = [
    "SOURCES",
    "MEAN",
    "STD",
    "ImageDataset",
    "check_image_size",
    "class_counts",
    "class_names",
    "decode_column",
    "has_masks",
    "has_keypoints",
    "has_parts",
    "keypoint_names",
    "load_keypoints",
    "load_batch",
    "load_prepared",
    "normalise",
    "prepare_dataset",
    "save_prepared",
    "stratified_split",
]
