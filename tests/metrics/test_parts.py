"""The part pointing game and concept-part alignment (kmx_eval/metrics/parts.py)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmx_eval.metrics.parts import concept_part_alignment, part_pointing_game, pointing_chance

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
