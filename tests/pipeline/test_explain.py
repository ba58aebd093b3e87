"""The maps file's arrays: the shared evaluation images, and a k-means head's maps with its concepts."""

from __future__ import annotations

import numpy as np
import torch

from kmx_eval.config import ExplainConfig
from kmx_eval.explain import build_explainer, evaluation_subset
from kmx_eval.explain.concepts import ConceptModel, concept_maps
from kmx_eval.pipeline.explain import evaluation_images, kmeans_head_maps

N_CLASSES = 3  # as in conftest.py


def _test_split(n: int, size: int = 16):
    from kmx_eval.data.base import assemble

    rng = np.random.default_rng(0)
    masks = [np.pad(np.ones((4, 4), np.uint8), ((i % 8, 12 - i % 8), (2, 10))) for i in range(n)]
    split = {"images": [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)],
             "labels": [i % N_CLASSES for i in range(n)], "masks": masks}
    return assemble({"train": split, "test": split}, ["a", "b", "c"], "toy")["test"]


def test_evaluation_images_are_the_datasets_seeded_subset():
    test = _test_split(10)
    indices, x, labels, masks = evaluation_images(test, 4, seed=7)
    np.testing.assert_array_equal(indices, evaluation_subset(10, 4, 7))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, indices % N_CLASSES)
    assert masks.shape == (4, 16, 16) and masks.dtype == np.uint8
    np.testing.assert_array_equal(masks.sum(axis=(1, 2)), [16] * 4)
    # the same images again, and other ones for another dataset seed
    np.testing.assert_array_equal(evaluation_images(test, 4, seed=7)[0], indices)
    assert not np.array_equal(evaluation_images(test, 4, seed=8)[0], indices)


def test_kmeans_head_maps_add_each_scopes_concepts_for_the_explained_class(kmeans_module, images):
    with torch.no_grad():
        F = kmeans_module.features(images)
    labels = np.array([0, 1, 2, 1])
    concepts = {}
    for scope in ("global", "class"):
        model = ConceptModel(n_concepts=2, scope=scope, random_state=0, batch_size=16)
        model.fit_stream([(F, labels)], 8, np.random.default_rng(0), progress=False)
        concepts[scope] = model
    cfg = ExplainConfig(batch_size=2)
    explainers = {"margin": build_explainer("margin", cfg, 0)}
    arrays = kmeans_head_maps(kmeans_module, explainers, concepts, x=images, labels=labels, masks=None,
                              indices=np.arange(4), target="label", batch_size=2)
    assert set(arrays) == {"indices", "targets", "predictions", "labels", "target", "margin",
                           "concepts_global", "concepts_class"}
    np.testing.assert_array_equal(arrays["targets"], labels)  # explain.target: label
    for scope, model in concepts.items():
        ids = arrays[f"concepts_{scope}"]
        assert ids.dtype == np.int16 and ids.shape == (4, 64, 64)
        np.testing.assert_array_equal(ids, concept_maps(kmeans_module, model, images, labels=labels, batch_size=2))
    # Class-scoped ids belong to the explained class (2 concepts per class).
    for ids, t in zip(arrays["concepts_class"], labels):
        assert set(np.unique(ids)) <= {2 * t, 2 * t + 1}
