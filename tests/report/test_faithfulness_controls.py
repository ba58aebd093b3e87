"""Faithfulness against the random map of the same model, and its occlusion control
(kmx_eval.report.faithfulness; docs/METHOD.md, section 6)."""

import numpy as np
import pandas as pd

from kmx_eval.report import faithfulness as rf
from kmx_eval.report import stats

BOOT = dict(n_resamples=200, confidence=0.95, seed=0)
HIGHER = {"SymmetricMoRFLeRF": True, "PixelFlipping": False}


def _samples(values: dict, n: int = 30, refused: dict | None = None) -> pd.DataFrame:
    """Per-sample rows: values[(dataset, combination, method, metric)] = (mean, sd); refused: the
    sample ids that are NaN with a reason for a key."""
    rng = np.random.default_rng(0)
    rows = []
    for (ds, comb, method, metric), (mean, sd) in values.items():
        v = mean + sd * rng.standard_normal(n)
        for i in range(n):
            bad = i in (refused or {}).get((ds, comb, method, metric), ())
            rows.append(dict(dataset=ds, seed=1, combination=comb, method=method, metric=metric, sample=i,
                             value=np.nan if bad else v[i], reason="refused: span" if bad else ""))
    return pd.DataFrame(rows)


def test_a_metric_enters_only_where_occlusion_beats_random_on_every_model():
    """Shapes: occlusion beats random on both models -> passes; digits: it beats random on B4 but
    not on the CNN -> the metric fails there, and so does a metric with no occlusion map at all."""
    m = "SymmetricMoRFLeRF"
    values = {("shapes", "B4", "random", m): (0.0, 0.1), ("shapes", "B4", "occlusion", m): (0.5, 0.1),
              ("shapes", "baselines", "random", m): (0.0, 0.1), ("shapes", "baselines", "occlusion", m): (0.4, 0.1),
              ("digits", "B4", "random", m): (0.0, 0.1), ("digits", "B4", "occlusion", m): (0.5, 0.1),
              ("digits", "baselines", "random", m): (0.0, 0.1), ("digits", "baselines", "occlusion", m): (0.0, 0.1),
              ("shapes", "B4", "random", "PixelFlipping"): (0.3, 0.1)}
    samples = _samples(values)
    controls = rf.faithfulness_controls(samples, list(HIGHER), higher=HIGHER, **BOOT)
    ok = controls.set_index(["dataset", "combination"])["informative"]
    assert ok[("shapes", "B4")] and ok[("shapes", "baselines")] and ok[("digits", "B4")]
    assert not ok[("digits", "baselines")]
    failed = rf.failed_faithfulness(samples, controls, list(HIGHER))
    assert failed == {"digits": {m}, "shapes": {"PixelFlipping"}}
    # the skip sets the ranking reads: a failed metric is not ranked on that dataset
    merged = rf.merged({"digits": {"PointingGame"}}, failed)
    assert merged == {"digits": {"PointingGame", m}, "shapes": {"PixelFlipping"}}


def test_a_lower_is_better_metric_passes_when_occlusion_scores_lower():
    values = {("d", "B4", "random", "PixelFlipping"): (0.5, 0.05), ("d", "B4", "occlusion", "PixelFlipping"): (0.2, 0.05)}
    controls = rf.faithfulness_controls(_samples(values), ["PixelFlipping"], higher=HIGHER, **BOOT)
    assert controls["informative"].all() and (controls["ci_high"] < 0).all()
    swapped = {("d", "B4", "random", "PixelFlipping"): (0.2, 0.05), ("d", "B4", "occlusion", "PixelFlipping"): (0.5, 0.05)}
    assert not rf.faithfulness_controls(_samples(swapped), ["PixelFlipping"], higher=HIGHER, **BOOT)["informative"].any()


def test_map_minus_random_is_paired_on_the_images_both_scored():
    """The difference is per image and only over images scored for both maps: an image refused for the
    map (or for random) drops its partner, n says how many pairs remain, and the means are over them."""
    m = "SymmetricMoRFLeRF"
    values = {("d", "B4", "random", m): (0.0, 0.1), ("d", "B4", "margin", m): (0.3, 0.1),
              ("d", "B4", "occlusion", m): (0.5, 0.1), ("d", "B4", "oracle", m): (0.5, 0.1)}
    refused = {("d", "B4", "margin", m): {0, 1, 2}, ("d", "B4", "random", m): {3}}
    samples = _samples(values, refused=refused)
    diff = rf.random_differences(samples, [m], higher=HIGHER, **BOOT)
    assert diff["method"].tolist() == ["margin"]  # controls are not compared with the floor
    row = diff.iloc[0]
    assert row.n == 26 and row.better_than_random and row.ci_low > 0
    both = samples[samples["sample"].isin(range(4, 30))]
    expected = (both[both.method == "margin"].value.mean() - both[both.method == "random"].value.mean())
    assert np.isclose(row.difference, expected) and np.isclose(row.map_value - row.random, expected)


def test_paired_comparisons_between_models_use_the_images_scored_on_both():
    """B234 - B4 of one map: images refused on either model are left out of both sides."""
    m = "SymmetricMoRFLeRF"
    values = {("d", "B4", "margin", m): (0.1, 0.1), ("d", "B234", "margin", m): (0.3, 0.1)}
    samples = _samples(values, refused={("d", "B4", "margin", m): {0, 1}, ("d", "B234", "margin", m): {2}})
    cmp = stats.paired_comparisons(samples, [("B4", "B234")], **BOOT)
    assert cmp["n"].tolist() == [27]


def test_controls_frame_has_the_columns_of_the_localisation_controls():
    values = {("d", "B4", "random", "SymmetricMoRFLeRF"): (0.0, 0.1),
              ("d", "B4", "occlusion", "SymmetricMoRFLeRF"): (0.5, 0.1)}
    controls = rf.faithfulness_controls(_samples(values), ["SymmetricMoRFLeRF"], higher=HIGHER, **BOOT)
    frame = rf.controls_frame(controls)
    local = stats.control_differences(_samples(values), ["SymmetricMoRFLeRF"], **BOOT)
    assert list(frame.columns) == list(local.columns)
    assert frame["oracle"].iloc[0] == controls["occlusion"].iloc[0]


def test_the_table_marks_maps_above_random_and_failed_controls():
    m = "SymmetricMoRFLeRF"
    values = {("d", "B4", "random", m): (0.0, 0.1), ("d", "B4", "margin", m): (0.3, 0.1),
              ("d", "B4", "occlusion", m): (0.0, 0.1)}
    samples = _samples(values)
    controls = rf.faithfulness_controls(samples, [m], higher=HIGHER, **BOOT)
    table = rf.random_differences_table(rf.random_differences(samples, [m], higher=HIGHER, **BOOT), controls)
    assert list(table.cells.columns) == ["occlusion − random (control)", "margin − random"]
    assert table.best.loc[("d", "B4", m), "margin − random"]
    assert not table.best.loc[("d", "B4", m), "occlusion − random (control)"]
    assert table.notes.loc[("d", "B4", m), "margin − random"] == "control failed on this model"
