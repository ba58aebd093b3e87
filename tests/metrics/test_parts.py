"""The part pointing game and concept-part alignment (kmx_eval/metrics/parts.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmx_eval.metrics.parts import (concept_part_alignment, concept_part_alignment_ci, keypoint_masks,
                                     part_pointing_game, pointing_chance)

H, W = 12, 16


def _peak(row: int, col: int) -> np.ndarray:
    m = np.zeros((H, W))
    m[row, col] = 1.0
    return m


def test_the_maximum_on_a_visible_part_hits_and_elsewhere_misses():
    maps = np.stack([_peak(3, 5), _peak(3, 5), _peak(9, 14), np.ones((H, W)), _peak(0, 0)])
    kp = np.array([[[5.5, 3.2], [0, 0]]] * 5)  # part 0 at pixel (row 3, col 5); part 1 not visible
    visible = np.array([[True, False]] * 4 + [[False, False]])
    kp[1, 0] = (7.5, 3.5)  # two columns right of the peak
    hits = part_pointing_game(maps, kp, visible)
    np.testing.assert_array_equal(hits[:3], [1.0, 0.0, 0.0])
    assert np.isnan(hits[3]) and np.isnan(hits[4])  # a constant map, no visible part
    # within 1.5 px the neighbouring part is reached; a hidden part at the peak is never a hit
    assert part_pointing_game(maps[1:2], kp[1:2], visible[1:2], tolerance=1.5)[0] == 1.0
    hidden = np.array([[[5.5, 3.2], [14.5, 9.5]]])  # the hidden part 0 at the peak, part 1 far off
    assert part_pointing_game(maps[:1], hidden, np.array([[False, True]]))[0] == 0.0


def test_a_larger_top_k_region_reaches_the_second_highest_pixel():
    m = _peak(3, 5) + 0.5 * _peak(8, 2)
    kp, visible = np.array([[[2.5, 8.5]]]), np.array([[True]])
    assert part_pointing_game(m[None], kp, visible, top_k=1)[0] == 0.0
    assert part_pointing_game(m[None], kp, visible, top_k=2)[0] == 1.0


def test_the_chance_level_is_the_share_of_pixels_on_a_visible_part():
    kp, visible = np.array([[[5.5, 3.2], [0, 0]]]), np.array([[True, False]])
    assert pointing_chance((H, W), kp, visible)[0] == pytest.approx(1 / (H * W))
    assert pointing_chance((H, W), kp, visible, tolerance=1.0)[0] == pytest.approx(9 / (H * W))


maps_and_parts = st.integers(0, 2**31 - 1).map(lambda seed: np.random.default_rng(seed))


@settings(max_examples=60, deadline=None)
@given(maps_and_parts, st.floats(0.05, 20.0), st.floats(-100.0, 100.0), st.integers(1, 8),
       st.floats(0.0, 3.0))
def test_the_pointing_game_is_invariant_to_a_positive_affine_change_of_each_map(rng, scale, shift, top_k,
                                                                              tolerance):
    n, p = 4, 3
    # distinct integer values: a float64 affine change keeps their order exactly
    maps = np.stack([rng.permutation(H * W).reshape(H, W).astype(np.float64) for _ in range(n)])
    kp = rng.uniform(0, (W, H), size=(n, p, 2))
    visible = rng.random((n, p)) < 0.7
    scales = scale * rng.uniform(0.5, 2.0, n)  # per image
    shifts = shift + rng.uniform(-5, 5, n)
    before = part_pointing_game(maps, kp, visible, top_k=top_k, tolerance=tolerance)
    after = part_pointing_game(scales[:, None, None] * maps + shifts[:, None, None], kp, visible,
                               top_k=top_k, tolerance=tolerance)
    np.testing.assert_array_equal(before, after)
    assert set(before[np.isfinite(before)]) <= {0.0, 1.0}


@settings(max_examples=40, deadline=None)
@given(maps_and_parts)
def test_the_alignment_is_invariant_to_renaming_concepts_and_bounded(rng):
    n, p, k = 6, 4, 5
    concepts = rng.integers(0, k, (n, H, W))
    kp = rng.uniform(0, (W, H), size=(n, p, 2))
    visible = rng.random((n, p)) < 0.8
    renamed = rng.permutation(k)[concepts] + 100
    a = concept_part_alignment(concepts, kp, visible)
    assert a == pytest.approx(concept_part_alignment(renamed, kp, visible))
    assert a <= 1.0 + 1e-12


def test_concepts_that_follow_the_parts_align_and_others_do_not():
    n, p = 8, 3
    rng = np.random.default_rng(0)
    kp = np.stack([[(2.5 + 5 * j, 2.5 + 3 * j) for j in range(p)]] * n) + rng.uniform(-1, 1, (n, p, 2))
    visible = np.ones((n, p), dtype=bool)
    follows = np.zeros((n, H, W), dtype=np.int64)
    for j in range(p):  # concept 7 + j around part j
        follows[:, :, 5 * j:5 * j + 5] = 7 + j
    assert concept_part_alignment(follows, kp, visible) == pytest.approx(1.0)
    ignores = rng.integers(0, 3, (n, H, W))
    assert concept_part_alignment(ignores, kp, visible) < 0.3
    assert np.isnan(concept_part_alignment(follows, kp, np.zeros((n, p), dtype=bool)))


def test_ties_at_the_maximum_count_as_quantus_counts_them():
    # a plateau: the first maximal pixel in raster order misses, a later one hits
    m = _peak(2, 2) + _peak(9, 12)
    kp, visible = np.array([[[12.5, 9.5]]]), np.array([[True]])
    assert part_pointing_game(m[None], kp, visible)[0] == 1.0


@settings(max_examples=40, deadline=None)
@given(maps_and_parts, st.floats(0.0, 3.0))
def test_the_pointing_game_is_quantus_pointing_game_against_the_keypoint_discs(rng, tolerance):
    from kmx_eval.metrics.ceilings import localisation_scores
    from kmx_eval.metrics.quantus.scaling import minmax

    n, p = 6, 3
    maps = rng.integers(0, 5, (n, H, W)).astype(np.float64)  # few levels: ties at the maximum
    kp = rng.uniform(0, (W, H), size=(n, p, 2))
    visible = rng.random((n, p)) < 0.6
    visible[:, 0] = True
    discs = keypoint_masks((H, W), kp, visible, tolerance=tolerance)
    hits = part_pointing_game(maps, kp, visible, tolerance=tolerance)
    for i in range(n):
        if np.isfinite(hits[i]) and not discs[i].all():
            quantus = localisation_scores("PointingGame", minmax(maps[i:i + 1]).reshape(1, -1), discs[i].ravel())
            assert hits[i] == quantus[0]
    np.testing.assert_allclose(pointing_chance((H, W), kp, visible, tolerance=tolerance), discs.mean(axis=(1, 2)))


def test_no_map_of_the_grid_points_better_than_the_ceiling_there():
    """The ceiling of the pointing game on a 3 x 4 grid (kmx_eval/metrics/ceilings.py, PointingGame
    against the keypoint discs) is reached, and no random, one-hot or two-hot grid map beats it."""
    import torch

    from kmx_eval.explain.attribution import upsample
    from kmx_eval.metrics.ceilings import grid_ceilings

    rng = np.random.default_rng(3)
    n, p, grid = 5, 2, (3, 4)
    kp = rng.uniform(0, (W, H), size=(n, p, 2))
    visible = np.ones((n, p), dtype=bool)
    visible[0, 1] = False
    discs = keypoint_masks((H, W), kp, visible, tolerance=0.5)
    ceiling = grid_ceilings(discs, grid, ["PointingGame"], k=1)["PointingGame"]
    up = lambda g: upsample(torch.as_tensor(g, dtype=torch.float32), (H, W)).numpy()  # noqa: E731
    # the ceiling's own grid maps reach it
    np.testing.assert_array_equal(part_pointing_game(up(ceiling.maps), kp, visible, tolerance=0.5), ceiling.values)
    cells = np.eye(12).reshape(12, *grid)
    candidates = [rng.random((200, *grid)), cells, cells[:, None] + cells[None, :]]
    for g in candidates:
        g = g.reshape(-1, *grid)
        for i in range(n):
            hits = part_pointing_game(up(g), np.repeat(kp[i:i + 1], len(g), 0), np.repeat(visible[i:i + 1], len(g), 0),
                                      tolerance=0.5)
            assert np.nanmax(hits) <= ceiling.values[i]


def test_the_alignment_interval_is_seeded_and_holds_a_perfect_alignment_at_one():
    n, p = 10, 3
    rng = np.random.default_rng(1)
    kp = np.stack([[(2.5 + 5 * j, 2.5 + 3 * j) for j in range(p)]] * n) + rng.uniform(-1, 1, (n, p, 2))
    visible = rng.random((n, p)) < 0.9
    follows = np.zeros((n, H, W), dtype=np.int64)
    for j in range(p):
        follows[:, :, 5 * j:5 * j + 5] = 7 + j
    assert concept_part_alignment_ci(follows, kp, visible, n_resamples=200, confidence=0.95, seed=0) == (
        pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0))
    noisy = np.where(rng.random((n, H, W)) < 0.3, rng.integers(0, 9, (n, H, W)), follows)
    first = concept_part_alignment_ci(noisy, kp, visible, n_resamples=200, confidence=0.95, seed=0)
    assert first == concept_part_alignment_ci(noisy, kp, visible, n_resamples=200, confidence=0.95, seed=0)
    value, low, high = first
    assert -1 <= low <= high <= 1 and low < high


def test_an_image_covered_by_its_parts_scores_its_ceiling_with_no_missing_note():
    from kmx_eval.metrics.evaluation import EvaluationTables

    kp = np.array([[[W / 2, H / 2]], [[2.5, 2.5]]])
    visible = np.ones((2, 1), bool)
    t = EvaluationTables("d", "B4", n_resamples=20, confidence=0.9)
    t.add_keypoints(0, {"margin": np.stack([_peak(2, 2), _peak(2, 2)])}, keypoints=kp, visible=visible,
                    tolerance=float(H + W), grids={"ceiling": (3, 4)}, sample_ids=np.arange(2))
    ceiling = next(r for r in t.rows if r["method"] == "ceiling")
    assert ceiling["value"] == 1.0 and ceiling["n"] == 2 and "missing" not in ceiling["note"]
