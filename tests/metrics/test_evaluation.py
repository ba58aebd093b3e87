"""EvaluationTables: rows for heads, prototypes, explainers and concepts from arrays alone."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kmx_eval.heads.kmex import fit_kmex_reference
from kmx_eval.metrics import prototype_fidelity as pf
from kmx_eval.metrics import sharpness as sh
from kmx_eval.metrics import tidy
from kmx_eval.metrics.evaluation import (NO_PARTS, EvaluationTables, PrototypeSet, class_means_set,
                                         kmeans_prototype_set, kmex_reference_set)
from kmx_eval.metrics.quantus import NO_MASKS, QuantusSettings

H = 32
QUANTUS = ["RelevanceMassAccuracy", "AUC", "PixelFlipping", "Sparseness"]
SETTINGS = QuantusSettings()


def _tables():
    return EvaluationTables("toy", "B34", n_resamples=100, confidence=0.9)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()


def test_head_rows_and_samples():
    t = _tables()
    labels = np.array([0, 1, 2, 1])
    t.add_heads(0, {"kmeans": np.array([0, 1, 1, 1]), "probe": labels}, labels=labels,
                cnn_predictions=np.array([0, 1, 2, 2]), sample_ids=np.arange(4))
    df, samples, _ = t.frames()
    acc = df[(df.metric == "accuracy")].set_index("method")["value"]
    assert acc["kmeans"] == 0.75 and acc["probe"] == 1.0
    agr = df[(df.metric == "agreement")].set_index("method")["value"]
    assert agr["kmeans"] == 0.5 and agr["probe"] == 0.75
    assert len(samples) == 16 and set(samples.metric) == {"accuracy", "agreement"}


def test_prototype_rows_separate_on_data_from_off_data_prototypes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    z = np.concatenate([c + rng.normal(size=(30, 8)) for c in centres])
    y = np.repeat(np.arange(3), 30)
    means = np.stack([z[y == c].mean(0) for c in range(3)])
    kmeans = kmeans_prototype_set(means[:, None].repeat(2, axis=1), np.array([1, 1, 1]), y)
    assert kmeans.prototypes.shape == (3, 8)  # padded repeats are not prototypes
    off = PrototypeSet(means * 30.0, np.arange(3), y)
    t = _tables()
    t.add_prototypes(0, {"kmeans": kmeans, "linear": off}, z_train=z, y_train=y, z_test=z, purity_m=5)
    df = t.frames()[0].set_index(["method", "metric"])
    assert df.loc[("kmeans", "proximity"), "value"] < 1.5 < 10 < df.loc[("linear", "proximity"), "value"]
    assert df.loc[("kmeans", "purity"), "value"] == 1.0
    assert df.loc[("kmeans", "purity"), "chance"] == pytest.approx(1 / 3)
    assert df.loc[("kmeans", "decision_agreement"), "value"] == 1.0
    assert not df.loc[("kmeans", "proximity"), "higher_is_better"]
    assert df.loc[("kmeans", "diversity_scaled"), "n"] == 3
    assert df.loc[("kmeans", "diversity_kmex"), "n"] == 3
    assert "depends on the scale" in df.loc[("kmeans", "diversity_kmex"), "note"]


def test_a_prototype_set_with_its_own_space_is_measured_there():
    """The KMEx reference head lives in raw embeddings: its proximity is read against those, not z_S."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    z = np.concatenate([c + rng.normal(size=(20, 8)) for c in centres])
    y = np.repeat(np.arange(3), 20)
    raw = 50.0 * z + 7.0  # another space: rescaled and shifted
    head = fit_kmex_reference(raw, y, n_prototypes=2, seed=0)
    t = _tables()
    t.add_prototypes(0, {"kmeans_kmex": kmex_reference_set(head, raw, raw)}, z_train=z, y_train=y, z_test=z,
                     purity_m=5)
    df = t.frames()[0].set_index(["method", "metric"])
    assert df.loc[("kmeans_kmex", "proximity"), "value"] < 1.5
    assert df.loc[("kmeans_kmex", "purity"), "value"] == 1.0
    assert df.loc[("kmeans_kmex", "decision_agreement"), "value"] == 1.0
    assert "deepest block" in df.loc[("kmeans_kmex", "proximity"), "note"]
    # measured in z_S instead, the same prototypes would sit far off the data
    assert pf.proximity_ratio(head.prototypes_.reshape(6, 8), z) > 10


def _linear_rows(W, b, z, y, decisions):
    t = _tables()
    t.add_prototypes(0, {"linear": PrototypeSet(W, np.arange(len(W)), decisions, linear=True, bias=b),
                         "class_means": class_means_set(z, y, z, np.arange(len(W)))},
                     z_train=z, y_train=y, z_test=z, purity_m=5)
    return t.frames()[0].set_index(["method", "metric"])


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), log_alpha=st.floats(-2, 2), shift=st.floats(-20, 20), beta=st.floats(-5, 5))
# seed 49: the head never predicts class 0, so the canonical reading is undefined (NaN) for both heads
@example(seed=49, log_alpha=0.5, shift=3.0, beta=1.0)
def test_every_invariant_linear_prototype_number_is_the_same_for_an_equivalent_head(seed, log_alpha, shift, beta):
    """Invariance (docs/METHOD.md, section 6): a head alpha (w_c + v), alpha (b_c + beta) with the same
    decisions gives the same canonical reading, purity and scale-free diversity; only the rows labelled
    alpha = 1, v = 0 (and KMEx's diversity, which depends on the scale) move."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(3, 6))) * 4
    z = np.concatenate([c + np.abs(rng.normal(size=(20, 6))) for c in centres])
    y = np.repeat(np.arange(3), 20)
    W = 0.05 * (centres - centres.mean(0)) + 0.01 * rng.normal(size=centres.shape)
    b = rng.normal(size=3) * 0.01
    alpha = 10.0 ** log_alpha
    W2, b2 = alpha * (W + rng.normal(size=6) * shift), alpha * (b + beta)
    decisions = (z @ W.T + b).argmax(1)
    assert np.array_equal(decisions, (z @ W2.T + b2).argmax(1))
    a, c = _linear_rows(W, b, z, y, decisions), _linear_rows(W2, b2, z, y, decisions)
    canonical = [k for k in a.index if k[0] == "linear_canonical"]
    assert len(canonical) == 6
    invariant = ([k for k in canonical if k[1] != "diversity_kmex"] + [("linear", "purity"),
                 ("linear", "diversity_scaled")] + [k for k in a.index if k[0] == "class_means"])
    for key in invariant:
        for col in ("value", "ci_low", "ci_high"):
            # undefined (NaN) for one head must be undefined for the other: NaN matches NaN only
            assert c.loc[key, col] == pytest.approx(a.loc[key, col], rel=1e-6, abs=1e-9, nan_ok=True), (key, col)
    assert "alpha = 1, v = 0" in a.loc[("linear", "proximity"), "note"]
    if np.isnan(a.loc[("linear_canonical", "decision_agreement"), "value"]):  # undefined for both heads
        for rows in (a, c):
            assert rows.loc[canonical, "note"].str.startswith("undefined: no positive scale").all()
    else:
        assert "canonical reading" in a.loc[("linear_canonical", "separation"), "note"]
        # the canonical reading is the head's own rule without offsets
        assert a.loc[("linear_canonical", "decision_agreement"), "value"] == 1.0


def test_a_canonical_reading_that_does_not_exist_says_why():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 4)) * 5
    z = np.concatenate([c + rng.normal(size=(10, 4)) for c in centres])
    y = np.repeat(np.arange(3), 10)
    W = -(centres - centres.mean(0))  # rows opposite to the class means: only a flipped rule fits
    rows = _linear_rows(W, np.zeros(3), z, y, (z @ W.T).argmax(1))
    assert np.isnan(rows.loc[("linear_canonical", "separation"), "value"])
    assert "no positive scale" in rows.loc[("linear_canonical", "separation"), "note"]


def test_explainer_rows_with_and_without_masks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, H, H)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    masks = np.zeros((5, H, H), dtype=np.uint8)
    masks[:, 8:24, 8:24] = 1
    a = rng.random((5, H, H)).astype(np.float32)
    a[1] = 0.0
    t = _tables()
    same = dict(x=x, y=y, a=a, metrics=QUANTUS, settings=SETTINGS, device="cpu", sample_ids=np.arange(10, 15),
                progress=False)
    t.add_explainer(0, "margin", _model(), masks=masks, **same)
    t.add_explainer(1, "margin", _model(), masks=None, **same)
    df, samples, curves = t.frames()
    with_masks = df[df.seed == 0].set_index("metric")
    assert with_masks.loc["RelevanceMassAccuracy", "n"] == 4
    assert with_masks.loc["RelevanceMassAccuracy", "n_missing"] == 1
    assert with_masks.loc["RelevanceMassAccuracy", "note"] == "1 missing: constant map (all zero) (1)"
    assert with_masks.loc["RelevanceMassAccuracy", "chance"] == pytest.approx(0.25)
    assert with_masks.loc["PixelFlipping", "category"] == "faithfulness"
    no_masks = df[df.seed == 1].set_index("metric")
    for name in ("RelevanceMassAccuracy", "AUC"):
        assert np.isnan(no_masks.loc[name, "value"]) and no_masks.loc[name, "note"] == NO_MASKS
    assert no_masks.loc["AUC", "chance"] == 0.5 and np.isnan(no_masks.loc["RelevanceMassAccuracy", "chance"])
    assert np.isfinite(no_masks.loc["Sparseness", "value"])
    assert set(samples["sample"]) == set(range(10, 15)) and len(samples) == 2 * 4 * 5
    assert list(curves.columns) == list(tidy.CURVE_COLUMNS)
    steps = t.settings["quantus"]["PixelFlipping"]["n_steps"]
    from kmx_eval.metrics.quantus import features_in_step

    assert steps == features_in_step(3, H, H, SETTINGS.n_steps)[1]
    assert len(curves[curves.seed == 0]) == steps + 1  # fraction 0 .. 1
    assert curves.fraction.min() == 0.0 and curves.fraction.max() == 1.0


def test_concept_rows_against_parts_mask_or_nothing():
    parts = np.zeros((3, 12, 12), dtype=np.int64)
    parts[:, 2:8, 2:6] = 1
    parts[:, 2:8, 6:10] = 2
    parts[2] = 0  # a part map with one label: ARI and NMI undefined
    t = _tables()
    t.add_concepts(0, {"concepts_global": parts.astype(np.int16) + 4}, parts=parts, masks=None,
                   sample_ids=np.arange(3), grid=(3, 3))
    t.add_concepts(1, {"concepts_global": parts.astype(np.int16)}, parts=None, masks=(parts > 0).astype(np.uint8),
                   sample_ids=np.arange(3))
    t.add_concepts(2, {"concepts_global": parts.astype(np.int16)}, parts=None, masks=None, sample_ids=np.arange(3))
    df = t.frames()[0].set_index(["seed", "method", "metric"])
    exact = df.loc[(0, "concepts_global")]
    for region in ("object", "image"):
        assert exact.loc[f"concept_ari_{region}", "value"] == 1.0
        assert exact.loc[f"concept_ari_{region}", "n_missing"] == 1
        assert "a single part" in exact.loc[f"concept_ari_{region}", "note"]
        # floor: shuffled ids score far below the exact map
        assert exact.loc[f"concept_ari_{region}", "chance"] < 0.5
    assert "inside the object mask" in exact.loc["concept_purity_object", "note"]
    # ceiling: the part map on a 3 x 3 grid cannot reach the exact map at 12 x 12
    oracle = df.loc[(0, "oracle")]
    assert oracle.loc["concept_ari_object", "value"] < 1.0
    assert "ceiling" in oracle.loc["concept_ari_object", "note"]
    # mask only: one label inside the object, so only whole-image scores exist
    masked = df.loc[(1, "concepts_global")]
    assert masked.loc["concept_nmi_image", "note"].startswith("against mask")
    assert np.isnan(masked.loc["concept_ari_object", "value"])
    nothing = df.loc[(2, "concepts_global")]
    assert np.isnan(nothing.loc["concept_purity_object", "value"])
    assert nothing.loc["concept_purity_object", "note"] == NO_PARTS


def test_summary_keeps_key_numbers_per_seed():
    t = _tables()
    labels = np.array([0, 1])
    t.add_heads(3, {"kmeans": labels}, labels=labels, cnn_predictions=labels, sample_ids=np.arange(2))
    assert t.summary() == {"seed3": {"kmeans/accuracy": 1.0, "kmeans/agreement": 1.0}}


def test_summary_metrics_are_the_fidelity_metric_where_computed():
    from kmx_eval.metrics.evaluation import summary_metrics

    computed = ["AUC", "PixelFlipping", "RelevanceRankAccuracy", "FaithfulnessCorrelation"]
    assert summary_metrics("RelevanceRankAccuracy", computed) == ("RelevanceRankAccuracy",)
    assert summary_metrics("RelevanceMassAccuracy", ["AUC", "PixelFlipping"]) == ()


def test_settings_file_records_the_settings_and_what_the_tables_used():
    from kmx_eval.config import EvaluateConfig

    ev = EvaluateConfig(softmax=True, top_k_fraction=0.2, bootstrap={"n_resamples": 50})
    t = _tables()
    t.settings["purity_m"] = 3
    t.settings["softmax"] = "recorded"  # what the tables recorded wins over the params' copy
    t.shared.update(margin_centred="margin", b="a")
    out = t.settings_file(ev, [2, 0], 6, "standardize", "cnn")
    assert out["n_images"] == 6 and out["seeds"] == [2, 0] and out["top_k_fraction"] == 0.2
    assert out["bootstrap"] == {"n_resamples": 50, "confidence": 0.95}
    assert out["faithfulness"] == ev.faithfulness.model_dump()
    assert out["normalisation"] == "standardize" and out["head_labels"] == "cnn"
    assert list(out["shared_results"]) == ["b", "margin_centred"]
    assert out["purity_m"] == 3 and out["softmax"] == "recorded"
    # The CNN's baselines read the deepest block's z without normalisation, whatever the params say.
    from kmx_eval.pipeline.evaluate import described_normalisation

    assert described_normalisation("cnn", "standardize").startswith("none (z of the deepest")
    assert described_normalisation("B34", "standardize") == "standardize"


def test_time_is_logged_slowest_first(caplog):
    t = _tables()
    t.seconds.update({"AUC": 1.0, "PixelFlipping": 5.0, "concepts": 2.5})
    with caplog.at_level("INFO", logger="kmx_eval"):
        t.log_seconds()
    assert [r.getMessage().split()[1] for r in caplog.records] == ["PixelFlipping", "concepts", "AUC"]


def test_quantus_settings_from_the_evaluate_section():
    from kmx_eval.config import EvaluateConfig

    ev = EvaluateConfig(softmax=True, top_k_fraction=0.3, faithfulness={"n_steps": 4, "nr_runs": 5},
                        sanity={"n_images": 3, "nr_samples": 7})
    s = QuantusSettings.from_config(ev)
    assert (s.softmax, s.top_k_fraction, s.n_steps, s.nr_runs) == (True, 0.3, 4, 5)
    assert (s.sanity_images, s.stability_samples) == (3, 7)
    assert s.perturb_baseline == ev.faithfulness.perturb_baseline
    assert QuantusSettings.from_config(EvaluateConfig()) == QuantusSettings()  # the same defaults


def test_not_applicable_baselines_only_for_the_cnn():
    from kmx_eval.errors import ParamsError
    from kmx_eval.pipeline.evaluate import not_applicable_baselines

    explainers = ["margin", "cam", "gradcam", "random"]
    assert not_applicable_baselines("B234", explainers, "vgg16_bn") == {}
    assert not_applicable_baselines("cnn", explainers, "resnet18") == {}
    reasons = not_applicable_baselines("cnn", explainers, "vgg16_bn")
    assert list(reasons) == ["cam"] and reasons["cam"].startswith("not applicable: ")
    with pytest.raises(ParamsError, match="backbone.architecture"):
        not_applicable_baselines("B234", explainers, "resnet7")


# ------------------------------------------------------------------ proportions (issue 12)
def test_proportions_are_declared_once_and_pointing_game_is_one():
    from kmx_eval.metrics.evaluation import is_proportion
    from kmx_eval.metrics.quantus import QUANTUS_METRICS

    assert QUANTUS_METRICS.get("PointingGame").proportion
    assert [n for n in QUANTUS_METRICS if QUANTUS_METRICS.get(n).proportion] == ["PointingGame"]
    assert is_proportion("explainer", "PointingGame") and not is_proportion("explainer", "AUC")
    for kind, metric in (("head", "accuracy"), ("head", "agreement"), ("prototypes", "purity"),
                         ("prototypes", "decision_agreement")):
        assert is_proportion(kind, metric)
    for kind, metric in (("prototypes", "proximity"), ("prototypes", "diversity_scaled"),
                         ("prototypes", "diversity_kmex"),
                         ("concepts", "concept_purity_object"), ("explainer", "NoSuchMetric")):
        assert not is_proportion(kind, metric)


def test_proportion_rows_get_wilson_and_the_others_keep_their_bootstrap():
    from kmx_eval.metrics import prototype_fidelity as pf
    from kmx_eval.metrics.bootstrap import bootstrap_ci, wilson_interval

    t = _tables()
    labels = np.arange(48) % 3
    t.add_heads(2, {"kmeans": labels}, labels=labels, cnn_predictions=labels, sample_ids=np.arange(48))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    z = np.concatenate([c + rng.normal(size=(16, 8)) for c in centres])
    y = np.repeat(np.arange(3), 16)
    protos = np.concatenate([centres, centres + 1.0])
    ps = PrototypeSet(protos, np.r_[np.arange(3), np.arange(3)], y)
    t.add_prototypes(2, {"kmeans": ps}, z_train=z, y_train=y, z_test=z, purity_m=5, sample_ids=np.arange(48) * 2)
    df, samples, _ = t.frames()
    rows = df.set_index(["method", "metric"])
    low = wilson_interval(48, 48, 0.9)[0]
    for key in (("kmeans", "accuracy"), ("kmeans", "agreement"), ("kmeans", "decision_agreement")):
        assert rows.loc[key, "value"] == 1.0 and rows.loc[key, "ci_high"] == 1.0
        assert rows.loc[key, "ci_low"] == pytest.approx(low) and low < 1
    purity = pf.class_purities(protos, ps.classes, z, y, m=5)
    assert (rows.loc[("kmeans", "purity"), "ci_low"], rows.loc[("kmeans", "purity"), "ci_high"]) == \
        wilson_interval(purity.mean() * 6, 6, 0.9)
    # Other rows: byte-identical to the percentile bootstrap seeded by the training seed.
    for metric, v in (("proximity", pf.proximity_ratios(protos, z, "euclidean")),
                      ("diversity_scaled", pf.diversity_scaled_per_prototype(protos)),
                      ("diversity_kmex", pf.diversity_kmex_per_prototype(protos))):
        r = rows.loc[("kmeans", metric)]
        assert (r["value"], r["ci_low"], r["ci_high"]) == bootstrap_ci(v, 100, 0.9, seed=2)
    # Decision agreement's per-sample values are written, under the given sample ids.
    agree = samples[samples.metric == "decision_agreement"]
    assert list(agree["sample"]) == list(np.arange(48) * 2) and set(agree["value"]) == {1.0}
    # Without sample ids: positions 0..n_test-1 (as the heads' rows).
    t2 = _tables()
    t2.add_prototypes(0, {"kmeans": ps}, z_train=z, y_train=y, z_test=z, purity_m=5)
    t2_samples = t2.frames()[1]
    assert list(t2_samples[t2_samples.metric == "decision_agreement"]["sample"]) == list(range(48))
    # Per-prototype values under the prototype's index, for the report's seeds-then-prototypes interval.
    sep = samples[samples.metric == "separation"]
    assert list(sep["sample"]) == list(range(6))
    np.testing.assert_allclose(sep["value"], pf.separation_proximities(protos, ps.classes, z), rtol=1e-9)


def test_sharpness_rows_beside_the_coarse_twin_with_parts_masks_or_neither():
    parts = np.zeros((4, 24, 24), dtype=np.int64)
    parts[:, 4:10, 4:10] = 1
    parts[:, 4:10, 14:20] = 2
    sharp = (parts > 0).astype(np.float32) + np.random.default_rng(0).random(parts.shape).astype(np.float32) * 0.01
    maps = {"sharp": sharp, "flat": np.ones_like(sharp)}
    t = _tables()
    t.add_sharpness(0, maps, grid=(2, 2), masks=(parts > 0).astype(np.uint8), parts=parts, sample_ids=np.arange(4))
    t.add_sharpness(1, maps, grid=(2, 2), masks=None, parts=None, sample_ids=np.arange(4))
    rows, samples, _ = t.frames()
    df = rows.set_index(["seed", "method", "metric"])
    got = df.loc[(0, "sharp")]
    assert set(got.index) == set(sh.SHARPNESS_METRICS) and (rows["category"] == "sharpness").all()
    assert got.loc["mass_in_mask_gain", "value"] > 0.1
    assert got.loc["fine_energy", "value"] > got.loc["fine_energy_coarse", "value"]
    assert got.loc["part_pointing", "value"] == 1.0 > got.loc["part_pointing_coarse", "value"]
    assert 0 < got.loc["part_pointing", "chance"] < 1
    assert got.loc["mass_in_mask", "chance"] == pytest.approx((parts > 0).mean())
    assert "coarse grid 2x2" in got.loc["fine_energy", "note"]
    flat = df.loc[(0, "flat")]
    assert np.isnan(flat.loc["fine_energy", "value"]) and "constant map" in flat.loc["fine_energy", "note"]
    none = df.loc[(1, "sharp")]
    assert np.isfinite(none.loc["fine_energy", "value"])
    assert none.loc["mass_in_mask", "note"] == NO_MASKS
    assert "no part maps" in none.loc["part_pointing", "note"]
    per_image = samples[(samples["seed"] == 0) & (samples["method"] == "sharp") & (samples["metric"] == "fine_energy")]
    assert len(per_image) == 4


def test_the_coarsest_grid_is_the_deepest_blocks_at_the_image_size():
    from kmx_eval.pipeline.evaluate import coarsest_grid  # as the test above imports the pipeline

    assert coarsest_grid("resnet18", 96) == (3, 3)
    assert coarsest_grid("resnet34", 224) == (7, 7)
    assert coarsest_grid("resnet18", 64) == (2, 2)
