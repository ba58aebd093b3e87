"""Headline sentences come from the numbers, whichever way they come out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kmx_eval.metrics import tidy
from kmx_eval.report import floors, stats, summary
from kmx_eval.report.numbers import fmt

COMBOS = ["B4", "B34", "B234"]


def _agg(acc: dict, fid: dict, cnn_acc=0.97, with_masks=True):
    rows = []
    for comb in COMBOS:
        rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="head", method="kmeans",
                             category="accuracy", metric="accuracy", value=acc[comb],
                             ci_low=acc[comb] - 0.02, ci_high=acc[comb] + 0.01))
        rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="explainer", method="margin",
                             category="localisation", metric="RelevanceMassAccuracy",
                             value=fid[comb] if with_masks else None,
                             ci_low=fid[comb] - 0.05 if with_masks else None,
                             ci_high=fid[comb] + 0.05 if with_masks else None, chance=0.1,
                             note="" if with_masks else "not applicable: dataset has no masks"))
    rows.append(tidy.row(dataset="d", seed=0, combination="cnn", kind="head", method="cnn",
                         category="accuracy", metric="accuracy", value=cnn_acc))
    rows.append(tidy.row(dataset="d", seed=0, combination="cnn", kind="explainer", method="cam",
                         category="localisation", metric="RelevanceMassAccuracy", value=0.15))
    return stats.aggregate_seeds(tidy.frame(rows))


def test_deeper_combination_localises_better_at_a_cost():
    agg = _agg({"B4": 0.971, "B34": 0.96, "B234": 0.95}, {"B4": 0.22, "B34": 0.3, "B234": 0.41})
    text = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy")
    assert text.startswith("On d, B234 localises best (RelevanceMassAccuracy of the margin map 0.41 [0.36, 0.46] "
                           "vs 0.22 for B4)")
    assert "at a cost of 2.1 accuracy points (95% vs 97.1%)" in text
    assert "noise" not in text
    assert "the CNN itself reaches 97%" in text


def _paired(a, b, diff, low, high):
    import pandas as pd

    return pd.DataFrame([dict(dataset="d", a=a, b=b, method="margin", metric="RelevanceMassAccuracy", n=40,
                              n_seeds=1, mean_a=0.0, mean_b=diff, difference=diff, ci_low=low, ci_high=high)])


def test_reference_best_and_gain_and_noise_are_said_as_measured():
    agg = _agg({"B4": 0.95, "B34": 0.96, "B234": 0.97}, {"B4": 0.40, "B34": 0.38, "B234": 0.2})
    text = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy")
    # B4 is best; its runner-up is B34 (0.38). Without a paired interval, no claim about noise.
    assert text.startswith("On d, B4 localises best (RelevanceMassAccuracy of the margin map 0.4 [0.35, 0.45] "
                           "vs 0.38 for B34)")
    assert "at a cost of 1 accuracy point (95% vs 96%)" in text
    # The paired interval of B4 - B34 includes 0 (stored as B34 - B4): no winner is named.
    noisy = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy", paired=_paired("B4", "B34", -0.02, -0.05, 0.01))
    assert noisy.startswith("On d, B4 and B34 localise alike within the noise (RelevanceMassAccuracy of the "
                            "margin map 0.4 vs 0.38; paired difference 0.02 [-0.01, 0.05] includes 0)")
    assert "best" not in noisy
    clear = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy", paired=_paired("B34", "B4", 0.02, 0.01, 0.03))
    assert "B4 localises best" in clear and "paired difference 0.02 [0.01, 0.03]" in clear
    flagged = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy", uninformative=True)
    assert "cannot tell the oracle from the random map on d" in flagged
    agg = _agg({"B4": 0.95, "B34": 0.96, "B234": 0.97}, {"B4": 0.2, "B34": 0.38, "B234": 0.4})
    assert "and gains 2 accuracy points (97% vs 95%)" in summary.headline(agg, "d", COMBOS,
                                                                         fidelity_metric="RelevanceMassAccuracy")
    agg = _agg({"B4": 0.95, "B34": 0.95, "B234": 0.95}, {"B4": 0.2, "B34": 0.3, "B234": 0.4})
    assert "at the same accuracy (95% vs 95%)" in summary.headline(agg, "d", COMBOS,
                                                                   fidelity_metric="RelevanceMassAccuracy")


def test_accuracy_difference_within_its_paired_interval_is_called_noise():
    import pandas as pd

    agg = _agg({"B4": 0.971, "B34": 0.96, "B234": 0.95}, {"B4": 0.22, "B34": 0.3, "B234": 0.41})
    fid = _paired("B4", "B234", 0.19, 0.1, 0.28)

    def acc(low, high):
        return pd.concat([fid, pd.DataFrame([dict(
            dataset="d", a="B4", b="B234", method="kmeans", metric="accuracy", n=300, n_seeds=1,
            mean_a=0.971, mean_b=0.95, difference=-0.021, ci_low=low, ci_high=high)])])

    noisy = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy", paired=acc(-0.05, 0.004))
    assert ("at an accuracy within the noise of B4's (95% vs 97.1%; paired difference -2.1 [-5, 0.4] "
            "points)") in noisy
    assert "cost" not in noisy
    clear = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy", paired=acc(-0.04, -0.01))
    assert "at a cost of 2.1 accuracy points (95% vs 97.1%; paired difference -2.1 [-4, -1] points)" in clear


def test_lower_is_better_metric_picks_the_minimum():
    rows = []
    for comb, v in zip(COMBOS, (0.3, 0.1, 0.2)):
        rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="head", method="kmeans",
                             category="accuracy", metric="accuracy", value=0.9))
        rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="explainer", method="margin",
                             category="faithfulness", metric="PixelFlipping", value=v,
                             higher_is_better=False))
    agg = stats.aggregate_seeds(tidy.frame(rows))
    text = summary.headline(agg, "d", COMBOS, fidelity_metric="PixelFlipping")
    assert text.startswith("On d, B34 scores best on PixelFlipping (PixelFlipping of the margin map 0.1 vs 0.3 for B4)")


def test_dataset_without_masks_says_why():
    agg = _agg({"B4": 0.95, "B34": 0.94, "B234": 0.93}, {c: 0 for c in COMBOS}, with_masks=False)
    text = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy")
    assert "cannot be measured (not applicable: dataset has no masks)" in text
    assert "95% (B4), 94% (B34) and 93% (B234)" in text


def test_key_numbers_equal_the_aggregated_frame():
    agg = _agg({"B4": 0.971, "B34": 0.96, "B234": 0.95}, {"B4": 0.22, "B34": 0.3, "B234": 0.41})
    numbers = summary.key_numbers(agg, ["d"], COMBOS, fidelity_metric="RelevanceMassAccuracy")
    assert numbers["d"]["B234"]["accuracy"] == 0.95
    assert numbers["d"]["B234"]["RelevanceMassAccuracy_high"] == pytest.approx(0.46)
    assert numbers["d"]["B4"]["RelevanceMassAccuracy_chance"] == pytest.approx(0.1)
    assert np.isnan(numbers["d"]["B4"]["probe_accuracy"])  # not in the frame: NaN, never 0
    assert numbers["d"]["cnn"] == {"accuracy": 0.97, "accuracy_low": pytest.approx(np.nan, nan_ok=True),
                                   "accuracy_high": pytest.approx(np.nan, nan_ok=True),
                                   "RelevanceMassAccuracy_cam": 0.15}
    assert fmt(numbers["d"]["B4"]["accuracy"]) == "0.971"


def test_dvc_metrics_hold_the_key_numbers_of_each_combination_only():
    agg = _agg({"B4": 0.971, "B34": 0.96, "B234": 0.95}, {"B4": 0.22, "B34": 0.3, "B234": 0.41})
    numbers = summary.key_numbers(agg, ["d"], COMBOS, fidelity_metric="RelevanceMassAccuracy")
    kept = summary.dvc_metrics(numbers, "RelevanceMassAccuracy")
    for comb in COMBOS:
        assert set(kept["d"][comb]) == {"accuracy", "accuracy_low", "accuracy_high", "agreement", "probe_accuracy",
                                        "RelevanceMassAccuracy", "RelevanceMassAccuracy_low",
                                        "RelevanceMassAccuracy_high"}
    assert set(kept["d"]["cnn"]) == {"accuracy", "accuracy_low", "accuracy_high"}
    for model, values in kept["d"].items():  # the very floats of the key numbers (and of the tables)
        assert all(v == numbers["d"][model][k] or np.isnan(v) and np.isnan(numbers["d"][model][k])
                   for k, v in values.items())


def test_single_combination_is_described_without_a_comparison():
    agg = _agg({"B4": 0.95, "B34": 0.94, "B234": 0.93}, {"B4": 0.3, "B34": 0.2, "B234": 0.1})
    text = summary.headline(agg, "d", ["B4"], fidelity_metric="RelevanceMassAccuracy")
    assert text.startswith("On d, B4 is the only combination with a RelevanceMassAccuracy value (0.3 [0.25, 0.35])")


def test_prototype_claim_says_when_it_was_not_tested():
    agg = _agg({"B4": 0.9, "B34": 0.9, "B234": 0.9}, {"B4": 0.2, "B34": 0.2, "B234": 0.2})
    assert "not tested" in summary.prototype_claim(agg, "d", COMBOS)


# ------------------------------------------------------------------ the room of a headline (issue 22)
def _with_controls(agg_rows_fid: dict, floor: float, ceiling: float | None, floor_method="random_grid",
                   ceiling_method="ceiling"):
    """The aggregate of :func:`_agg` plus a floor (and ceiling) map on every combination."""
    import pandas as pd

    rows = []
    for comb in COMBOS:
        for method, value in ((floor_method, floor), (ceiling_method, ceiling)):
            if value is not None:
                rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="explainer", method=method,
                                     category="localisation", metric="RelevanceMassAccuracy", value=value))
    return pd.concat([agg_rows_fid, stats.aggregate_seeds(tidy.frame(rows))], ignore_index=True)


def test_a_best_map_below_its_floor_is_at_chance_never_best():
    # digits in docs/results/thorough: B234_balanced 0.4221, B4 0.3774, the random map 0.4375
    base = _agg({"B4": 0.97, "B34": 0.96, "B234": 0.95}, {"B4": 0.3774, "B34": 0.40, "B234": 0.4221})
    agg = _with_controls(base, floor=0.4375, ceiling=0.8)
    text = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy")
    assert "localises best" not in text and "at chance" in text
    assert text.startswith("On d, no combination's margin map localises above chance on RelevanceMassAccuracy: "
                           "the best of them, B234, scores 0.4221 (grid floor 0.4375, ceiling 0.8), at chance, "
                           "not above its grid floor;")
    # without a grid floor and ceiling, the pixel random map and the oracle, named as such
    old = _with_controls(base, floor=0.4375, ceiling=0.8, floor_method="random", ceiling_method="oracle")
    text = summary.headline(old, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy")
    assert "localises best" not in text and "at chance" in text and "pixel floor" in text and "oracle 0.8" in text


def test_a_best_map_above_its_floor_by_a_paired_interval_is_named_with_its_room():
    import pandas as pd

    base = _agg({"B4": 0.97, "B34": 0.96, "B234": 0.95}, {"B4": 0.22, "B34": 0.3, "B234": 0.41})
    agg = _with_controls(base, floor=0.2, ceiling=0.8)
    text = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy")
    assert text.startswith("On d, B234 localises best (RelevanceMassAccuracy of the margin map 0.41 [0.36, 0.46] "
                           "(grid floor 0.2, ceiling 0.8) vs 0.22 (grid floor 0.2, ceiling 0.8) for B4")
    # the value is above the floor's, but the paired interval to the floor includes 0: at chance
    rng = np.random.default_rng(0)
    samples = []
    for i in range(40):
        noise = rng.normal(scale=0.3)
        for method, value in (("margin", 0.41 + noise), ("random_grid", 0.40 - noise)):
            samples.append(dict(dataset="d", seed=0, combination="B234", method=method,
                                metric="RelevanceMassAccuracy", sample=i, value=value, reason=""))
    r = floors.room(agg, pd.DataFrame(samples), dataset="d", combination="B234", method="margin",
                    metric="RelevanceMassAccuracy", n_resamples=200, seed=0)
    assert r.ci_low < 0 < r.ci_high and not r.above_floor()
    text = summary.headline(agg, "d", COMBOS, fidelity_metric="RelevanceMassAccuracy", rooms={"B234": r})
    assert "localises best" not in text and "at chance" in text and "paired difference to the grid floor" in text
    # lower-is-better reads the other side of the interval
    assert floors.Room(0.1, 0.3, "grid floor", 0.0, "ceiling", -0.2, -0.3, -0.1).above_floor(False)


def _faithfulness(values: dict, floor: float | None):
    """Aggregated FaithfulnessCorrelation rows of the margin map per combination, and a pixel floor."""
    rows = []
    for comb in COMBOS:
        rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="explainer", method="margin",
                             category="faithfulness", metric="FaithfulnessCorrelation", value=values[comb],
                             ci_low=values[comb] - 0.05, ci_high=values[comb] + 0.05, higher_is_better=True))
        if floor is not None:
            rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="explainer", method="random",
                                 category="faithfulness", metric="FaithfulnessCorrelation", value=floor,
                                 higher_is_better=True))
        rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="explainer", method="oracle",
                             category="faithfulness", metric="FaithfulnessCorrelation", value=0.9,
                             higher_is_better=True))
    return stats.aggregate_seeds(tidy.frame(rows))


def test_the_primary_faithfulness_endpoint_checks_its_floor_and_its_control():
    agg = _faithfulness({"B4": 0.1, "B34": 0.2, "B234": 0.3}, floor=0.05)
    text = summary.faithfulness_sentence(agg, "d", COMBOS, metric="FaithfulnessCorrelation")
    assert text == ("Faithfulness on d (FaithfulnessCorrelation of the margin map, the primary endpoint): B234 is "
                    "the most faithful (0.3 [0.25, 0.35] (pixel floor 0.05) vs 0.1 (pixel floor 0.05) for B4).")
    assert "oracle" not in text  # the mask is no ceiling of faithfulness
    below = _faithfulness({"B4": 0.1, "B34": 0.2, "B234": 0.3}, floor=0.35)
    text = summary.faithfulness_sentence(below, "d", COMBOS, metric="FaithfulnessCorrelation")
    assert "most faithful" not in text and "at chance, not above its pixel floor" in text
    failed = summary.faithfulness_sentence(agg, "d", COMBOS, metric="FaithfulnessCorrelation", failed_control=True)
    assert "fails its control" in failed and "most faithful" not in failed
    # headlines() appends it after the localisation headline when report.primary.faithfulness is declared
    both = summary.headlines(
        pd.concat([_agg({"B4": 0.97, "B34": 0.96, "B234": 0.95}, {"B4": 0.2, "B34": 0.3, "B234": 0.4}), agg]),
        ["d"], COMBOS, fidelity_metric="RelevanceMassAccuracy", faithfulness_metric="FaithfulnessCorrelation")
    assert both["d"].startswith("On d, B234 localises best") and both["d"].endswith(
        "(0.3 [0.25, 0.35] (pixel floor 0.05) vs 0.1 (pixel floor 0.05) for B4).")
    alone = summary.headlines(agg, ["d"], COMBOS, fidelity_metric="RelevanceMassAccuracy")
    assert "Faithfulness" not in alone["d"]


def test_the_concepts_sentence_reads_its_structured_floor_and_part_map_ceiling():
    rows = []
    for comb, value in (("B4", 0.2), ("B34", 0.3), ("B234", 0.45)):
        for method, v in (("concepts_global", value), ("floor_slic", 0.25), ("floor_grid", 0.1), ("oracle", 0.9)):
            rows.append(tidy.row(dataset="d", seed=0, combination=comb, kind="concepts", method=method,
                                 category="concept_fidelity", metric="concept_ami_object", value=v,
                                 higher_is_better=True, chance=0.0))
    agg = stats.aggregate_seeds(tidy.frame(rows))
    text = summary.concept_sentence(agg, "d", COMBOS, metric="concept_ami_object", method="concepts_global")
    assert text == ("Concepts on d (concept_ami_object of the concepts_global maps, the primary endpoint): B234 "
                    "matches the parts best (0.45 (superpixel floor 0.25, part-map ceiling 0.9) vs 0.2 "
                    "(superpixel floor 0.25, part-map ceiling 0.9) for B4).")
    low = agg.copy()
    low.loc[low["method"] == "floor_slic", "value"] = 0.5  # the superpixels beat every concept map
    text = summary.concept_sentence(low, "d", COMBOS, metric="concept_ami_object", method="concepts_global")
    assert "matches the parts best" not in text and "at chance, not above its superpixel floor" in text


def test_report_primary_concepts_names_the_concept_metrics():
    from kmx_eval.config import CONCEPT_METRICS
    from kmx_eval.metrics.evaluation import CONCEPT_METRICS as EVALUATED

    assert CONCEPT_METRICS == EVALUATED
