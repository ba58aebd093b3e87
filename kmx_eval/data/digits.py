"""``digits``: scikit-learn's bundled handwritten digits (real images, no download).

The 1,797 grey 8x8 images (values 0..16, ink bright) are scaled to 0..255, upscaled smoothly
(bicubic) to the model's input size and replicated to RGB. The object mask is the digit's ink:
``mask = upscaled intensity > MASK_THRESHOLD * 255``. No part maps. The train/test split is the
seeded stratified split of :func:`kmx_eval.data.base.stratified_split`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pydantic import Field

from kmx_eval.schema import DatasetConfig
from kmx_eval.data.base import SOURCES, assemble, stratified_split

#: Share of full intensity above which an upscaled pixel counts as ink (object).
MASK_THRESHOLD = 0.25


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """Upscale grey images ``(N, h, w)`` in 0..16 to uint8 ``(N, size, size)`` in 0..255 (bicubic).

    Bicubic interpolation overshoots near strokes, so values are clipped to 0..255.
    """
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, im in enumerate(np.asarray(images, dtype=np.float32) * (255.0 / 16.0)):
        big = Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)
        out[i] = np.clip(np.rint(np.asarray(big)), 0, 255).astype(np.uint8)
    return out


@SOURCES.register("digits")
class Digits:
    """scikit-learn ``load_digits``: 10 classes, 1,797 images, foreground masks."""

    class Config(DatasetConfig):
        """``source: digits``."""

        source: str = "digits"
        test_fraction: float = Field(0.25, gt=0, lt=1)

    @classmethod
    def build(cls, cfg: "Digits.Config", image_size: int):
        # sklearn takes a second to import: only where this source builds its splits
        from sklearn.datasets import load_digits

        bunch = load_digits()
        grey = upscale(bunch.images, image_size)
        labels = bunch.target.astype(np.int64)
        names = [str(int(n)) for n in bunch.target_names]
        where = "digits (scikit-learn load_digits)"
        train, test = stratified_split(labels, cfg.test_fraction, cfg.seed, names, where)
        splits = {}
        for name, idx in (("train", train), ("test", test)):
            splits[name] = {
                "images": [np.repeat(grey[i][..., None], 3, axis=2) for i in idx],
                "labels": labels[idx],
                "masks": [grey[i] > MASK_THRESHOLD * 255 for i in idx],
            }
        return assemble(splits, names, where)
