"""Faithfulness on the map's own grid (kmx_eval.metrics.faithfulness; docs/METHOD.md, section 4):
bounded curves, refused spans, the symmetric MoRF - LeRF score and ROAD.

Each property test states what it proves: the bounds, the invariance to ``f -> alpha f + beta`` and
to a per-image ``a -> alpha a + c``, and that a model's response to out-of-distribution removal,
which lets a random map win PixelFlipping, does not let it win the symmetric scores.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kmx_eval.metrics import faithfulness as fa
from kmx_eval.metrics import quantus as qm

H = 32
CFG = qm.QuantusSettings(n_steps=6)
GRID_METRICS = ["SymmetricMoRFLeRF", "ROAD"]
curves_strategy = arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(2, 9)),
                         elements=st.floats(-1e4, 1e4, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(curves=curves_strategy, alpha=st.floats(1e-2, 1e2), beta=st.floats(-1e3, 1e3),
       tol=st.floats(1e-3, 1.0))
def test_bounded_curves_lie_in_0_1_and_do_not_see_the_output_units(curves, alpha, beta, tol):
    """Bounds [0, 1] (clipped to the end points); values and refusals invariant to alpha c + beta."""
    out, refused = fa.bounded_curves(curves, tolerance=tol)
    kept = out[~refused]
    assert np.all((kept >= 0) & (kept <= 1)) and np.isnan(out[refused]).all()
    out2, refused2 = fa.bounded_curves(alpha * curves + beta, tolerance=tol)
    margin = np.abs(curves[:, :1] - curves[:, -1:]).ravel() - tol * np.ptp(curves, axis=1)
    clear = np.abs(margin) > 1e-6 * (1 + np.abs(curves).max())  # away from the tolerance's edge
    assert np.array_equal(refused[clear], refused2[clear])
    both = clear & ~refused
    assert np.allclose(out[both], out2[both], atol=1e-6)


def test_a_span_small_against_the_curve_is_refused_not_exploded():
    """The issue's case: end points -13 and -359, a dip to -10,200 in between (the random map on a
    k-means head): unclipped, the curve reaches -28.9; here the span (346) is below 0.1 times the
    range (10,187), so the sample is refused, and a curve with a clear span is clipped to [0, 1]."""
    dip = np.array([[-13.0, -10200.0, -500.0, -359.0]])
    out, refused = fa.bounded_curves(dip, tolerance=0.1)
    assert refused.all() and np.isnan(out).all()
    assert ((dip - dip[:, -1:]) / (dip[:, :1] - dip[:, -1:])).min() < -28
    fine = np.array([[10.0, 12.0, 4.0, -1.0, 0.0]])
    out, refused = fa.bounded_curves(fine, tolerance=0.1)
    assert not refused.any() and np.allclose(out, [[1.0, 1.0, 0.4, 0.0, 0.0]])
    flat = np.array([[5.0, 4.0, 6.0, 5.0]])  # no span at all
    assert fa.bounded_curves(flat, tolerance=0.1)[1].all()


def test_pixel_flipping_refuses_a_flat_span_with_its_reason():
    """A model whose score is the same for the image and for the black image: refused, with why."""

    class EdgesOnly(torch.nn.Module):
        def forward(self, x):  # depends on the contrast only: x and black (constant) both ~ 0 at the ends
            c = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))
            return torch.stack([c, -c], 1)

    x = np.random.default_rng(0).random((3, 3, H, H)).astype(np.float32)
    x[:, :, :, :] = 0.5  # constant images: f(x_0) = f(x_L) = 0
    a = np.random.default_rng(1).random((3, H, H)).astype(np.float32)
    y = np.zeros(3, dtype=np.int64)
    for name in ("PixelFlipping", "RegionPerturbation"):
        scores, reasons, _ = qm.run_quantus(name, EdgesOnly().eval(), x, y, a, None, settings=CFG, seed=0)
        assert np.isnan(scores).all() and set(reasons) == {fa.REFUSED_SPAN}, name


@settings(max_examples=60, deadline=None)
@given(base=arrays(np.float64, (3, 7), elements=st.floats(-1e3, 1e3)), alpha=st.floats(1e-2, 1e2),
       beta=st.floats(-1e3, 1e3))
def test_symmetric_score_is_bounded_and_free_of_the_output_units(base, alpha, beta):
    """Bounds [-1, 1] (each |l_k - m_k| is at most the range); invariant to alpha f + beta."""
    original, morf, lerf = base[:, 0], base[:, 1:4], base[:, 4:]
    s, refused = fa.symmetric_score(original, morf, lerf)
    assert np.all(np.abs(s[~refused]) <= 1) and np.isnan(s[refused]).all()
    s2, refused2 = fa.symmetric_score(alpha * original + beta, alpha * morf + beta, alpha * lerf + beta)
    moved = alpha * base + beta
    clear = ((np.ptp(base, axis=1) > 1e-4 * np.abs(base).max(axis=1))
             & (np.ptp(moved, axis=1) > 1e-4 * np.abs(moved).max(axis=1)))  # clear of rounding noise
    assert np.array_equal(refused[clear], refused2[clear])
    assert np.allclose(s[clear & ~refused], s2[clear & ~refused], atol=1e-6)


def test_symmetric_score_reaches_its_bounds():
    """1: MoRF at the minimum at once, LeRF at the maximum; -1: the reverse; NaN when nothing moves."""
    s, _ = fa.symmetric_score(np.array([1.0, 1.0]), np.array([[0.0, 0.0], [1.0, 1.0]]),
                              np.array([[1.0, 1.0], [0.0, 0.0]]))
    assert np.allclose(s, [1.0, -1.0])
    s, refused = fa.symmetric_score(np.array([2.0]), np.array([[2.0]]), np.array([[2.0]]))
    assert refused.all() and np.isnan(s).all()


def test_cells_partition_the_image_as_adaptive_pooling_does():
    labels = fa.cell_labels(H, H, (4, 4))
    assert labels.shape == (H, H) and np.bincount(labels.ravel()).tolist() == [64] * 16
    a = np.random.default_rng(0).random((2, H, H))
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(a)[:, None], (4, 4))[:, 0]
    assert np.allclose(fa.cell_relevance(a, labels), pooled.reshape(2, -1).numpy())
    odd = fa.cell_labels(10, 10, (3, 3))  # not divisible: every cell gets 3 or 4 rows and columns
    assert set(np.bincount(odd.ravel())) <= {9, 12, 16} and odd.max() == 8


def test_imputation_changes_exactly_the_removed_pixels():
    x = np.random.default_rng(0).random((3, 12, 12)).astype(np.float32)
    removed = np.zeros((12, 12), dtype=bool)
    removed[3:7, 5:9] = True
    np.random.seed(0)
    out = fa._impute(x, removed, noise=0.01)
    assert out.shape == x.shape
    assert np.array_equal(out[:, ~removed], x[:, ~removed])
    assert (out[:, removed] != x[:, removed]).all()
    lo, hi = x.min(axis=(1, 2)) - 0.1, x.max(axis=(1, 2)) + 0.1  # interpolated from the neighbours
    assert all(((out[c][removed] > lo[c]) & (out[c][removed] < hi[c])).all() for c in range(3))


def test_imputation_equals_quantus_and_reuses_the_factorisation():
    """The cached system gives Quantus 0.6's noisy_linear_imputation (same stencil, frame, noise draw)
    on every channel, for removed sets touching the frame, and a second image with the same removed
    set reuses the factorisation."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(3)
    fa._SYSTEMS.clear()
    for removed in (fa.cell_labels(24, 24, (3, 3)) < 4, rng.random((24, 24)) < 0.4, fa.cell_labels(24, 24, (4, 4)) == 5):
        for _ in range(2):
            x = rng.random((3, 24, 24)).astype(np.float32)
            np.random.seed(7)
            ours = fa._impute(x, removed, noise=0.01)
            np.random.seed(7)
            theirs = noisy_linear_imputation(arr=x, indices=np.flatnonzero(removed), noise=0.01).astype(np.float32)
            assert np.allclose(ours, theirs, atol=1e-6)
            assert np.array_equal(ours[:, ~removed], x[:, ~removed])
    assert len(fa._SYSTEMS) == 3  # one factorisation per removed set, shared by both images


class OutOfDistribution(torch.nn.Module):
    """Class score = mean intensity of the top-left quadrant (the object) minus ``penalty`` times the
    input's total variation: scattered removed pixels (a random pixel map) make the input
    out of distribution and the score collapses far below that of the fully removed image."""

    def __init__(self, penalty: float = 20.0):
        super().__init__()
        self.penalty = penalty

    def forward(self, x):
        obj = x[:, :, : H // 2, : H // 2].mean(dim=(1, 2, 3))
        tv = ((x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))
              + (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3)))
        f = obj - self.penalty * tv
        return torch.stack([f, -f], dim=1)


def _toy_images(n=8):
    rng = np.random.default_rng(0)
    x = np.ones((n, 3, H, H), dtype=np.float32)
    x[:, :, : H // 2, : H // 2] = 2.0
    x += rng.normal(scale=0.01, size=x.shape).astype(np.float32)
    x[:, :, -1, -1] = 0.0  # the black baseline (the image's minimum) is 0
    return x, np.zeros(n, dtype=np.int64)


def _pixel_flipping_before(model, x, y, a) -> np.ndarray:
    """PixelFlipping as scored before the curves were bounded: the area under
    ``(c_k - c_L) / (c_0 - c_L)``, unclipped, NaN only where the span is not positive."""
    built = qm.QUANTUS_METRICS.get("PixelFlipping").build(CFG, H)
    np.random.seed(0)
    raw = built.metric(model=model, x_batch=x, y_batch=y, a_batch=qm.minmax(a)[:, None], channel_first=True,
                       softmax=False, device="cpu")
    original = qm.class_scores(model, x, y, softmax=False, device="cpu", batch_size=64)
    c = np.concatenate([original[:, None], np.asarray(raw, dtype=np.float64)], axis=1)
    span = c[:, :1] - c[:, -1:]
    curves = np.where(span > 0, (c - c[:, -1:]) / np.where(span > 0, span, 1), np.nan)
    return np.trapezoid(curves, built.fractions, axis=1)


def test_a_random_map_that_wins_pixel_flipping_ranks_below_an_informed_map_on_the_grid_scores():
    """On the OOD model the random pixel map beat the informed map on PixelFlipping as scored
    before (lower is better; its curve dives far below the fully removed image's score); now its
    span is refused there, and the symmetric score and ROAD on a 4 x 4 grid rank the informed map
    (relevance falling with the distance from the object's corner) above it and put the random map
    near 0 (the model's response to removal cancels)."""
    x, y = _toy_images(24)  # ROAD's per-image sd for a random order is about 0.35: 24 images
    n = len(x)
    rows, cols = np.mgrid[:H, :H]
    informed = np.broadcast_to(-(rows + cols).astype(np.float32), (n, H, H)).copy()
    informed += np.random.default_rng(2).random(informed.shape).astype(np.float32) * 1e-3
    random = np.random.default_rng(3).random((n, H, H)).astype(np.float32)
    model = OutOfDistribution().eval()
    score = {}
    for name in ("PixelFlipping", "SymmetricMoRFLeRF", "ROAD"):
        for label, a in (("informed", informed), ("random", random)):
            s, _, _ = qm.run_quantus(name, model, x, y, a, None, settings=CFG, seed=0, grid=(4, 4))
            # NaN where every curve is refused (PixelFlipping's random map: asserted below)
            score[name, label] = float(np.nanmean(s)) if np.isfinite(s).any() else float("nan")
    before = {label: float(np.nanmean(_pixel_flipping_before(model, x, y, a)))
              for label, a in (("informed", informed), ("random", random))}
    assert before["random"] < before["informed"] and before["random"] < 0  # random "won", below the floor
    assert np.isnan(score["PixelFlipping", "random"])  # every random curve refused now
    for name in GRID_METRICS:
        assert score[name, "informed"] > score[name, "random"] + 0.2, (name, score)
        assert abs(score[name, "random"]) < 0.25, (name, score)
        assert score[name, "informed"] > 0.3, (name, score)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(-3, 3), c=st.integers(-5000, 5000), seed=st.integers(0, 100))
def test_grid_scores_are_invariant_to_a_per_image_affine_change_of_the_map(k, c, seed):
    """Only the order of the cells' mean relevance matters: a -> 2^k a + c changes nothing."""
    x, y = _toy_images(3)
    a = np.stack([np.random.default_rng(seed + i).permutation(H * H).reshape(H, H) for i in range(3)])
    a = a.astype(np.float32)
    model = OutOfDistribution().eval()
    for name in GRID_METRICS:
        s1, r1, _ = qm.run_quantus(name, model, x, y, a, None, settings=CFG, seed=0, grid=(4, 4))
        s2, r2, _ = qm.run_quantus(name, model, x, y, (2.0 ** k) * a + c, None, settings=CFG, seed=0,
                                   grid=(4, 4))
        assert r1 == r2 and np.allclose(s1, s2, equal_nan=True), name


def test_the_grid_decides_the_cells_and_a_one_cell_grid_is_refused():
    x, y = _toy_images(2)
    a = np.random.default_rng(0).random((2, H, H)).astype(np.float32)
    model = OutOfDistribution().eval()
    _, _, run = qm.run_quantus("SymmetricMoRFLeRF", model, x, y, a, None, settings=CFG, seed=0, grid=(2, 2))
    assert run.settings["grid"] == [2, 2] and run.settings["cells_removed"] == [1, 2, 3]
    _, _, run = qm.run_quantus("ROAD", model, x, y, a, None, settings=CFG, seed=0)  # no grid: the patch grid
    assert run.settings["grid"] == [CFG.pixel_grid] * 2
    s, reasons, _ = qm.run_quantus("SymmetricMoRFLeRF", model, x, y, a, None, settings=CFG, seed=0, grid=(1, 1))
    assert np.isnan(s).all() and set(reasons) == {fa.FLAT_RESPONSE}


@pytest.mark.parametrize("name", GRID_METRICS)
def test_model_calls_per_image_are_counted(name):
    """1 + 2 K forward passes per image (f(x_0), then K MoRF and K LeRF inputs), counted by a hook."""
    x, y = _toy_images(2)
    model = OutOfDistribution().eval()
    calls = []
    model.register_forward_pre_hook(lambda m, inp: calls.append(len(inp[0])))
    a = np.random.default_rng(0).random((2, H, H)).astype(np.float32)
    _, _, run = qm.run_quantus(name, model, x, y, a, None, settings=CFG, seed=0, grid=(4, 4), n_classes=2)
    assert sum(calls) == 2 * run.settings["model_calls_per_image"]


def test_the_evaluation_passes_each_maps_grid_and_counts_refused_images_per_map():
    """EvaluationTables hands the grid to the grid metrics and records refusals per metric and map in
    settings["refused"]; the grid a map gets follows map_grid (pixel maps: the fixed patch grid)."""
    from kmx_eval.metrics.evaluation import EvaluationTables

    x, y = _toy_images(6)
    rows, cols = np.mgrid[:H, :H]
    informed = np.broadcast_to(-(rows + cols).astype(np.float32), (6, H, H)).copy()
    random = np.random.default_rng(3).random((6, H, H)).astype(np.float32)
    tables = EvaluationTables("toy", "B34", n_resamples=20, confidence=0.9)
    for method, a in (("informed", informed), ("random", random)):
        tables.add_explainer(0, method, OutOfDistribution().eval(), x=x, y=y, a=a, masks=None,
                             metrics=["PixelFlipping", "SymmetricMoRFLeRF"], settings=CFG, device="cpu",
                             sample_ids=np.arange(6), n_classes=2, progress=False,
                             grid=fa.map_grid(method, (4, 4), height=H, pixel_cells=CFG.pixel_grid))
    assert tables.settings["quantus"]["SymmetricMoRFLeRF"]["grid"] == [4, 4]
    refused = tables.settings["refused"]
    assert refused["PixelFlipping"]["random"] == 6 and refused["SymmetricMoRFLeRF"] == {"informed": 0, "random": 0}
    assert fa.map_grid("integrated_gradients", (4, 4), height=H, pixel_cells=8) == (8, 8)
    assert fa.map_grid("margin", (3, 3), height=H, pixel_cells=8) == (3, 3)


def test_the_reference_scores_are_computed_once_per_model_and_weights():
    """A second explainer on the same model and images reuses f(x)_y (2 K calls per image, not
    1 + 2 K) and scores what a fresh model scores; the same model with its weights changed in place
    (through ``.data``, which torch's version counters miss) computes them again."""
    x, y = _toy_images(2)
    model = Weighted().eval()
    calls = []
    model.register_forward_pre_hook(lambda m, inp: calls.append(len(inp[0])))
    maps = [np.random.default_rng(i).random((2, H, H)).astype(np.float32) for i in range(2)]
    runs = []
    for a in maps:
        calls.clear()
        scores, _, run = qm.run_quantus("SymmetricMoRFLeRF", model, x, y, a, None, settings=CFG, seed=0,
                                        grid=(4, 4), n_classes=2)
        runs.append((scores, sum(calls), run.settings["model_calls_per_image"]))
    (_, first_calls, per_image), (second, second_calls, _) = runs
    assert first_calls == 2 * per_image and second_calls == 2 * (per_image - 1)
    fresh, _, _ = qm.run_quantus("SymmetricMoRFLeRF", Weighted().eval(), x, y, maps[1], None,
                                 settings=CFG, seed=0, grid=(4, 4), n_classes=2)
    assert np.array_equal(second, fresh, equal_nan=True)
    model.weight.data.mul_(2.0)
    calls.clear()
    qm.run_quantus("SymmetricMoRFLeRF", model, x, y, maps[1], None, settings=CFG, seed=0, grid=(4, 4), n_classes=2)
    assert sum(calls) == 2 * per_image


class Weighted(OutOfDistribution):
    """:class:`OutOfDistribution` with its scores times a weight (a parameter, 1 at first)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return super().forward(x) * self.weight
