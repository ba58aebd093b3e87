"""The imagefolder source: image modes, masks, splits and every user error it names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kmx_eval.errors import DataError

SIZE = 32
W, H = 20, 16  # non-square on purpose: images are stretched to SIZE x SIZE, masks alike


def _half(value_left, value_right, mode="L"):
    arr = np.full((H, W), value_right, dtype=np.uint8)
    arr[:, : W // 2] = value_left
    return Image.fromarray(arr).convert(mode) if mode != "L" else Image.fromarray(arr)


def _write_images(root: Path) -> dict[str, Path]:
    """Two classes of three images each, in six different modes and two formats."""
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir(parents=True)
    files = {
        "rgb": root / "cat" / "a.png",
        "grey": root / "cat" / "b.png",
        "palette": root / "cat" / "c.png",
        "rgba": root / "dog" / "d.png",
        "cmyk": root / "dog" / "e.jpg",
        "i16": root / "dog" / "f.png",
    }
    Image.new("RGB", (W, H), (255, 0, 0)).save(files["rgb"])
    Image.new("L", (W, H), 100).save(files["grey"])
    pal = Image.new("P", (W, H), 1)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(files["palette"])
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[..., 1] = 255
    rgba[:, W // 2:, 3] = 255  # left half fully transparent
    Image.fromarray(rgba).save(files["rgba"])
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(files["cmyk"], quality=95)
    Image.fromarray(np.full((H, W), 65535, dtype=np.uint16)).save(files["i16"])
    assert Image.open(files["i16"]).mode == "I;16" and Image.open(files["cmyk"]).mode == "CMYK"
    return files


def _write_masks(images: Path, masks: Path) -> None:
    """A left-half object mask per image; 0/1 for cats, 0/255 for dogs."""
    for path in images.rglob("*.*"):
        rel = path.relative_to(images).with_suffix(".png")
        (masks / rel.parent).mkdir(parents=True, exist_ok=True)
        _half(1 if rel.parts[0] == "cat" else 255, 0).save(masks / rel)


def _config(**kw):
    from kmx_eval.data import SOURCES

    return SOURCES.get("imagefolder").Config.model_validate({"source": "imagefolder", **kw})


def _build(**kw):
    from kmx_eval.data import prepare_dataset

    return prepare_dataset(_config(**kw), SIZE, name="mine")


def test_every_image_mode_becomes_rgb_at_the_input_size(tmp_path):
    from kmx_eval.data import class_names, decode_column, has_masks

    _write_images(tmp_path / "img")
    dd = _build(path=str(tmp_path / "img"), test_fraction=0.34, seed=3)
    assert class_names(dd) == ["cat", "dog"] and not has_masks(dd)
    assert [len(dd["train"]), len(dd["test"])] == [4, 2]
    assert sorted(dd["test"]["label"]) == [0, 1]  # stratified: one of each class
    images = np.concatenate([decode_column(dd[s]) for s in ("train", "test")])
    assert images.shape == (6, SIZE, SIZE, 3)
    colours = {tuple(int(v) for v in im.reshape(-1, 3).mean(0).round()) for im in images}
    assert (255, 0, 0) in colours  # RGB kept (and CMYK, below)
    assert (100, 100, 100) in colours  # L replicated
    assert (0, 0, 255) in colours  # P through its palette
    assert (255, 255, 255) in colours  # I;16 65535 -> 255
    # RGBA: transparent left half composited over black, opaque right half green.
    rgba = [im for im in images if im[:, -1, 1].mean() > 250 and im[:, 0].max() == 0]
    assert len(rgba) == 1
    # CMYK (0, 255, 255, 0) is red after conversion (JPEG noise aside), like the RGB image.
    red = [im for im in images if im[..., 0].mean() > 240 and im[..., 1:].mean() < 15]
    assert len(red) == 2


def test_masks_are_read_resized_and_stored_as_0_255(tmp_path):
    from kmx_eval.data import decode_column, has_masks, load_batch

    _write_images(tmp_path / "img")
    _write_masks(tmp_path / "img", tmp_path / "masks")
    dd = _build(path=str(tmp_path / "img"), masks=str(tmp_path / "masks"), test_fraction=0.34)
    assert has_masks(dd)
    expected = np.zeros((SIZE, SIZE), dtype=np.uint8)
    expected[:, : SIZE // 2] = 255
    for split in ("train", "test"):
        for mask in decode_column(dd[split], "mask"):
            np.testing.assert_array_equal(mask, expected)
    _, _, masks, parts = load_batch(dd["test"], [0, 1])
    assert parts is None and masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 1}


def test_train_and_test_folders_are_used_as_given(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / split / cls / f"{i}.png")
    dd = _build(path=str(tmp_path))
    assert np.bincount(dd["train"]["label"]).tolist() == [3, 3]
    assert np.bincount(dd["test"]["label"]).tolist() == [2, 2]


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        _build(path=str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(err.value) and str(err.value).startswith("datasets.mine")


def test_fewer_than_two_classes(tmp_path):
    (tmp_path / "cat").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / "cat" / f"{i}.png")
    with pytest.raises(DataError, match="1 class") as err:
        _build(path=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "datasets.mine" in str(err.value)


def test_flat_folder_without_class_folders(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    with pytest.raises(DataError, match="1 class") as err:
        _build(path=str(tmp_path))
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n this is not an image"], ids=["empty", "corrupt"])
def test_empty_or_corrupt_image_is_named(tmp_path, content):
    files = _write_images(tmp_path)
    files["grey"].write_bytes(content)
    with pytest.raises(DataError) as err:
        _build(path=str(tmp_path), test_fraction=0.34)
    assert str(files["grey"]) in str(err.value)
    assert "\n" not in str(err.value)


def test_class_with_too_few_images_for_the_split(tmp_path):
    files = _write_images(tmp_path)
    files["rgba"].unlink()
    files["cmyk"].unlink()
    with pytest.raises(DataError, match="class 'dog' has 1 image"):
        _build(path=str(tmp_path))


def test_missing_mask_is_named(tmp_path):
    _write_images(tmp_path / "img")
    _write_masks(tmp_path / "img", tmp_path / "masks")
    (tmp_path / "masks" / "dog" / "e.png").unlink()
    with pytest.raises(DataError, match="mask of .* is missing") as err:
        _build(path=str(tmp_path / "img"), masks=str(tmp_path / "masks"), test_fraction=0.34)
    assert str(tmp_path / "masks" / "dog" / "e.png") in str(err.value)


def test_mask_with_another_size_is_named(tmp_path):
    _write_images(tmp_path / "img")
    _write_masks(tmp_path / "img", tmp_path / "masks")
    bad = tmp_path / "masks" / "cat" / "b.png"
    Image.new("L", (W + 1, H), 0).save(bad)
    with pytest.raises(DataError, match="21x16 but its image") as err:
        _build(path=str(tmp_path / "img"), masks=str(tmp_path / "masks"), test_fraction=0.34)
    assert str(bad) in str(err.value)


def test_mask_with_other_values_is_named(tmp_path):
    _write_images(tmp_path / "img")
    _write_masks(tmp_path / "img", tmp_path / "masks")
    bad = tmp_path / "masks" / "dog" / "f.png"
    _half(128, 0).save(bad)
    with pytest.raises(DataError, match=r"\{0, 1\} or \{0, 255\}, found 0, 128") as err:
        _build(path=str(tmp_path / "img"), masks=str(tmp_path / "masks"), test_fraction=0.34)
    assert str(bad) in str(err.value)


def test_masks_may_use_any_image_extension(tmp_path):
    from kmx_eval.data.imagefolder import find_mask

    (tmp_path / "cat").mkdir()
    Image.new("L", (4, 4)).save(tmp_path / "cat" / "x.bmp")
    assert find_mask(tmp_path, Path("cat/x.jpg")) == tmp_path / "cat" / "x.bmp"
    Image.new("L", (4, 4)).save(tmp_path / "cat" / "x.png")
    assert find_mask(tmp_path, Path("cat/x.jpg")) == tmp_path / "cat" / "x.png"  # PNG preferred
    assert find_mask(tmp_path, Path("cat/y.jpg")) is None
