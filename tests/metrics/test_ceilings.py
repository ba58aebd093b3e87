"""Ceilings of the localisation metrics on a map's own grid (kmx_eval/metrics/ceilings.py) and the
normalised value between floor and ceiling (kmx_eval/metrics/room.py).

Properties proved here: the search's scores are Quantus 0.6's; no map of the grid that we can think
of (random, one-hot, top-j cells, the averaged mask, small perturbations of the best map found) beats
the ceiling on any image; the pixel ceiling is each metric's bound; the old oracle is below the new
ceiling (issue 22); ``normalised`` is 0 at the floor, 1 at the ceiling and invariant to an increasing
affine change of all three.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmx_eval.explain.attribution import upsample
from kmx_eval.explain.controls import oracle_maps
from kmx_eval.metrics import quantus as qm
from kmx_eval.metrics.ceilings import CEILING_METRICS, grid_ceilings, localisation_scores, pixel_ceilings
from kmx_eval.metrics.room import normalised

TOLERANCE = 1e-6
#: AUC's supremum on a grid is approached as some cells go to -inf (their pixels are then ordered by
#: their bilinear weights), so the search's ceiling is within this of it, not at it (docs/METHOD.md, section 6).
AUC_TOLERANCE = 1e-3
TOP_K_FRACTION = 0.1


def _masks(size: int, seed: int = 0) -> np.ndarray:
    """Three object masks: a disc, a rectangle straddling cells, a small off-centre blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (0.22 * size) ** 2
    rect = np.zeros((size, size), bool)
    rect[size // 5: size // 5 + size // 3, size // 3: size // 3 + size // 2] = True
    blob = (yy - 0.8 * size) ** 2 + (xx - 0.15 * size) ** 2 < (0.07 * size) ** 2
    return np.stack([disc, rect, blob]).astype(np.uint8)


def _quantus(name: str, a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Quantus's own score of maps ``a`` (n, H, W) against masks ``s``, through the suite's runner
    (the metric's rescaling, its Quantus settings)."""
    n, size = len(a), a.shape[-1]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * size * size, 2)).eval()
    x = np.zeros((n, 3, size, size), np.float32)
    scores, _, _ = qm.run_quantus(name, model, x, np.zeros(n, int), a, s, n_classes=2, seed=0,
                                  settings=qm.QuantusSettings(top_k_fraction=TOP_K_FRACTION))
    return scores


def _k(size: int) -> int:
    return qm.top_k(size, size, TOP_K_FRACTION)


def _grid_maps(grid, share: np.ndarray, best: np.ndarray, rng) -> np.ndarray:
    """Maps on the grid (m, h, w) that might beat a ceiling: random, one-hot, top-j by mask share,
    the averaged mask, and small perturbations of the best map found."""
    h, w = grid
    eye = np.eye(h * w, dtype=np.float32)
    top_j = np.cumsum(eye[np.argsort(-share.ravel(), kind="stable")], axis=0)[:-1]
    span = float(np.ptp(best)) or 1.0
    nudged = [best + sigma * span * rng.standard_normal((10, h, w)) for sigma in (1e-4, 1e-2, 1e-1)]
    return np.concatenate([rng.uniform(0, 1, (20, h * w)), eye, top_j, share.reshape(1, -1)]
                          + [v.reshape(10, -1) for v in nudged]).reshape(-1, h, w).astype(np.float32)


@pytest.mark.parametrize("grid,size", [((2, 2), 48), ((3, 3), 48), ((6, 6), 96), ((12, 12), 96)])
def test_no_map_of_the_grid_beats_the_ceiling(grid, size):
    masks = _masks(size, seed=grid[0])[: 2 if grid[0] > 6 else 3]
    k = _k(size)
    ceilings = grid_ceilings(masks, grid, k=k, seed=0)
    shares = torch.nn.functional.adaptive_avg_pool2d(torch.as_tensor(masks, dtype=torch.float32)[:, None],
                                                     grid)[:, 0].numpy()
    rng = np.random.default_rng(1)
    for name in CEILING_METRICS:
        for i, s in enumerate(masks):
            g = _grid_maps(grid, shares[i], ceilings[name].maps[i], rng)
            a = upsample(torch.as_tensor(g), (size, size)).numpy()
            scores = _quantus(name, a, np.repeat(s[None], len(a), axis=0))
            assert np.nanmax(scores) <= ceilings[name].values[i] + (AUC_TOLERANCE if name == "AUC" else TOLERANCE), \
                (name, i, np.nanmax(scores) - ceilings[name].values[i])
            # the map the search found reaches its ceiling under Quantus itself
            found = upsample(torch.as_tensor(ceilings[name].maps[i][None]), (size, size)).numpy()
            np.testing.assert_allclose(_quantus(name, found, s[None]), ceilings[name].values[i], atol=TOLERANCE)


def test_search_scores_are_quantus_scores_ties_included():
    """The formulas the search uses give Quantus's scores, on random and on tie-laden (one-hot) maps."""
    size, masks = 48, _masks(48)
    rng = np.random.default_rng(0)
    cells = np.concatenate([rng.uniform(0, 1, (4, 9)), np.eye(9)]).reshape(-1, 3, 3).astype(np.float32)
    maps = np.concatenate([upsample(torch.as_tensor(cells), (size, size)).numpy(),
                           rng.normal(size=(4, size, size)).astype(np.float32)])
    for name in CEILING_METRICS:
        spec = qm.QUANTUS_METRICS.get(name)
        for s in masks:
            ours = localisation_scores(name, qm.SCALINGS[spec.scaling](maps).reshape(len(maps), -1), s.ravel() > 0,
                                       k=_k(size))
            np.testing.assert_allclose(ours, _quantus(name, maps, np.repeat(s[None], len(maps), axis=0)),
                                       rtol=0, atol=1e-9, err_msg=name)


def test_pixel_ceiling_is_each_metrics_bound():
    size = 48
    masks = _masks(size)
    found = pixel_ceilings(masks, k=_k(size))
    share = masks.reshape(3, -1).sum(axis=1)
    for name in CEILING_METRICS:
        bound = np.minimum(1, share / _k(size)) if name == "TopKIntersection" else np.ones(3)
        np.testing.assert_allclose(found[name].values, bound, atol=1e-6, err_msg=name)
    assert grid_ceilings(masks, (size, size), k=_k(size))["AUC"].values.tolist() == found["AUC"].values.tolist()


def test_old_oracle_is_below_the_new_ceiling():
    """Issue 22: on its own grid the averaged mask (the old ``oracle``) is beaten by all the mass on the
    cell with the largest mask share; the ceiling is at least that one-hot map and above the oracle."""
    size, grid = 96, (6, 6)
    masks = _masks(size, seed=6)
    ceilings = grid_ceilings(masks, grid, k=_k(size))
    oracle = _quantus("RelevanceMassAccuracy", oracle_maps(masks, grid), masks)
    shares = torch.nn.functional.adaptive_avg_pool2d(torch.as_tensor(masks, dtype=torch.float32)[:, None],
                                                     grid)[:, 0].numpy()
    best_cell = np.zeros((3, 36), np.float32)
    best_cell[np.arange(3), shares.reshape(3, -1).argmax(axis=1)] = 1
    one_hot = _quantus("RelevanceMassAccuracy", upsample(torch.as_tensor(best_cell.reshape(3, 6, 6)),
                                                         (size, size)).numpy(), masks)
    ceiling = ceilings["RelevanceMassAccuracy"].values
    assert one_hot[0] > oracle[0]  # the disc: the best cell alone beats the averaged mask (issue 22)
    assert np.all(ceiling >= one_hot - TOLERANCE) and np.all(ceiling > oracle + 0.01)
    for name in CEILING_METRICS:  # the oracle is a map of the grid: never above the ceiling
        assert np.all(_quantus(name, oracle_maps(masks, grid), masks) <= ceilings[name].values + TOLERANCE), name


def test_empty_and_full_masks_have_no_ceiling():
    masks = np.zeros((2, 48, 48), np.uint8)
    masks[1] = 1
    for found in (grid_ceilings(masks, (3, 3), k=_k(48)), pixel_ceilings(masks, k=_k(48))):
        assert all(np.isnan(c.values).all() for c in found.values())


def test_normalised_value_is_zero_at_the_floor_one_at_the_ceiling_and_affine_invariant():
    value, floor, ceiling = np.array([0.5, 0.2, 0.9, 0.4]), np.array([0.2, 0.2, 0.3, 0.4]), \
        np.array([0.8, 0.6, 0.9, 0.4])
    out = normalised(value, floor, ceiling)
    np.testing.assert_allclose(out[:3], [0.5, 0.0, 1.0])
    assert np.isnan(out[3])  # no room between floor and ceiling: undefined, not 0
    np.testing.assert_allclose(normalised(3 * value + 1, 3 * floor + 1, 3 * ceiling + 1)[:3], out[:3])
    assert normalised(0.5, 0.25, 0.75) == pytest.approx(0.5)


def test_the_search_gives_the_same_ceilings_on_one_thread_and_on_two():
    """Images are searched side by side on the stage's threads: the values and maps do not depend on it."""
    masks = _masks(48, seed=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = grid_ceilings(masks, (3, 3), CEILING_METRICS, k=_k(48))
        torch.set_num_threads(2)
        two = grid_ceilings(masks, (3, 3), CEILING_METRICS, k=_k(48))
    finally:
        torch.set_num_threads(before)
    for metric in CEILING_METRICS:
        np.testing.assert_array_equal(one[metric].values, two[metric].values)
        np.testing.assert_array_equal(one[metric].maps, two[metric].maps)
