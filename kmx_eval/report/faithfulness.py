"""Faithfulness read against the random map of the same model, and its control (docs/METHOD.md,
section 6, "Faithfulness against the random map").

A faithfulness number mixes the map with the model's response to perturbed inputs, which is the same
for every map of that model. Two paired comparisons on the same model and images take it out:

- :func:`random_differences`: every map minus the ``random`` map, per image (``d_i = s_map,i -
  s_random,i``), with the paired interval of :func:`~kmx_eval.report.stats.paired_difference`;
- :func:`faithfulness_controls`: the informed reference ``occlusion`` (the model's own grid cells
  occluded, :class:`~kmx_eval.explain.baselines.OcclusionExplainer`) minus ``random``. A
  faithfulness metric *passes* on a model when that interval excludes 0 on the metric's better side;
  it enters the ranking, the "favours" column and any sentence on a dataset only when it passes on
  every model of that dataset (:func:`failed_faithfulness`, merged into the skip sets that
  :func:`~kmx_eval.report.stats.metric_ranking` and the headlines read).

Pairs are matched on ``(seed, sample)`` and a sample missing on either side (a refused span, a flat
response) drops the pair: both sides are scored on the same images, and ``n`` says how many.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pandas as pd

from kmx_eval.metrics.faithfulness import OCCLUSION
from kmx_eval.report import stats
from kmx_eval.report.numbers import format_cell
from kmx_eval.report.table import Table, assemble

#: The floor and the informed reference of every faithfulness metric (map names).
FLOOR, REFERENCE = "random", OCCLUSION
#: Maps that are controls here, never compared with the floor as explainers.
CONTROL_MAPS = frozenset(stats.CONTROLS) | {REFERENCE, "random_grid", "ceiling", "ceiling_pixel"}
DIFFERENCE_COLUMNS = ["dataset", "combination", "method", "metric", "n", "random", "map_value", "difference",
                      "ci_low", "ci_high", "better_than_random"]
CONTROL_COLUMNS = ["dataset", "combination", "metric", "n", "random", "occlusion", "difference", "ci_low",
                   "ci_high", "informative"]


def _beats(low: float, high: float, higher_is_better: bool) -> bool:
    """The paired interval of (map - floor) excludes 0 on the better side."""
    return bool(low > 0) if higher_is_better else bool(high < 0)


def _pairs(samples: pd.DataFrame, metrics: Sequence[str], methods: Iterable[str] | None):
    """(dataset, combination, metric, method, that method's rows, the floor's rows) for every map."""
    frame = stats._finite_scores(samples[samples["metric"].isin(list(metrics))])
    for (ds, comb, metric), group in frame.groupby(["dataset", "combination", "metric"], sort=False):
        floor = group[group["method"] == FLOOR]
        if floor.empty:
            continue
        for method, rows in group.groupby("method", sort=False):
            if method != FLOOR and (methods is None or method in methods):
                yield ds, comb, metric, method, rows, floor


def random_differences(samples: pd.DataFrame, metrics: Sequence[str], *, higher: Mapping[str, bool],
                       n_resamples: int, confidence: float, seed: int) -> pd.DataFrame:
    """Each explainer's map minus the ``random`` map of the same model, per dataset, combination
    (model) and metric, paired on the same images (module docstring).

    ``higher``: metric -> higher is better. ``better_than_random``: the interval excludes 0 on the
    better side. Returns :data:`DIFFERENCE_COLUMNS`.
    """
    rows = []
    for ds, comb, metric, method, a, floor in _pairs(samples, metrics, None):
        if method in CONTROL_MAPS:
            continue
        d = stats.paired_difference(floor, a, n_resamples=n_resamples, confidence=confidence, seed=seed)
        if d is not None:
            rows.append(dict(dataset=ds, combination=comb, method=method, metric=metric, n=d.n, random=d.mean_a,
                             map_value=d.mean_b, difference=d.difference, ci_low=d.ci_low, ci_high=d.ci_high,
                             better_than_random=_beats(d.ci_low, d.ci_high, higher[metric])))
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


def faithfulness_controls(samples: pd.DataFrame, metrics: Sequence[str], *, higher: Mapping[str, bool],
                          n_resamples: int, confidence: float, seed: int) -> pd.DataFrame:
    """``occlusion`` minus ``random`` on the same model and images, per dataset, combination and
    metric; ``informative`` when the paired interval excludes 0 on the metric's better side.
    Returns :data:`CONTROL_COLUMNS`."""
    rows = []
    for ds, comb, metric, _, a, floor in _pairs(samples, metrics, {REFERENCE}):
        d = stats.paired_difference(floor, a, n_resamples=n_resamples, confidence=confidence, seed=seed)
        if d is not None:
            rows.append(dict(dataset=ds, combination=comb, metric=metric, n=d.n, random=d.mean_a,
                             occlusion=d.mean_b, difference=d.difference, ci_low=d.ci_low, ci_high=d.ci_high,
                             informative=_beats(d.ci_low, d.ci_high, higher[metric])))
    return pd.DataFrame(rows, columns=CONTROL_COLUMNS)


def failed_faithfulness(samples: pd.DataFrame, controls: pd.DataFrame,
                        metrics: Sequence[str]) -> dict[str, set[str]]:
    """Per dataset, the faithfulness ``metrics`` that do not pass their control on every model of the
    dataset (a model whose ``random`` map was scored with the metric): no ``occlusion`` row there (the
    study ran no occlusion map, or fewer than two pairs) fails as well as an interval that includes 0."""
    failed: dict[str, set[str]] = {}
    scored = samples[samples["metric"].isin(list(metrics)) & (samples["method"] == FLOOR)]
    passed = {(r.dataset, r.combination, r.metric) for r in controls.itertuples(index=False) if r.informative}
    for (ds, comb, metric), _ in scored.groupby(["dataset", "combination", "metric"], sort=False):
        if (ds, comb, metric) not in passed:
            failed.setdefault(ds, set()).add(metric)
    return failed


def merged(*skips: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """The union, per dataset, of several skip sets (``dataset -> metrics``)."""
    out: dict[str, set[str]] = {}
    for skip in skips:
        for ds, names in skip.items():
            out.setdefault(ds, set()).update(names)
    return out


def controls_frame(controls: pd.DataFrame) -> pd.DataFrame:
    """The faithfulness controls in the columns of :func:`~kmx_eval.report.stats.control_differences`
    (``oracle`` holds the occlusion map's mean), so the controls table shows both kinds of control."""
    return controls.rename(columns={"occlusion": "oracle"})[
        ["dataset", "combination", "metric", "n", "random", "oracle", "difference", "ci_low", "ci_high",
         "informative"]]



def random_differences_table(diff: pd.DataFrame, controls: pd.DataFrame, confidence: float = 0.95) -> Table:
    """Display table: per dataset, model and faithfulness metric, the occlusion control's difference
    and each map's difference to ``random`` on the same images (bold where the interval excludes 0
    on the better side; a metric whose control fails on that model says so)."""
    passed = {(r.dataset, r.combination, r.metric): r for r in controls.itertuples(index=False)}
    index = ["dataset", "combination", "metric"]
    rows = []
    base = dict(higher_is_better=None, note="", is_chance=False, seed_sd=float("nan"), chance=float("nan"),
                n_seeds=1)
    for key, r in passed.items():
        rows.append({**dict(zip(index, key)), **base, "column": f"{REFERENCE} − {FLOOR} (control)",
                     "value": r.difference, "ci_low": r.ci_low, "ci_high": r.ci_high, "best": bool(r.informative),
                     "text": None})
    for r in diff.itertuples(index=False):
        key = (r.dataset, r.combination, r.metric)
        control = passed.get(key)
        note = "" if control is not None and control.informative else "control failed on this model"
        rows.append({**dict(zip(index, key)), **base, "column": f"{r.method} − {FLOOR}", "value": r.difference,
                     "ci_low": r.ci_low, "ci_high": r.ci_high, "best": bool(r.better_than_random), "note": note,
                     "text": None})
    numbers = pd.DataFrame(rows, columns=index + ["column", "value", "ci_low", "ci_high", "seed_sd", "n_seeds",
                                                  "chance", "higher_is_better", "best", "note", "is_chance", "text"])
    columns = list(dict.fromkeys(numbers["column"]))
    caption = (f"Each faithfulness value minus that of the random map of the same model, per image, over the images "
               f"both scored (paired {confidence:.0%} interval, seeds then images resampled). The control: "
               f"occlusion of the model's own grid cells must beat the random map (interval excluding 0 on the "
               "better side) on every model of a dataset before the metric is ranked, favours a combination or "
               "enters a sentence there.")
    return assemble(numbers, name="faithfulness_vs_random", title="Faithfulness against the random map",
                    caption=caption, index=index, columns=columns,
                    text=lambda r: format_cell(r["value"], r["ci_low"], r["ci_high"]))
