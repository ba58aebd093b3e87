"""Quantus metrics: settings, top scores for a perfect map, chance for a random one, per-sample failures."""

import numpy as np
import pytest
import torch

from kmx_eval.metrics import quantus as qm

H = 32
from kmx_eval.config import EvaluateConfig  # noqa: E402

QUANTUS_DEFAULT = EvaluateConfig().quantus
LOCALISATION = ["PointingGame", "AttributionLocalisation", "RelevanceMassAccuracy",
                "RelevanceRankAccuracy", "TopKIntersection", "AUC"]


def _model(n_classes=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(128, n_classes)).eval()


def _data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, H, H)).astype(np.float32)
    y = rng.integers(0, 4, n)
    s = np.zeros((n, H, H), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(0, H - 14, 2)
        s[i, r:r + 14, c:c + 12] = 1
    return x, y, s


CFG = qm.QuantusSettings()


def test_registry_declares_every_default_metric():
    assert set(QUANTUS_DEFAULT) == set(qm.QUANTUS_METRICS.names())
    for name in qm.QUANTUS_METRICS:
        spec = qm.QUANTUS_METRICS.get(name)
        assert spec.category in ("localisation", "faithfulness", "complexity", "randomisation", "robustness")
        assert spec.needs_masks == (spec.category == "localisation")
        assert (spec.chance is not None) == spec.needs_masks
    assert not qm.QUANTUS_METRICS.get("PixelFlipping").higher_is_better
    assert qm.QUANTUS_METRICS.get("RandomLogit").needs_explain_func


def test_settings_derivation():
    assert qm.features_in_step(3, 96, 96, 16) == (1536, 18)
    assert qm.features_in_step(3, 32, 32, 16) == (256, 12)
    fis, steps = qm.features_in_step(3, 64, 64, 10)
    assert (64 * 64) % fis == 0 and steps * fis == 3 * 64 * 64
    assert qm.top_k(96, 96, 0.1) == 922 and qm.top_k(8, 8, 1.0) == 63
    assert qm.patch_size(96, 0.125) == 12 and qm.patch_size(10, 0.01) == 1
    assert qm.subset_size(96, 96, 0.05) == 461


def test_settings_are_reported_with_the_scores():
    x, y, s = _data(4)
    a = np.random.default_rng(0).random((4, H, H)).astype(np.float32)
    _, _, pf = qm.run_quantus("PixelFlipping", _model(), x, y, a, None, settings=CFG, seed=0)
    assert (pf.settings["features_in_step"], pf.settings["n_steps"]) == qm.features_in_step(3, H, H, CFG.n_steps)
    _, _, fc = qm.run_quantus("FaithfulnessCorrelation", _model(), x, y, a, None, settings=CFG, seed=0)
    assert fc.settings["nr_runs"] == CFG.nr_runs and fc.settings["subset_size"] == 51
    _, _, tk = qm.run_quantus("TopKIntersection", _model(), x, y, a, s, settings=CFG, seed=0)
    assert tk.settings["k"] == 102 and tk.settings["n_images"] == 4


@pytest.mark.parametrize("name", LOCALISATION)
def test_a_map_equal_to_the_mask_scores_at_the_top(name):
    x, y, s = _data()
    scores, reasons, _ = qm.run_quantus(name, _model(), x, y, s.astype(np.float32), s, settings=CFG, seed=0)
    assert reasons == [None] * len(x)
    assert np.allclose(scores, 1.0)  # every mask holds 168 pixels > k = 102 for TopK


def test_a_uniform_random_map_scores_near_chance():
    x, y, s = _data(n=60)
    a = np.random.default_rng(5).random(s.shape).astype(np.float32)
    for name in LOCALISATION:
        scores, _, extra = qm.run_quantus(name, _model(), x, y, a, s, settings=CFG, seed=0)
        chance = extra.chance.mean()
        tol = 0.1 if name == "PointingGame" else 0.03  # a hit is 0/1: binomial noise over 60 images
        assert abs(np.nanmean(scores) - chance) < tol, name
    assert qm.chance_level("AUC", s).tolist() == [0.5] * 60
    assert qm.chance_level("RelevanceMassAccuracy", s)[0] == pytest.approx(168 / H**2)


def test_a_constant_map_is_nan_with_its_reason_and_the_others_are_scored():
    x, y, s = _data(6)
    a = np.random.default_rng(0).random((6, H, H)).astype(np.float32)
    a[2] = 0.0
    a[4] = 3.0
    a[5, 0, 0] = np.nan
    for name in ("RelevanceMassAccuracy", "FaithfulnessCorrelation", "Sparseness"):
        scores, reasons, _ = qm.run_quantus(name, _model(), x, y, a, s, settings=CFG, seed=0)
        assert reasons[2] == "constant map (all zero)" and reasons[4] == "constant map"
        assert reasons[5] == "map has non-finite values"
        assert np.isnan(scores[[2, 4, 5]]).all()
        assert np.isfinite(scores[[0, 1, 3]]).all() and reasons[0] is None


def test_mass_metrics_read_the_map_above_its_mean_and_rank_metrics_the_order():
    """A constant shift (margin versus margin_centred) changes no metric; the mass is what lies
    above the image's own mean, so a never-positive map (distance) is scored, not NaN."""
    x, y, s = _data(8)
    centred = np.random.default_rng(0).normal(size=s.shape).astype(np.float32)
    centred += 1.5 * s  # evidence above the image's average on the object
    shifted = centred + 10.0  # the same map with a large spatially constant part
    for name in ("RelevanceRankAccuracy", "AUC", "PointingGame", "RelevanceMassAccuracy",
                 "AttributionLocalisation", "Sparseness"):
        a1, _, e = qm.run_quantus(name, _model(), x, y, centred, s, settings=CFG, seed=0)
        a2, _, _ = qm.run_quantus(name, _model(), x, y, shifted, s, settings=CFG, seed=0)
        assert np.allclose(a1, a2, atol=1e-5), name
    assert e.settings["map_scaling"].startswith("per-sample positive part of the map minus its mean")
    share = qm.mask_share(s)
    m1, _, _ = qm.run_quantus("RelevanceMassAccuracy", _model(), x, y, centred, s, settings=CFG, seed=0)
    assert np.all(m1 > share)  # the centred map localises above chance
    never_positive = -np.abs(np.random.default_rng(1).normal(size=s.shape)).astype(np.float32) - 0.1 + s
    m, reasons, _ = qm.run_quantus("RelevanceMassAccuracy", _model(), x, y, never_positive - 3.0, s, settings=CFG, seed=0)
    assert reasons == [None] * 8 and np.all(m > share)


def test_masks_empty_full_or_absent_are_reported():
    x, y, s = _data(4)
    s[1] = 0
    s[2] = 1
    a = np.random.default_rng(0).random((4, H, H)).astype(np.float32)
    scores, reasons, _ = qm.run_quantus("PointingGame", _model(), x, y, a, s, settings=CFG, seed=0)
    assert reasons[1] == "empty mask" and reasons[2] == "mask covers the whole image"
    assert np.isnan(scores[1]) and np.isnan(scores[2]) and np.isfinite(scores[[0, 3]]).all()
    scores, reasons, _ = qm.run_quantus("AUC", _model(), x, y, a, None, settings=CFG, seed=0)
    assert np.isnan(scores).all() and reasons == [qm.NO_MASKS] * 4


def test_a_quantus_failure_is_retried_per_sample(monkeypatch):
    """If Quantus raises on the batch, each sample is rerun alone; only the bad one is lost."""
    x, y, _ = _data(5)
    a = np.random.default_rng(0).random((5, H, H)).astype(np.float32)
    calls = []

    class RefusesSampleThree:
        def __call__(self, model, x_batch, a_batch, **kw):
            calls.append(len(x_batch))
            if any(np.array_equal(xb, x[3]) for xb in x_batch):
                raise AssertionError("Attributions should not all be less than zero.")
            return a_batch.reshape(len(a_batch), -1).mean(axis=1)

    fake = qm.QuantusSpec("Fake", qm.Category.COMPLEXITY, qm.Direction.HIGHER, needs_masks=False,
                          needs_model=False, needs_explain_func=False, invariances=qm.MAP_AFFINE,
                          scaling="rank",
                          build=lambda cfg, size, **kw: qm.Built(RefusesSampleThree(), {}, qm.plain))
    monkeypatch.setitem(qm.QUANTUS_METRICS._items, "Fake", fake)
    scores, reasons, _ = qm.run_quantus("Fake", _model(), x, y, a, None, settings=CFG, seed=0)
    assert calls == [5, 1, 1, 1, 1, 1]
    assert np.isnan(scores[3]) and reasons[3] == ("quantus AssertionError: Attributions should "
                                                  "not all be less than zero.")
    assert np.allclose(scores[[0, 1, 2, 4]], qm.minmax(a)[[0, 1, 2, 4]].mean(axis=(1, 2)))
    assert [r for i, r in enumerate(reasons) if i != 3] == [None] * 4


def test_reseeding_makes_faithfulness_correlation_repeatable():
    x, y, _ = _data(6)
    a = np.random.default_rng(0).random((6, H, H)).astype(np.float32)
    first, _, _ = qm.run_quantus("FaithfulnessCorrelation", _model(), x, y, a, None, settings=CFG, seed=11)
    np.random.seed(999)  # whatever ran in between must not matter
    np.random.random(17)
    second, _, _ = qm.run_quantus("FaithfulnessCorrelation", _model(), x, y, a, None, settings=CFG, seed=11)
    other, _, _ = qm.run_quantus("FaithfulnessCorrelation", _model(), x, y, a, None, settings=CFG, seed=12)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_pixel_flipping_curves_run_from_one_to_zero_and_auc_is_their_area():
    """Curves are (f(x_k) - f(x_L)) / (f(x_0) - f(x_L)): 1 unperturbed, 0 with every value removed."""
    x, y, _ = _data(4)
    model = _model()
    a = np.random.default_rng(0).random((4, H, H)).astype(np.float32)
    scores, reasons, extra = qm.run_quantus("PixelFlipping", model, x, y, a, None, settings=CFG, seed=0)
    fractions, curves = extra.fractions, extra.curves
    steps = qm.features_in_step(3, H, H, CFG.n_steps)[1]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and curves.shape == (4, steps + 1)
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()[np.arange(4), y]
        black = model(torch.from_numpy(qm.fully_perturbed(x, "black"))).numpy()[np.arange(4), y]
    ok = logits > black
    assert ok.any() and (~ok).any()  # both cases occur on this random model
    assert np.allclose(curves[ok, 0], 1.0) and np.allclose(curves[ok, -1], 0.0, atol=1e-5)
    assert np.allclose(scores[ok], np.trapezoid(curves[ok], fractions, axis=1))
    assert np.isnan(scores[~ok]).all() and all(r == qm.metrics.NOT_DECREASING for r in np.array(reasons)[~ok])


def test_faithful_map_beats_its_inverse_on_a_model_that_only_sees_one_region():
    """A model whose class score is the mean of the top-left quadrant: the quadrant map is faithful."""

    class Quadrant(torch.nn.Module):
        def forward(self, x):
            q = x[:, :, : H // 2, : H // 2].mean(dim=(1, 2, 3))
            return torch.stack([q, -q], dim=1)

    x = np.abs(np.random.default_rng(0).normal(size=(6, 3, H, H))).astype(np.float32) + 1.0
    y = np.zeros(6, dtype=np.int64)
    good = np.zeros((6, H, H), dtype=np.float32)
    good[:, : H // 2, : H // 2] = 1.0
    good += np.random.default_rng(1).random(good.shape).astype(np.float32) * 0.01
    bad = 1.0 - good
    m = Quadrant().eval()
    for name, better in [("PixelFlipping", np.less), ("RegionPerturbation", np.greater),
                         ("FaithfulnessCorrelation", np.greater)]:
        g, _, _ = qm.run_quantus(name, m, x, y, good, None, settings=CFG, seed=0)
        b, _, _ = qm.run_quantus(name, m, x, y, bad, None, settings=CFG, seed=0)
        assert better(np.nanmean(g), np.nanmean(b)), name


def test_random_logit_needs_an_explanation_function():
    x, y, _ = _data(4)
    a = np.random.default_rng(0).random((4, H, H)).astype(np.float32)
    scores, reasons, _ = qm.run_quantus("RandomLogit", _model(), x, y, a, None, settings=CFG, seed=0)
    assert np.isnan(scores).all() and reasons[0] == "no explanation function for this explainer"

    def same_map_for_every_class(model, inputs, targets, **kw):
        return a[: len(inputs)]

    scores, reasons, _ = qm.run_quantus("RandomLogit", _model(), x, y, a, None, settings=CFG, seed=0,
                                        explain_func=same_map_for_every_class)
    assert np.allclose(scores, 1.0)  # identical maps for every class: SSIM 1, the worst score
