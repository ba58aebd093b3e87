"""Decoding, colour conversion and resizing of user images and masks (imagefolder and hf sources).

Every image becomes an RGB uint8 array at the model's square input size; every mask a boolean
array at the same size. Problems are reported as :class:`~kmx_eval.errors.DataError` naming the
file (or sample) so the user can fix that one file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kmx_eval.errors import DataError

#: File extensions treated as images (those PIL decodes and ``datasets`` imagefolder lists).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_HIGH_DEPTH = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


def open_image(source: str | os.PathLike | bytes, where: str) -> Image.Image:
    """Open and fully decode an image from a path or encoded bytes.

    Decoding happens here (``Image.load``) rather than lazily, so an empty, truncated or corrupt
    file is reported now with its name instead of failing later inside a training loop.
    """
    try:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise DataError(f"{where} is empty (0 bytes); replace or remove it")
            img = Image.open(io.BytesIO(source))
        else:
            if Path(source).stat().st_size == 0:
                raise DataError(f"{where} is empty (0 bytes); replace or remove it")
            img = Image.open(source)
        img.load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{where} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{where} is not a readable image ({why}); replace or remove it") from None
    return img


def to_rgb(img: Image.Image, where: str) -> Image.Image:
    """Convert an image in any PIL mode to RGB.

    - EXIF orientation is applied first, so the pixels are those a viewer shows (and those a
      mask drawn in a viewer aligns with).
    - Transparency (RGBA, LA, P with a transparent colour) is composited over black,
      ``rgb = alpha * colour`` with alpha in [0, 1]: transparent pixels carry no signal, and this
      is what most pipelines' ``convert("RGB")`` gives for fully transparent black pixels.
    - High bit depths are mapped to 0..255 by the range of their type: 16-bit (``I;16*``) values
      are divided by 257 (65535 -> 255); 32-bit integers the same when their maximum exceeds 255;
      floats are taken as 0..1 when their maximum is at most 1, else as 0..255.
    - Everything else (L, 1, P, CMYK, YCbCr, ...) uses PIL's own conversion.
    """
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _HIGH_DEPTH:
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if mode.startswith("I;16") or (mode == "I" and top > 255):
            arr = arr / 257.0 if top <= 65535 else arr * (255.0 / top)
        elif mode == "F" and top <= 1.0:
            arr = arr * 255.0
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise DataError(f"{where}: cannot convert image mode {mode} to RGB ({exc})") from None


def resize_rgb(img: Image.Image, size: int) -> np.ndarray:
    """Resize an RGB image to ``size`` x ``size`` (bicubic, antialiased) as a uint8 array.

    The whole image is kept (no crop), so a non-square image is stretched; its mask is stretched
    the same way by :func:`resize_mask` and stays aligned.
    """
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8).copy()


def binary_mask(img: Image.Image, where: str) -> np.ndarray:
    """Read an object mask: values must be {0, 1} or {0, 255}; returns a boolean (H, W) array."""
    if img.mode not in ("1", "L", "P", "I", "I;16", "RGB", "RGBA", "LA"):
        raise DataError(f"{where}: mask mode {img.mode} is not supported; save it as a grey PNG")
    if img.mode == "P":
        # A palette mask stores indices; its 0/1 or 0/255 values are the indices themselves.
        arr = np.asarray(img)
    elif img.mode in ("I", "I;16"):
        arr = np.asarray(img, dtype=np.int64)
    elif img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"))
        colours = np.unique(rgb.reshape(-1, 3), axis=0)
        if (colours != colours[:, :1]).any():  # not grey: luminance would mix the colours
            shown = ", ".join(str(tuple(c)) for c in colours[:4].tolist()) + (", ..." if len(colours) > 4 else "")
            raise DataError(
                f"{where}: mask is an {img.mode} image with colours {shown}; masks are one channel: "
                f"save it as a grey (L) PNG with 0 for background and 255 (or 1) for the object"
            )
        arr = rgb[..., 0]
    else:
        arr = np.asarray(img.convert("L"))
    values = np.unique(arr)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
        jpeg = " (a JPEG mask blurs edges; save masks as PNG)" if where.lower().endswith((".jpg", ".jpeg")) else ""
        raise DataError(f"{where}: mask values must be {{0, 1}} or {{0, 255}}, found {shown}{jpeg}")
    return arr > 0


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a boolean mask to ``size`` x ``size`` with nearest neighbour (stays binary)."""
    img = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(img) > 127
