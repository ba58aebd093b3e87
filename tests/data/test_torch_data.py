"""ImageDataset, load_batch, and saving/loading prepared datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kmx_eval.errors import KmxError


def _unnormalise(x: torch.Tensor) -> np.ndarray:
    from kmx_eval.data import MEAN, STD

    mean = torch.tensor(MEAN).view(-1, 1, 1)
    std = torch.tensor(STD).view(-1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8).movedim(-3, -1).numpy()


def test_imagenet_constants():
    from kmx_eval.data import MEAN, STD

    assert MEAN == (0.485, 0.456, 0.406) and STD == (0.229, 0.224, 0.225)


def test_items_are_normalised_images_with_label_and_index(synthetic_dd, size):
    from kmx_eval.data import MEAN, STD, ImageDataset, decode_column

    split = synthetic_dd["test"]
    ds = ImageDataset(split)
    assert len(ds) == len(split)
    x, label, index = ds[4]
    assert x.dtype == torch.float32 and x.shape == (3, size, size)
    assert isinstance(label, int) and label == split[4]["label"] and index == 4
    np.testing.assert_array_equal(_unnormalise(x), decode_column(split)[4])
    # x = (rgb / 255 - MEAN) / STD per channel.
    raw = decode_column(split)[4].astype(np.float32) / 255
    expected = (raw - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-5)


def _symmetries(img: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square applied to an (H, W, 3) image."""
    out = []
    for flipped in (img, img[:, ::-1]):
        for k in range(4):
            out.append(np.rot90(flipped, k, axes=(0, 1)))
    return out


def test_augmentation_is_seeded_and_a_square_symmetry(synthetic_dd):
    from kmx_eval.data import ImageDataset, decode_column

    split = synthetic_dd["train"]
    original = decode_column(split)[0]
    candidates = _symmetries(original)
    seen = set()
    a = ImageDataset(split, augment=True, generator=torch.Generator().manual_seed(5))
    b = ImageDataset(split, augment=True, generator=torch.Generator().manual_seed(5))
    for _ in range(40):
        xa, xb = a[0][0], b[0][0]
        assert torch.equal(xa, xb)
        img = _unnormalise(xa)
        match = [i for i, c in enumerate(candidates) if np.array_equal(img, c)]
        assert match, "augmented image is not a flip/90-degree rotation of the original"
        seen.add(match[0])
    assert len(seen) >= 6  # the draws reach (nearly) all 8 symmetries
    # train=False turns augmentation off (evaluation), whatever `augment` says.
    off = ImageDataset(split, augment=True, train=False)
    np.testing.assert_array_equal(_unnormalise(off[0][0]), original)


def test_global_torch_seed_drives_augmentation_without_a_generator(synthetic_dd):
    from kmx_eval.data import ImageDataset

    ds = ImageDataset(synthetic_dd["train"], augment=True)
    torch.manual_seed(3)
    first = torch.stack([ds[i][0] for i in range(6)])
    torch.manual_seed(3)
    again = torch.stack([ds[i][0] for i in range(6)])
    assert torch.equal(first, again)


def test_dataloader_batches(synthetic_dd, size):
    from kmx_eval.data import ImageDataset

    loader = torch.utils.data.DataLoader(ImageDataset(synthetic_dd["train"]), batch_size=5)
    x, y, idx = next(iter(loader))
    assert x.shape == (5, 3, size, size) and y.dtype == torch.int64 and idx.tolist() == [0, 1, 2, 3, 4]


def test_load_batch_returns_images_labels_masks_and_parts(synthetic_dd, size):
    from kmx_eval.data import ImageDataset, decode_column, load_batch

    split = synthetic_dd["test"]
    idx = [7, 2, 5]
    x, y, masks, parts = load_batch(split, idx)
    assert x.shape == (3, 3, size, size) and x.dtype == torch.float32
    ds = ImageDataset(split)
    for row, i in enumerate(idx):
        assert torch.equal(x[row], ds[i][0])
    assert y.tolist() == [split[i]["label"] for i in idx]
    assert masks.dtype == np.uint8 and masks.shape == (3, size, size)
    np.testing.assert_array_equal(masks, (decode_column(split, "mask")[idx] // 255))
    assert parts.shape == (3, size, size) and np.issubdtype(parts.dtype, np.integer)
    np.testing.assert_array_equal(parts > 0, masks == 1)
    with pytest.raises(IndexError):
        load_batch(split, [len(split)])


def test_load_batch_without_masks_returns_none(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    from kmx_eval.data import has_masks, has_parts, load_batch

    feats = Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    split = Dataset.from_dict({"image": [PILImage.new("RGB", (8, 8), (i, 0, 0)) for i in range(4)],
                               "label": [0, 1, 0, 1]}, features=feats)
    x, y, masks, parts = load_batch(split, np.array([1, 3]))
    assert x.shape == (2, 3, 8, 8) and y.tolist() == [1, 1] and masks is None and parts is None
    assert not has_masks(split) and not has_parts(split)


def test_save_and_load_prepared_round_trip(synthetic_dd, tmp_path):
    from kmx_eval.data import class_names, decode_column, load_prepared, save_prepared

    out = tmp_path / "data" / "tiny"
    save_prepared(synthetic_dd, out)
    loaded = load_prepared(out)
    assert class_names(loaded) == class_names(synthetic_dd)
    for split in ("train", "test"):
        for col in ("image", "mask", "parts"):
            np.testing.assert_array_equal(decode_column(loaded[split], col),
                                          decode_column(synthetic_dd[split], col))
    # Saving again replaces the folder whole; nothing temporary is left beside it.
    save_prepared(synthetic_dd, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_failed_save_leaves_the_previous_output(synthetic_dd, tmp_path):
    from kmx_eval.data import load_prepared, save_prepared

    out = tmp_path / "tiny"
    save_prepared(synthetic_dd, out)

    class Broken:
        def save_to_disk(self, path):
            (Path(path) / "partial").mkdir(parents=True)
            raise OSError("disk went away")

    with pytest.raises(OSError):
        save_prepared(Broken(), out)
    assert len(load_prepared(out)["train"]) == len(synthetic_dd["train"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_load_prepared_missing_is_one_line(tmp_path):
    with pytest.raises(KmxError, match="does not exist; run the prepare stage") as err:
        from kmx_eval.data import load_prepared

        load_prepared(tmp_path / "data" / "shapes")
    assert "prepare@shapes" in str(err.value) and "\n" not in str(err.value)


def test_prepared_images_must_have_the_backbones_size(synthetic_dd, size):
    from kmx_eval.data import check_image_size
    from kmx_eval.errors import DataError

    assert check_image_size(synthetic_dd["train"], size, "data/toy") == size
    with pytest.raises(DataError, match=f"data/toy holds {size} px images but the backbone's image_size "
                                        f"is {size + 16}; rerun the prepare stage"):
        check_image_size(synthetic_dd["train"], size + 16, "data/toy")
