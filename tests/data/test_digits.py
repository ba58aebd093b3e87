"""The digits source: sizes, labels, ink masks and the seeded stratified split."""

from __future__ import annotations

import numpy as np
import pytest

SIZE = 32


@pytest.fixture(scope="module")
def digits_dd():
    from kmx_eval.data import SOURCES, prepare_dataset

    return prepare_dataset(SOURCES.get("digits").Config(source="digits"), SIZE)


def test_shapes_labels_and_split_sizes(digits_dd):
    from kmx_eval.data import class_names, decode_column, has_masks, has_parts

    assert class_names(digits_dd) == [str(d) for d in range(10)]
    assert has_masks(digits_dd) and not has_parts(digits_dd)
    assert len(digits_dd["train"]) + len(digits_dd["test"]) == 1797
    counts = {s: np.bincount(digits_dd[s]["label"], minlength=10) for s in ("train", "test")}
    total = counts["train"] + counts["test"]
    # Stratified: each class contributes round(0.25 n_c) test images.
    np.testing.assert_array_equal(counts["test"], np.round(0.25 * total).astype(int))
    images = decode_column(digits_dd["test"], "image")
    assert images.shape == (len(digits_dd["test"]), SIZE, SIZE, 3) and images.dtype == np.uint8
    # Grey digits replicated to RGB.
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_mask_is_the_bright_ink(digits_dd):
    from kmx_eval.data import decode_column

    images = decode_column(digits_dd["train"], "image")[..., 0].astype(float)
    masks = decode_column(digits_dd["train"], "mask")
    assert set(np.unique(masks)) == {0, 255}
    cover = (masks == 255).mean(axis=(1, 2))
    assert cover.min() > 0.03 and cover.max() < 0.8
    inside = np.array([im[m == 255].mean() for im, m in zip(images, masks)])
    outside = np.array([im[m == 0].mean() for im, m in zip(images, masks)])
    assert (inside > outside + 50).all()


def test_split_is_seeded():
    from kmx_eval.data import stratified_split

    labels = np.repeat(np.arange(3), [5, 8, 12])
    names = ["a", "b", "c"]
    a = stratified_split(labels, 0.25, 0, names, "x")
    b = stratified_split(labels, 0.25, 0, names, "x")
    c = stratified_split(labels, 0.25, 1, names, "x")
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    train, test = a
    assert np.intersect1d(train, test).size == 0 and np.union1d(train, test).size == labels.size
    assert np.bincount(labels[test]).tolist() == [1, 2, 3]
