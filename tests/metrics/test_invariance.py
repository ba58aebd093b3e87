"""Invariances of the Quantus metrics (docs/METHOD.md, section 6), proven on data.

- every metric: a per-image positive affine change of the map, ``a -> alpha a + c``;
- every faithfulness metric: a positive affine change of the explained model's outputs,
  ``f -> alpha f + beta`` (k-means squared distances versus CNN logits);
- the evaluation itself: a model whose outputs are multiplied by 10 and shifted reports the same
  faithfulness numbers, and maps equal up to a constant share their results.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmx_eval.metrics import quantus as qm
from kmx_eval.metrics.evaluation import EvaluationTables

H = 16
SETTINGS = qm.QuantusSettings(nr_runs=4, n_steps=4, regions_evaluation=4, patch_fraction=0.25)
MAP_ONLY = [n for n in qm.QUANTUS_METRICS if not qm.QUANTUS_METRICS.get(n).needs_model]
FAITHFULNESS = [n for n in qm.QUANTUS_METRICS
                if qm.QUANTUS_METRICS.get(n).category == qm.Category.FAITHFULNESS]


class Affine(torch.nn.Module):
    """``alpha * model(x) + beta``: the same decisions and rankings in other output units."""

    def __init__(self, model, alpha: float, beta: float):
        super().__init__()
        self.model, self.alpha, self.beta = model, alpha, beta
        self.eval()

    def forward(self, x):
        # In float64: a float32 shift of up to 500 would round away the differences between scores
        # that the metrics compare (a rounding error, not a failure of the invariance).
        return self.alpha * self.model(x).double() + self.beta


def _model():
    """Class scores that grow with the image's intensity, so that removing everything (the black
    baseline) lowers them, as for a trained model's predicted class."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(24, 3)).eval()
    with torch.no_grad():
        model[0].weight.abs_()
        model[4].weight.abs_()
    return model


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, H, H)).astype(np.float32)
    with torch.no_grad():  # the predicted class, as the explain stage explains by default
        y = _model()(torch.from_numpy(x)).argmax(1).numpy()
    s = np.zeros((n, H, H), dtype=np.uint8)
    s[:, 4:11, 3:12] = 1
    # distinct integer values: alpha = 2^k and integer c keep alpha a + c exact in float32
    a = np.stack([rng.permutation(H * H).reshape(H, H) for _ in range(n)]).astype(np.float32)
    return x, y, s, a


def test_every_metric_declares_its_invariances():
    for name in qm.QUANTUS_METRICS:
        spec = qm.QUANTUS_METRICS.get(name)
        assert spec.invariant_to(qm.Invariance.MAP_SHIFT, qm.Invariance.MAP_SCALE), name
        if spec.category == qm.Category.FAITHFULNESS:
            assert spec.invariant_to(qm.Invariance.OUTPUT_AFFINE), name
            assert not spec.invariant_to(qm.Invariance.OUTPUT_AFFINE, softmax=True), name


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(-3, 3), c=st.integers(-5000, 5000), seed=st.integers(0, 100))
def test_map_metrics_are_invariant_to_a_positive_affine_change_of_the_map(k, c, seed):
    x, y, s, a = _data(3, seed)
    b = (2.0 ** k) * a + c
    for name in MAP_ONLY:
        s1, r1, _ = qm.run_quantus(name, _model(), x, y, a, s, settings=SETTINGS, seed=0)
        s2, r2, _ = qm.run_quantus(name, _model(), x, y, b, s, settings=SETTINGS, seed=0)
        assert r1 == r2 and np.allclose(s1, s2, atol=1e-6, equal_nan=True), name


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alpha=st.floats(0.05, 50), beta=st.floats(-500, 500), seed=st.integers(0, 100))
def test_faithfulness_is_invariant_to_a_positive_affine_change_of_the_model_outputs(alpha, beta, seed):
    x, y, _, a = _data(3, seed)
    for name in FAITHFULNESS:
        s1, r1, _ = qm.run_quantus(name, _model(), x, y, a, None, settings=SETTINGS, seed=0)
        s2, r2, _ = qm.run_quantus(name, Affine(_model(), alpha, beta), x, y, a, None, settings=SETTINGS, seed=0)
        assert r1 == r2, name
        assert np.allclose(s1, s2, rtol=1e-3, atol=1e-4, equal_nan=True), (name, s1, s2)


def test_raw_scores_would_not_be_invariant():
    """The normalisation matters: the raw class scores do scale with the outputs."""
    x, y, _, _ = _data(3, 0)
    raw = qm.class_scores(_model(), x, y, softmax=False, device="cpu", batch_size=8)
    scaled = qm.class_scores(Affine(_model(), 10.0, 3.0), x, y, softmax=False, device="cpu", batch_size=8)
    assert np.allclose(scaled, 10 * raw + 3, atol=1e-4) and not np.allclose(scaled, raw)


@given(alpha=st.floats(1e-3, 1e3), t=st.floats(-100, 100))
@settings(max_examples=30, deadline=None)
def test_scalings_and_affine_equivalence(alpha, t):
    """``alpha a + c`` with ``c = alpha t``: a shift up to 100 times the map's spread."""
    a = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    b = (alpha * (a.astype(np.float64) + t)).astype(np.float32)
    for scale in qm.SCALINGS.values():
        assert np.allclose(scale(a), scale(b), atol=1e-3)
    assert qm.affine_equivalent(a, b, atol=1e-3)
    assert not qm.affine_equivalent(a, -b)  # a negative factor reverses the ranking
    assert not qm.affine_equivalent(a, a ** 2)


def test_never_positive_maps_are_scored_by_where_they_exceed_their_mean():
    x, y, s, _ = _data(4, 1)
    rng = np.random.default_rng(0)
    distance = -rng.random((4, H, H)).astype(np.float32) - 1.0 + 0.8 * s  # <= 0 everywhere, higher on S
    for name in ("RelevanceMassAccuracy", "AttributionLocalisation"):
        scores, reasons, _ = qm.run_quantus(name, _model(), x, y, distance, s, settings=SETTINGS, seed=0)
        assert reasons == [None] * 4 and np.all(scores > qm.mask_share(s)), name


def test_the_evaluation_reports_the_same_faithfulness_for_outputs_times_ten_plus_a_shift():
    x, y, s, a = _data(4, 3)
    tables = {}
    for label, model in (("plain", _model()), ("scaled", Affine(_model(), 10.0, -7.5))):
        t = EvaluationTables("toy", "B4", n_resamples=20, confidence=0.9)
        t.add_explainer(0, "margin", model, x=x, y=y, a=a, masks=s, metrics=FAITHFULNESS, settings=SETTINGS,
                        device="cpu", sample_ids=np.arange(4), progress=False)
        tables[label] = t.frames()
    (m1, s1, c1), (m2, s2, c2) = tables["plain"], tables["scaled"]
    assert set(m1.metric) == set(FAITHFULNESS) and m1.value.notna().all()
    assert np.allclose(m1.value, m2.value, rtol=1e-4, atol=1e-5)
    assert np.allclose(s1.value, s2.value, rtol=1e-4, atol=1e-5, equal_nan=True)
    assert np.allclose(c1.score, c2.score, rtol=1e-4, atol=1e-5)


def test_maps_equal_up_to_a_constant_share_their_results():
    x, y, s, a = _data(3, 4)
    t = EvaluationTables("toy", "B4", n_resamples=20, confidence=0.9)
    names = ["PixelFlipping", "RelevanceMassAccuracy"]
    same = dict(x=x, y=y, masks=s, metrics=names, settings=SETTINGS, device="cpu", sample_ids=np.arange(3),
                progress=False)
    t.add_explainer(0, "margin", _model(), a=a + 100.0, **same)
    t.add_explainer(0, "margin_centred", _model(), a=a - a.mean(axis=(1, 2), keepdims=True), **same)
    t.add_explainer(0, "random", _model(), a=np.random.default_rng(1).random(a.shape).astype(np.float32), **same)
    m = t.frames()[0].set_index(["method", "metric"])
    assert t.shared == {"margin_centred": "margin"}
    assert m.loc[("margin", "PixelFlipping"), "n"] > 0
    for name in names:
        assert m.loc[("margin", name), "value"] == m.loc[("margin_centred", name), "value"]
        assert "computed once for margin" in m.loc[("margin_centred", name), "note"]
        assert "computed once" not in m.loc[("random", name), "note"]
    assert "explainer/margin_centred" not in t.seconds


def test_the_headline_measure_must_be_an_invariant_localisation_metric(monkeypatch):
    from kmx_eval.errors import ParamsError
    from kmx_eval.validation import parse_params

    base = {"datasets": {"s": {"source": "synthetic"}}}
    assert parse_params({**base, "report": {"fidelity_metric": "RelevanceRankAccuracy"}})
    with pytest.raises(ParamsError, match="fidelity_metric: PixelFlipping is a faithfulness metric"):
        parse_params({**base, "report": {"fidelity_metric": "PixelFlipping"}})
    # a localisation metric that a per-image constant could move is refused, saying why
    spec = qm.QUANTUS_METRICS.get("RelevanceMassAccuracy")
    monkeypatch.setitem(qm.QUANTUS_METRICS._items, "RelevanceMassAccuracy",
                        type(spec)(**{**spec.__dict__, "invariances": frozenset({qm.Invariance.MAP_SCALE})}))
    with pytest.raises(ParamsError, match="not invariant to map_shift of the map"):
        parse_params({**base, "report": {"fidelity_metric": "RelevanceMassAccuracy"}})
