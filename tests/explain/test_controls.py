"""Controls: the oracle map on the explained model's grid, and the explained class."""

import numpy as np
import pytest
import torch

from kmx_eval.explain.controls import explained_classes, explained_grid, oracle_maps


def test_oracle_is_the_mask_averaged_onto_the_grid_and_upsampled():
    masks = np.zeros((2, 12, 12), dtype=np.uint8)
    masks[0, :6, :6] = 1  # exactly one cell of a 2 x 2 grid
    masks[1, 3:9, 3:9] = 1  # a quarter of each cell
    on_grid = oracle_maps(masks, (2, 2))
    assert on_grid.shape == (2, 12, 12) and on_grid.dtype == np.float32
    assert on_grid[0, 0, 0] == pytest.approx(1.0) and on_grid[0, -1, -1] == pytest.approx(0.0)
    assert np.allclose(on_grid[1], 0.25)  # the mask's share in every cell: a constant map
    np.testing.assert_array_equal(oracle_maps(masks, (12, 12)), masks.astype(np.float32))  # pixel grid
    # the ceiling of a coarse grid is coarser than the mask: its mass leaks outside the object
    inside = (on_grid[0] * masks[0]).sum() / on_grid[0].sum()
    assert 0.5 < inside < 1.0


def test_grid_of_the_cnn_and_of_a_kmeans_head(resnet18, kmeans_module, images):
    assert explained_grid(resnet18, images) == (2, 2)  # B4 of a 64 px input
    grid = explained_grid(kmeans_module, images)
    assert grid == tuple(kmeans_module.features(images[:1]).shape[-2:])


def test_explained_class_is_the_prediction_or_the_label(resnet18, images):
    labels = np.array([0, 1, 2, 1])
    with torch.no_grad():
        predicted = resnet18(images).argmax(1).numpy()
    np.testing.assert_array_equal(explained_classes(resnet18, images, labels, "predicted"), predicted)
    np.testing.assert_array_equal(explained_classes(resnet18, images, labels, "label"), labels)
    with pytest.raises(ValueError, match="explain.target"):
        explained_classes(resnet18, images, labels, "truth")


def test_occlusion_is_the_score_drop_of_each_cell_of_the_models_own_grid(resnet18, kmeans_module, images):
    """Occlusion (the faithfulness control's informed map) is constant on each cell of the explained
    grid and equals f(x)_c - f(x with that cell black)_c, computed here by hand; any model."""
    from kmx_eval.explain import build_explainer
    from kmx_eval.metrics.faithfulness import cell_labels

    occlusion = build_explainer("occlusion", None, 0)
    target = torch.tensor([0, 1, 2, 0])
    for model in (resnet18, kmeans_module):
        grid = explained_grid(model, images)
        maps = occlusion.explain(model, images, target)
        labels = cell_labels(*images.shape[-2:], grid)
        with torch.no_grad():
            full = model(images)[torch.arange(4), target]
            cell = 1 if labels.max() >= 1 else 0
            x = images.clone()
            black = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
            inside = torch.from_numpy(labels == cell)
            x[:, :, inside] = black[:, :, inside]
            drop = (full - model(x)[torch.arange(4), target]).numpy()
        for c in range(labels.max() + 1):  # one value per cell
            values = maps[:, labels == c]
            assert np.allclose(values, values[:, :1], atol=1e-5)
        assert np.allclose(maps[:, labels == cell][:, 0], drop, rtol=1e-4, atol=1e-4)
