"""Sharpness beyond the study's coarsest grid (docs/METHOD.md, section 6, "Sharpness")."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kmx_eval.explain.attribution import upsample
from kmx_eval.metrics import sharpness as sh
from scipy import fft

SIZE, GRID = 48, (3, 3)


def _parts(n=3, seed=0):
    """Three-part objects: two small squares side by side over a bar, at random places."""
    rng = np.random.default_rng(seed)
    parts = np.zeros((n, SIZE, SIZE), dtype=np.int64)
    for i in range(n):
        r, c = rng.integers(4, 20, 2)
        parts[i, r:r + 6, c:c + 6] = 1
        parts[i, r:r + 6, c + 14:c + 20] = 2
        parts[i, r + 12:r + 16, c:c + 20] = 3
    return parts


def _smooth_noise(n, seed, cells):
    """Noise on a ``cells`` grid upsampled: a map as coarse as that grid."""
    rng = np.random.default_rng(seed)
    return upsample(torch.as_tensor(rng.normal(size=(n, cells, cells))), SIZE).numpy()


def test_a_map_on_the_parts_is_sharper_than_its_coarse_twin_on_every_score():
    parts = _parts()
    maps = (parts > 0).astype(np.float64) + 0.01 * np.random.default_rng(1).random(parts.shape)
    scores = sh.sharpness_scores(maps, grid=GRID, masks=parts > 0, regions=sh.part_regions(parts))
    assert list(scores) == list(sh.SHARPNESS_METRICS)
    assert np.all(scores["mass_in_mask"] > 0.95)
    assert np.all(scores["mass_in_mask_gain"] > 0.2)
    assert np.allclose(scores["mass_in_mask_gain"], scores["mass_in_mask"] - scores["mass_in_mask_coarse"])
    assert np.all(scores["fine_energy"] > scores["fine_energy_coarse"] + 0.2)
    assert np.all(scores["half_max_area"] < scores["half_max_area_coarse"])
    assert np.allclose(scores["part_pointing"], 1.0)
    assert np.all(scores["part_pointing_coarse"] < 1.0)


def test_upsampling_alone_does_not_pass_for_sharpness():
    # A map on B4's grid, and the same map on a finer grid that is only its upsampling: the
    # coarse twin of either is (almost) the map itself, so the gain is about 0.
    coarse = _smooth_noise(4, 2, GRID[0])
    masks = _parts(4) > 0
    scores = sh.sharpness_scores(coarse, grid=GRID, masks=masks)
    assert np.all(np.abs(scores["mass_in_mask_gain"]) < 0.05)
    assert np.allclose(scores["fine_energy"], scores["fine_energy_coarse"], atol=0.03)
    assert np.all(scores["fine_energy"] < 0.1)


def test_fine_energy_is_zero_for_a_map_within_the_coarse_band_and_one_for_a_checkerboard():
    c = np.zeros((1, SIZE, SIZE))
    c[0, :3, :3] = np.random.default_rng(0).normal(size=(3, 3))
    within = fft.idctn(c, type=2, norm="ortho", axes=(1, 2))
    assert sh.fine_energy(within, GRID)[0] == pytest.approx(0.0, abs=1e-12)
    checker = (np.indices((SIZE, SIZE)).sum(axis=0) % 2)[None].astype(float)
    assert sh.fine_energy(checker, GRID)[0] == pytest.approx(1.0)


def test_half_max_area_counts_the_upper_half_of_the_range_over_the_object():
    maps = np.zeros((1, 10, 10))
    maps[0, :2, :5] = 4.0          # 10 pixels at the maximum
    maps[0, 5, 5] = 2.0            # exactly half: counted
    masks = np.zeros((1, 10, 10), bool)
    masks[0, :5, :5] = True        # 25 object pixels
    assert sh.half_max_area(maps, masks)[0] == pytest.approx(11 / 25)


def test_part_pointing_is_the_share_of_parts_whose_region_peaks_on_them():
    parts = _parts(1)
    maps = np.zeros(parts.shape)
    maps[parts == 1] = 1.0                       # peaks on part 1 only
    region_of_2 = sh.part_regions(parts).parts[0][1][1]
    maps[0][region_of_2 & (parts[0] == 0)] = 0.5  # part 2's region peaks off the part
    regions = sh.part_regions(parts)
    got = sh.part_pointing(maps, regions)[0]
    # part 1: hit; part 2: miss; part 3: its region's maximum is 0 everywhere, so the hit is |p|/|R_p|
    part3, region3 = regions.parts[0][2]
    expected = (1 + 0 + part3.sum() / region3.sum()) / 3
    assert got == pytest.approx(expected)


def test_part_regions_cover_the_image_and_hold_their_part():
    parts = _parts(2)
    regions = sh.part_regions(parts)
    for pm, pairs in zip(parts, regions.parts):
        assert len(pairs) == 3
        assert np.all(sum(r.astype(int) for _, r in pairs) == 1)   # a partition of the image
        for part, region in pairs:
            assert np.all(region[part])
    chance = regions.chance()
    assert np.all((chance > 0) & (chance < 1))
    assert np.isnan(sh.part_pointing(np.ones((1, SIZE, SIZE)), sh.part_regions(np.zeros((1, SIZE, SIZE))))[0])


def test_constant_maps_and_empty_masks_are_nan_with_a_reason():
    maps = np.stack([np.full((SIZE, SIZE), 3.0), np.random.default_rng(0).random((SIZE, SIZE))])
    masks = np.zeros((2, SIZE, SIZE), bool)
    masks[0, 5:9, 5:9] = True
    scores = sh.sharpness_scores(maps, grid=GRID, masks=masks)
    assert np.isnan(scores["fine_energy"][0]) and np.isfinite(scores["fine_energy"][1])
    assert np.isnan(scores["mass_in_mask"]).all() and np.isnan(scores["half_max_area"]).all()
    why = sh.missing_reasons(maps, masks=masks)
    assert why["map"] == [sh.CONSTANT, None]
    assert why["mask"] == [sh.CONSTANT, sh.EMPTY_MASK]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), log_scale=st.floats(-3, 3), shift=st.floats(-100, 100))
def test_every_score_is_invariant_to_a_per_image_shift_and_positive_scale(seed, log_scale, shift):
    rng = np.random.default_rng(seed)
    parts = _parts(2, seed)
    maps = rng.random(parts.shape) + (parts > 0)
    regions = sh.part_regions(parts)
    base = sh.sharpness_scores(maps, grid=GRID, masks=parts > 0, regions=regions)
    scale = np.exp(log_scale) * np.array([1.0, 7.0])[:, None, None]   # a different change per image
    moved = sh.sharpness_scores(scale * maps + shift * np.array([1.0, -2.0])[:, None, None], grid=GRID,
                                masks=parts > 0, regions=regions)
    for name, v in base.items():
        assert np.allclose(moved[name], v, atol=1e-9), name


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cells=st.sampled_from([1, 2, 3, 6, 12, 48]))
def test_ratios_stay_in_their_bounds(seed, cells):
    rng = np.random.default_rng(seed)
    parts = _parts(3, seed)
    maps = _smooth_noise(3, seed, cells) + rng.normal(size=parts.shape) * rng.random()
    scores = sh.sharpness_scores(maps, grid=GRID, masks=parts > 0, regions=sh.part_regions(parts))
    for name in ("mass_in_mask", "mass_in_mask_coarse", "fine_energy", "fine_energy_coarse",
                 "part_pointing", "part_pointing_coarse"):
        assert np.all((scores[name] >= 0) & (scores[name] <= 1)), name
    assert np.all(np.abs(scores["mass_in_mask_gain"]) <= 1)
    upper = SIZE * SIZE / (parts > 0).sum(axis=(1, 2))
    assert np.all((scores["half_max_area"] > 0) & (scores["half_max_area"] <= upper))
