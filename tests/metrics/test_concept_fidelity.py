"""Concept fidelity on constructed concept and part maps."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmx_eval.data.torch_data import MEAN, STD
from kmx_eval.metrics import concept_fidelity as cf


def _parts(n=4, size=24, seed=0):
    rng = np.random.default_rng(seed)
    parts = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        r, c = rng.integers(2, 8, 2)
        parts[i, r:r + 8, c:c + 6] = 1
        parts[i, r:r + 8, c + 6:c + 12] = 2
        parts[i, r + 8:r + 12, c:c + 12] = 3
    return parts


def test_identical_maps_score_one_even_after_renaming_concepts():
    parts = _parts()
    concepts = (parts * 3 + 5).astype(np.int16)  # same partition, other ids
    for fn in (cf.concept_purity, cf.concept_ari, cf.concept_nmi):
        assert np.allclose(fn(concepts, parts), 1.0)
    assert cf.pooled_concept_purity(concepts, parts) == 1.0


def test_random_concepts_score_near_zero_agreement():
    parts = _parts()
    concepts = np.random.default_rng(1).integers(0, 8, parts.shape)
    assert np.all(np.abs(cf.concept_ari(concepts, parts)) < 0.02)
    assert np.all(cf.concept_nmi(concepts, parts) < 0.05)
    # purity of random concepts is about the share of the largest part (background here)
    bg_share = (parts == 0).mean(axis=(1, 2))
    assert np.allclose(cf.concept_purity(concepts, parts), bg_share, atol=0.1)


def test_splitting_a_part_keeps_purity_but_lowers_ari():
    parts = _parts(n=1)
    concepts = parts.copy()
    concepts[0, :, :12][parts[0, :, :12] == 0] = 9  # background split into two concepts
    assert cf.concept_purity(concepts, parts)[0] == 1.0
    assert cf.concept_ari(concepts, parts)[0] < 1.0


def test_purity_is_pixel_weighted_over_concepts():
    parts = np.array([[[0, 0, 0, 1]]])
    concepts = np.array([[[0, 0, 1, 1]]])  # concept 0: pure (2/2); concept 1: half (1/2)
    assert cf.concept_purity(concepts, parts)[0] == pytest.approx(3 / 4)


def test_mask_as_two_part_map_and_trivial_maps_are_nan():
    mask = np.zeros((2, 10, 10), dtype=np.uint8)
    mask[0, 2:6, 2:6] = 255
    parts = cf.part_map_from_mask(mask)
    assert set(np.unique(parts)) == {0, 1}
    concepts = parts.copy()
    ari = cf.concept_ari(concepts, parts)
    assert ari[0] == 1.0 and np.isnan(ari[1])  # image 1 has an empty mask: one label only
    assert cf.trivial_part_maps(parts).tolist() == [False, True]


def test_mask_restricts_the_scored_pixels():
    parts = _parts(n=1)
    # one concept covers the whole object; the background gets random concepts
    concepts = np.where(parts > 0, 1, np.random.default_rng(0).integers(2, 6, parts.shape))
    inside = parts > 0
    largest_part_share = np.bincount(parts[inside]).max() / inside.sum()
    assert cf.concept_purity(concepts, parts, mask=inside)[0] == pytest.approx(largest_part_share)
    assert cf.concept_purity(concepts, parts)[0] > largest_part_share  # background concepts are pure
    with pytest.raises(ValueError, match="must"):
        cf.concept_ari(concepts[:, :5], parts)


# ------------------------------------------------------------------ floor and ceiling
def _two_parts(n=3, size=24, seed=0):
    """Background 0 and an object of two parts (1 left half, 2 right half) at a random place."""
    rng = np.random.default_rng(seed)
    p = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        r, c = rng.integers(2, size // 2, 2)
        p[i, r:r + 8, c:c + 4] = 1
        p[i, r:r + 8, c + 4:c + 8] = 2
    return p


def test_grid_ceiling_equals_the_part_map_at_full_resolution_and_drops_on_coarse_grids():
    parts = _two_parts()
    obj = parts > 0
    full = cf.grid_ceiling_maps(parts, (24, 24))
    assert np.array_equal(full, parts)
    fine, coarse = (cf.concept_scores(cf.grid_ceiling_maps(parts, g), parts, obj) for g in ((12, 12), (3, 3)))
    assert np.nanmean(fine["ari"]) > np.nanmean(coarse["ari"])
    assert np.nanmean(fine["purity"]) >= np.nanmean(coarse["purity"])
    # nearest upsampling of a grid map is what grid_cells inverts: the ceiling is constant per cell
    cells = cf.grid_cells(24, 3)
    assert list(np.bincount(cells)) == [8, 8, 8]


def test_shuffled_maps_score_near_chance_and_keep_concept_sizes():
    parts = _two_parts(n=4, seed=1)
    obj = parts > 0
    shuffled = cf.shuffled_concept_maps(parts, obj, seed=0)
    assert np.array_equal(shuffled[~obj], parts[~obj])  # outside the mask nothing moves
    for i in range(4):
        assert np.array_equal(np.bincount(shuffled[i][obj[i]], minlength=3), np.bincount(parts[i][obj[i]], minlength=3))
    perfect = cf.concept_scores(parts, parts, obj)
    chance = cf.concept_scores(shuffled, parts, obj)
    assert np.nanmean(perfect["ari"]) == 1.0 and abs(np.nanmean(chance["ari"])) < 0.2
    assert np.nanmean(chance["nmi"]) < 0.3


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_concept_scores_do_not_depend_on_concept_ids(seed):
    """Invariance: renaming concept ids one-to-one leaves purity, ARI, NMI and AMI unchanged (AMI, a
    difference of nearly equal numbers near 0, up to 1e-15 absolute)."""
    rng = np.random.default_rng(seed)
    parts = _two_parts(n=2, seed=seed)
    concepts = rng.integers(0, 5, parts.shape)
    renamed = rng.permutation(50)[:5][concepts]
    for region in (None, parts > 0):
        a, b = cf.concept_scores(concepts, parts, region), cf.concept_scores(renamed, parts, region)
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-15)


def test_a_single_part_inside_the_mask_gives_nan_not_a_trivial_one():
    parts = (_two_parts(n=2) > 0).astype(np.int64)  # mask only: inside it one label
    scores = cf.concept_scores(parts, parts, parts > 0)
    assert np.isnan(scores["purity"]).all() and np.isnan(scores["ari"]).all()


def test_the_object_ceiling_ignores_background_majorities():
    """A small object inside one coarse cell: with background counted the cell is background and
    the ceiling inside the object is one label; ignoring it, the cell holds the object's main part."""
    parts = np.zeros((1, 16, 16), dtype=np.int64)
    parts[0, 2:6, 2:4] = 1
    parts[0, 2:6, 4:5] = 2
    plain = cf.grid_ceiling_maps(parts, (2, 2))
    assert (plain == 0).all()
    inside = cf.grid_ceiling_maps(parts, (2, 2), ignore_background=True)
    assert inside[0, 3, 3] == 1 and inside[0, 12, 12] == 0


def test_ami_of_a_random_partition_is_about_zero_where_nmi_is_not():
    parts = _parts(n=4, size=16)
    concepts = np.random.default_rng(3).integers(0, 8, parts.shape)
    ami, nmi = cf.concept_ami(concepts, parts), cf.concept_nmi(concepts, parts)
    assert np.all(np.abs(ami) < 0.02) and abs(ami.mean()) < 0.005
    assert nmi.min() > 0.015 > 3 * abs(ami.mean())
    assert np.allclose(cf.concept_ami(parts * 3 + 1, parts), 1.0)
    assert "ami" in cf.concept_scores(concepts, parts)


def _coloured(parts, seed=0):
    """RGB images (n, H, W, 3) in [0, 1] whose every part has its own colour, plus a little noise."""
    colours = np.array([[0.1, 0.1, 0.1], [0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9]])
    noise = np.random.default_rng(seed).normal(0, 0.02, parts.shape + (3,))
    return np.clip(colours[parts] + noise, 0, 1)


@pytest.mark.parametrize("k", [4, 6, 9])
def test_each_floor_is_computed_with_the_requested_number_of_concepts(k):
    parts = _parts(n=3, size=48)
    rgb = _coloured(parts)
    colour = cf.colour_kmeans_maps(rgb, k, seed=0)
    assert [len(np.unique(c)) for c in colour] == [k] * 3
    grid = cf.grid_label_maps(parts.shape, k)
    assert [len(np.unique(g)) for g in grid] == [k] * 3
    rows, cols = cf.grid_shape(k)
    assert rows * cols == k and rows <= cols
    # SLIC seeds about k centres: the segment count stays near the request
    segments = [len(np.unique(s)) for s in cf.slic_maps(rgb, k)]
    assert all(k / 3 <= n <= 3 * k for n in segments), segments
    more = [len(np.unique(s)) for s in cf.slic_maps(rgb, 4 * k)]
    assert np.mean(more) > np.mean(segments)


def test_the_colour_floor_recovers_a_colour_defined_part_map_and_can_win():
    parts = _parts(n=3, size=48)
    x = (np.moveaxis(_coloured(parts), -1, 1) - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    floors = cf.floor_maps(x, 4, seed=0)
    assert set(floors) == set(cf.CONCEPT_FLOORS)
    assert np.allclose(cf.concept_ami(floors["floor_colour"], parts), 1.0)
    # the grid floor knows nothing of the colours: far lower; a concept map must beat the colour floor
    assert np.all(cf.concept_ami(floors["floor_grid"], parts) < 0.5)
    assert np.allclose(cf.rgb_images(x), _coloured(parts))


def test_the_floors_are_reference_rows_of_the_concept_table():
    from kmx_eval.metrics.evaluation import EvaluationTables  # the table side of the same floors

    parts = _parts(n=3, size=48)
    x = (np.moveaxis(_coloured(parts), -1, 1) - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    t = EvaluationTables("d", "B4", n_resamples=50, confidence=0.9)
    t.add_concepts(0, {"concepts_global": (parts > 0).astype(np.int16)}, parts=parts, masks=parts > 0,
                   sample_ids=np.arange(3), grid=(6, 6), images=x, n_concepts=4)
    df = t.frames()[0].set_index(["method", "metric"])
    for floor in cf.CONCEPT_FLOORS:
        assert "K = 4 (floor)" in df.loc[(floor, "concept_ami_image"), "note"]
    assert df.loc[("floor_colour", "concept_ami_image"), "value"] == pytest.approx(1.0)
    assert df.loc[("floor_colour", "concept_ami_image"), "value"] > df.loc[("concepts_global", "concept_ami_image"), "value"]


def test_the_chance_of_ami_is_zero_and_the_shuffles_average_to_it():
    parts = _parts(n=2, size=16)
    concepts = (parts + np.random.default_rng(0).integers(0, 2, parts.shape)).astype(np.int64)
    chance = cf.shuffled_chance(concepts, parts, seed=0)
    assert set(chance) == set(cf.SCORES) and np.all(chance["ami"] == 0.0)
    shuffles = np.mean([cf.concept_ami(cf.shuffled_concept_maps(concepts, seed=s), parts) for s in range(40)], axis=0)
    assert np.all(np.abs(shuffles) < 0.01)
    assert set(cf.concept_scores(concepts, parts, scores=["ari"])) == {"ari"}
