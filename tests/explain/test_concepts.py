"""Concept maps: streamed fitting, assignment, per-class ids, persistence, prototype concepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmx_eval import io
from kmx_eval.errors import DataError, KmxError
from kmx_eval.explain.concepts import ConceptModel, concept_maps, sample_locations

D, H, W = 4, 5, 5
#: Three well-separated concepts in R^4; class c's images draw from concepts {c, c+1 mod 3}.
CENTRES = 10.0 * np.eye(3, D, dtype=np.float32)


def _maps(n: int, seed: int, n_classes: int = 3):
    """Feature maps whose every location is one of CENTRES plus small noise; ids returned too."""
    g = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    ids = np.stack([g.choice([c % 3, (c + 1) % 3], size=(H, W)) for c in labels])
    F = CENTRES[ids] + 0.1 * g.standard_normal((n, H, W, D)).astype(np.float32)
    return torch.from_numpy(F).permute(0, 3, 1, 2).contiguous(), labels, ids


def _stream(n_batches: int, seed: int = 0):
    for b in range(n_batches):
        F, labels, _ = _maps(6, seed + b)
        yield F, labels


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings group the locations identically (up to renaming the ids)."""
    pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
    return len(pairs) == len(set(a.ravel().tolist())) == len(set(b.ravel().tolist()))


def test_sample_locations_draws_distinct_locations():
    F, _, _ = _maps(2, 0)
    v = sample_locations(F, 7, np.random.default_rng(0))
    assert v.shape == (2, 7, D)
    flat = F.permute(0, 2, 3, 1).reshape(2, -1, D).numpy()
    for i in range(2):
        rows = [int(np.flatnonzero((flat[i] == r).all(1))[0]) for r in v[i]]
        assert len(set(rows)) == 7
    assert sample_locations(F, 100, np.random.default_rng(0)).shape == (2, H * W, D)


def test_global_concepts_recover_the_planted_concepts():
    model = ConceptModel(n_concepts=3, scope="global", random_state=0, batch_size=64)
    model.fit_stream(_stream(8), locations_per_image=10, rng=np.random.default_rng(0), progress=False)
    assert model.centres_.shape == (3, D) and model.n_ids == 3
    assert model.n_seen_.tolist() == [8 * 6 * 10]
    F, _, truth = _maps(5, 100)
    ids = model.assign(F)
    assert ids.shape == (5, H, W) and ids.dtype == np.int64
    assert _same_partition(ids, truth)
    # Each fitted centre sits on one planted concept.
    nearest = np.linalg.norm(model.centres_[:, None] - CENTRES[None], axis=2).min(1)
    assert nearest.max() < 0.5


def test_fit_is_determined_by_the_seeds():
    def fit(seed):
        m = ConceptModel(n_concepts=3, random_state=seed, batch_size=32)
        return m.fit_stream(_stream(3), 5, np.random.default_rng(seed), progress=False).centres_

    np.testing.assert_array_equal(fit(0), fit(0))


def test_class_scope_gives_disjoint_ids_per_class():
    model = ConceptModel(n_concepts=2, scope="class", random_state=0, batch_size=32)
    model.fit_stream(_stream(6), locations_per_image=8, rng=np.random.default_rng(1), progress=False)
    assert model.n_ids == 6
    np.testing.assert_array_equal(model.owner_, [0, 0, 1, 1, 2, 2])
    F, labels, truth = _maps(6, 50)
    ids = model.assign(F, labels)
    for i, c in enumerate(labels):
        assert set(np.unique(ids[i])) <= {2 * c, 2 * c + 1}
        assert _same_partition(ids[i], truth[i])
    # The same image assigned for another class gets that class's ids.
    other = model.assign(F[:1], [2])
    assert set(np.unique(other)) <= {4, 5}
    with pytest.raises(KmxError, match="labels_or_pred"):
        model.assign(F)


def test_persistence_round_trip_without_pickle(tmp_path):
    for scope in ("global", "class"):
        model = ConceptModel(n_concepts=2, scope=scope, random_state=3, batch_size=40)
        model.fit_stream(_stream(4), 6, np.random.default_rng(0), progress=False)
        path = io.save_npz(tmp_path / f"{scope}.npz", {**model.to_arrays(), "prototype_concepts": np.zeros(1)})
        loaded = ConceptModel.from_arrays(io.load_npz(path))
        assert (loaded.scope, loaded.n_concepts, loaded.random_state) == (scope, 2, 3)
        np.testing.assert_array_equal(loaded.centres_, model.centres_)
        F, labels, _ = _maps(3, 9)
        np.testing.assert_array_equal(loaded.assign(F, labels), model.assign(F, labels))
    with pytest.raises(DataError, match="concepts/centres"):
        ConceptModel.from_arrays({"concepts/scope": np.array("global")})


def test_prototype_concepts_are_shares_per_prototype():
    model = ConceptModel(n_concepts=3, random_state=0, batch_size=32)
    model.fit_stream(_stream(2), 5, np.random.default_rng(0), progress=False)
    assignments = np.array([
        [[0, 0], [1, 1]],   # image 0 -> prototype (0, 0)
        [[2, 2], [2, 2]],   # image 1 -> prototype (0, 0)
        [[1, 1], [1, 1]],   # image 2 -> prototype (1, 1)
    ])
    share = model.prototype_concepts(assignments, np.array([[0, 0], [0, 0], [1, 1]]), n_classes=2,
                                     n_prototypes=2)
    assert share.shape == (2, 2, 3)
    np.testing.assert_allclose(share[0, 0], [2 / 8, 2 / 8, 4 / 8])
    np.testing.assert_allclose(share[1, 1], [0, 1, 0])
    assert np.isnan(share[0, 1]).all() and np.isnan(share[1, 0]).all()
    with pytest.raises(ValueError, match="outside"):
        model.prototype_concepts(assignments, np.array([[0, 0], [0, 2], [1, 1]]), 2, 2)


def test_too_few_locations_is_a_clear_error():
    model = ConceptModel(n_concepts=8, random_state=0, batch_size=16)
    F, labels, _ = _maps(1, 0)
    with pytest.raises(DataError, match="fewer than n_concepts=8"):
        model.fit_stream([(F, labels)], 3, np.random.default_rng(0), progress=False)
    with pytest.raises(KmxError, match="scope"):
        ConceptModel(scope="local").fit_stream([], 3, np.random.default_rng(0))


def test_concept_maps_at_input_resolution(kmeans_module, images):
    with torch.no_grad():
        F = kmeans_module.features(images)
    model = ConceptModel(n_concepts=4, random_state=0, batch_size=32)
    model.fit_stream([(F, np.zeros(len(F)))], 16, np.random.default_rng(0), progress=False)
    maps = concept_maps(kmeans_module, model, images, labels=[0, 1, 2, 1], batch_size=3, progress=False)
    assert maps.shape == (4, 64, 64) and maps.dtype == np.int64
    grid = model.assign(F)
    stride = 64 // F.shape[-1]
    # Nearest upsampling: every pixel of a grid cell carries the cell's concept id.
    np.testing.assert_array_equal(maps[:, ::stride, ::stride], grid)


def test_concept_ids_are_stored_as_int16_or_refused():
    from kmx_eval.explain.concepts import MAX_CONCEPT_ID, stored_concept_ids

    ids = np.array([[[0, 5], [MAX_CONCEPT_ID, 7]]], dtype=np.int64)
    stored = stored_concept_ids(ids)
    assert stored.dtype == np.int16
    np.testing.assert_array_equal(stored, ids)
    assert stored_concept_ids(np.zeros((0, 2, 2), np.int64)).dtype == np.int16  # no image: nothing to check
    # One id more would wrap round to -32768, another concept's id: refused, naming the setting.
    with pytest.raises(DataError, match="explain.concepts.n_concepts"):
        stored_concept_ids(ids + 1)
