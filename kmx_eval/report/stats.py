"""Statistics across seeds: the aggregated frame, paired comparisons, controls and the ranking.

Every number in the report comes from one frame: :func:`aggregate_seeds` reduces the tidy rows that
the ``evaluate`` stages wrote (``kmx_eval.metrics.tidy.TIDY_COLUMNS``) to one row per dataset,
combination, method and metric; the tables, the figures, the headline sentences and
``reports/metrics.json`` all read that frame.

Seed aggregation (docs/METHOD.md, section 6, "Intervals"; ``S`` seeds with a finite value ``v_s``
and per-seed bounds ``l_s, h_s``)::

    value   = (1/S) sum_s v_s
    seed_sd = sqrt( 1/(S-1) sum_s (m_s - mean_s m_s)^2 )   (only when S > 1; m_s = seed s's mean)

and the interval, by what exists for the key (the ``interval`` column says which):

- ``hierarchical_bootstrap`` / ``wilson`` / ``hierarchical_wilson``: the per-sample scores
  (``samples.csv``) of the key, as a matrix ``v_si`` (seeds x images, aligned by sample id, NaN where
  missing): training seeds are resampled, then images within each drawn seed
  (:func:`~kmx_eval.metrics.bootstrap.hierarchical_matrix_test`), so the interval includes the spread
  between trainings (never narrower than the spread of the per-seed means allows); a proportion (0/1
  values: accuracy, agreement, decision agreement, PointingGame) gets the Wilson interval, with two
  seeds or more joined with the hierarchical interval (``hierarchical_wilson``;
  :func:`~kmx_eval.metrics.bootstrap.summarise`). With one seed both reproduce the per-seed row's
  interval (the image bootstrap, or Wilson);
- ``hierarchical_bootstrap``: per-prototype metrics (proximity, separation, purity, both
  diversities; :func:`~kmx_eval.metrics.evaluation.is_per_prototype`) with two seeds or more: their
  prototypes differ between seeds, so they cannot be aligned as images are; seeds are resampled,
  then prototypes within each drawn seed (``samples.csv`` holds one value per prototype;
  :func:`~kmx_eval.metrics.bootstrap.hierarchical_bootstrap_ci`), so the interval includes the
  spread of the per-seed means (never narrower than it allows); for purity, a share per prototype,
  never narrower than the mean of the per-seed Wilson bounds either (a bootstrap of shares that are
  all 1 would collapse to [1, 1]);
- ``mean_of_seed_bounds``: keys without per-sample scores (a per-prototype metric of one seed, or a
  study written before per-prototype values were kept) keep ``ci_low = (1/S) sum_s l_s``,
  ``ci_high = (1/S) sum_s h_s``, the sampling uncertainty of one repetition (with one seed, the
  seed's own interval).

``seed_sd`` is the spread across repetitions; the report shows it beside the interval rather than
mixing it in. Paired comparisons (:func:`paired_comparisons`, :func:`control_differences`) resample
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from kmx_eval.errors import DataError
from kmx_eval.metrics.concept_fidelity import CONCEPT_FLOORS
from kmx_eval.metrics.bootstrap import (hierarchical_bootstrap_ci, hierarchical_difference_ci,
                                        paired_hierarchical_test, seed_mean, seed_spread, summarise)
# The report reads the files the evaluate stages write through kmx_eval.metrics.tidy; its column
# lists are the contract.
from kmx_eval.metrics.tidy import PROTOTYPE_METRICS, SAMPLE_COLUMNS, TIDY_COLUMNS
from kmx_eval.report.numbers import direction, finite, finite_bounds, round_significant

#: Columns of the tidy metrics frame that the report reads (the contract of ``metrics.csv``).
METRIC_COLUMNS = TIDY_COLUMNS

#: What identifies one aggregated value.
KEYS = ["dataset", "combination", "kind", "method", "category", "metric"]
#: Control maps (kmx_eval.explain.controls): shown beside the explainers, never ranked or bolded.
CONTROLS = ("random", "random_grid", "oracle", "oracle_pixel", "ceiling", "ceiling_pixel", "occlusion",
            *CONCEPT_FLOORS)


def check_columns(frame: pd.DataFrame, required: Iterable[str], what: str) -> None:
    """Raise :class:`DataError` naming the missing columns of ``what``."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {', '.join(missing)}; expected {', '.join(required)}")



#: Values of the aggregated frame's ``interval`` column: how ``ci_low``/``ci_high`` were computed.
INTERVALS = ("wilson", "hierarchical_wilson", "hierarchical_bootstrap", "mean_of_seed_bounds")
#: Columns of :func:`aggregate_seeds`'s frame.
AGGREGATED_COLUMNS = KEYS + ["value", "ci_low", "ci_high", "seed_sd", "n_seeds", "n", "n_missing", "chance",
                             "higher_is_better", "note", "interval"]
_SAMPLE_KEYS = ["dataset", "combination", "method", "metric"]


def seed_matrix(samples: pd.DataFrame, seeds: Sequence[int] | None = None) -> np.ndarray:
    """Per-sample values of one key as a (n_seeds, n_images) matrix aligned by sample id.

    Rows are the seeds in increasing order (only ``seeds`` when given), columns the sample ids in
    increasing order (the order of the evaluation subset and of ``samples.csv``); NaN where a
    seed has no score for an image. ``samples`` holds the rows of one dataset, combination, method
    and metric (columns ``seed, sample, value``).
    """
    seed = samples["seed"].to_numpy()
    value = pd.to_numeric(samples["value"], errors="coerce").to_numpy(dtype=float)
    sample = samples["sample"].to_numpy()
    if seeds is not None:
        keep = np.isin(seed, list(seeds))
        seed, sample, value = seed[keep], sample[keep], value[keep]
    if not len(seed):
        return np.empty((0, 0))
    # np.unique's inverse indices instead of DataFrame.pivot: the report calls this thousands of
    # times (every key, every paired comparison), where pivot's index building was most of its cost.
    rows, row = np.unique(seed, return_inverse=True)
    cols, col = np.unique(sample, return_inverse=True)
    flat = row * len(cols) + col
    if len(np.unique(flat)) != len(flat):
        raise ValueError("seed_matrix: a seed holds two scores for one sample id")
    wide = np.full((len(rows), len(cols)), np.nan)
    wide[row, col] = value
    return wide


def aggregate_seeds(metrics: pd.DataFrame, samples: pd.DataFrame | None = None, *, n_resamples: int = 1000,
                    confidence: float = 0.95, bootstrap_seed: int | None = None,
                    proportion=None, per_prototype=None) -> pd.DataFrame:
    """Reduce the tidy metrics of all seeds to one row per dataset, combination, method and metric.

    Implements the equations of the module docstring: the mean value over seeds; the interval from
    the per-sample scores where ``samples`` has them for the key (seeds resampled, then images
    within each drawn seed; Wilson for proportions, joined with that over seeds; ``seed_sd`` from
    :func:`~kmx_eval.metrics.bootstrap.seed_spread` of the per-seed means), else the mean of the
    per-seed bounds and the standard deviation of the per-seed values (``ddof=1``). Missing values
    (NaN) are left out of every mean; ``n_seeds`` counts the seeds with a finite value and ``note``
    keeps the reasons given for missing ones. Numbers are rounded to :data:`STORED_DIGITS`
    significant digits.

    Parameters
    ----------
    metrics : DataFrame
        Tidy metrics (columns :data:`METRIC_COLUMNS`) of any datasets, combinations and seeds.
    samples : DataFrame, optional
        Per-sample scores (columns :data:`SAMPLE_COLUMNS`, ``samples.csv``) of the same seeds.
        Without it every interval is the mean of the per-seed bounds.
    n_resamples, confidence : bootstrap settings of the per-seed rows (``params.evaluate.bootstrap``).
    bootstrap_seed : int, optional
        Seed of the hierarchical bootstrap; by default the smallest seed of the key, which is the seed
        the evaluate stage gives the per-seed row's bootstrap, so one seed reproduces that row.
    proportion : callable ``(kind, metric) -> bool``, optional
        Which keys are proportions; default :func:`kmx_eval.metrics.evaluation.is_proportion`.
    per_prototype : callable ``(kind, metric) -> bool``, optional
        Which keys hold one value per prototype (seeds, then prototypes, are resampled); default
        :func:`kmx_eval.metrics.evaluation.is_per_prototype`.

    Returns
    -------
    DataFrame
        Columns :data:`AGGREGATED_COLUMNS` (``KEYS + [value, ci_low, ci_high, seed_sd, n_seeds, n,
        n_missing, chance, higher_is_better, note, interval]``) in the order the rows first appear
        in ``metrics``; ``interval`` is one of :data:`INTERVALS`, empty without a finite bound.

    Raises
    ------
    DataError
        When a column is missing, one metric is declared with both score directions, or the
        per-sample scores of a proportion are not 0/1.
    """
    check_columns(metrics, METRIC_COLUMNS, "the tidy metrics frame")
    frame = metrics.copy()
    for col in ("value", "ci_low", "ci_high", "n", "n_missing", "chance"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    by_key: dict = {}
    if samples is not None and len(samples):
        check_columns(samples, SAMPLE_COLUMNS, "the per-sample scores frame")
        by_key = {key: group for key, group in samples.groupby(_SAMPLE_KEYS, sort=False)}
        # Imported here: kmx_eval.metrics.evaluation imports torch (seconds), and only the
        # per-sample scores need to know which keys are proportions or per prototype.
        from kmx_eval.metrics import evaluation

        proportion = evaluation.is_proportion if proportion is None else proportion
        per_prototype = evaluation.is_per_prototype if per_prototype is None else per_prototype
    bootstrap = dict(n_resamples=n_resamples, confidence=confidence, seed=bootstrap_seed, proportion=proportion,
                     per_prototype=per_prototype)
    rows = [_aggregate_key(key, group, by_key.get(tuple(key[i] for i in (0, 1, 3, 5))), **bootstrap)
            for key, group in frame.groupby(KEYS, sort=False, dropna=False)]
    out = pd.DataFrame(rows, columns=AGGREGATED_COLUMNS)
    for col in ("value", "ci_low", "ci_high", "seed_sd", "chance", "n"):
        out[col] = out[col].map(round_significant)
    # True / False / None (a metric without a direction): object dtype keeps None distinct.
    out["higher_is_better"] = pd.Series([direction(d) for d in out["higher_is_better"]], index=out.index,
                                        dtype=object)
    return out


@dataclass(frozen=True)
class _Bounds:
    """An aggregated value's interval, its spread across seeds and how the interval was computed."""

    low: float
    high: float
    seed_sd: float
    interval: str  # one of INTERVALS


def _aggregate_key(key: tuple, group: pd.DataFrame, scores: pd.DataFrame | None, *, n_resamples: int,
                   confidence: float, seed: int | None, proportion, per_prototype) -> dict:
    """One row of :func:`aggregate_seeds`: the per-seed rows ``group`` of ``key`` (:data:`KEYS`) and
    its per-sample ``scores`` (dataset, combination, method and metric of ``key``; None without)."""
    finite = group[np.isfinite(group["value"].to_numpy(dtype=float))]
    directions = {direction(d) for d in group["higher_is_better"]} - {None}
    if len(directions) > 1:
        raise DataError(
            f"metric {key[-1]!r} of {key[0]}/{key[1]}/{key[3]} is declared both higher- and "
            "lower-is-better across seeds; rerun the evaluate stages with one version of the code"
        )
    notes = sorted({str(n) for n in group["note"] if isinstance(n, str) and n.strip()})
    n_seeds = int(finite["seed"].nunique()) if len(finite) else 0
    values = finite.groupby("seed")["value"].mean()
    bounds = _Bounds(low=float(finite["ci_low"].mean()) if finite["ci_low"].notna().any() else np.nan,
                     high=float(finite["ci_high"].mean()) if finite["ci_high"].notna().any() else np.nan,
                     seed_sd=float(values.std(ddof=1)) if n_seeds > 1 else np.nan,
                     interval="mean_of_seed_bounds")
    if scores is not None and per_prototype(key[2], key[5]):
        if n_seeds > 1:
            seeds = sorted(int(x) for x in finite["seed"].unique())
            values_of = pd.to_numeric(scores["value"], errors="coerce").astype(float)
            groups = [values_of[scores["seed"] == s].to_numpy() for s in seeds]
            _, low, high = hierarchical_bootstrap_ci(groups, n_resamples=n_resamples, confidence=confidence,
                                                     seed=min(seeds) if seed is None else int(seed))
            if proportion(key[2], key[5]) and finite_bounds(bounds.low, bounds.high):
                # purity: a percentile bootstrap of shares that are all 1 collapses to [1, 1]; the
                # per-seed Wilson bounds do not, so the interval is never narrower than their mean
                low, high = min(low, bounds.low), max(high, bounds.high)
            bounds = _Bounds(low, high, bounds.seed_sd, "hierarchical_bootstrap")
    elif scores is not None:
        seeds = sorted(int(x) for x in group["seed"].unique())
        matrix = seed_matrix(scores, seeds)
        if matrix.size:
            bounds = _sample_bounds(key, finite, matrix, proportion=proportion(key[2], key[5]),
                                    n_resamples=n_resamples, confidence=confidence,
                                    seed=min(seeds) if seed is None else int(seed))
    return dict(
        zip(KEYS, key),
        value=float(values.mean()) if n_seeds else np.nan,
        ci_low=bounds.low,
        ci_high=bounds.high,
        seed_sd=bounds.seed_sd,
        n_seeds=n_seeds,
        n=float(finite["n"].mean()) if finite["n"].notna().any() else np.nan,
        n_missing=float(group["n_missing"].sum()) if group["n_missing"].notna().any() else np.nan,
        chance=float(group["chance"].mean()) if group["chance"].notna().any() else np.nan,
        higher_is_better=next(iter(directions)) if directions else None,
        note="; ".join(notes),
        interval=bounds.interval if finite_bounds(bounds.low, bounds.high) else "",
    )


def _sample_bounds(key: tuple, finite: pd.DataFrame, matrix: np.ndarray, *, proportion: bool,
                   n_resamples: int, confidence: float, seed: int) -> _Bounds:
    """The interval of ``key`` from its (seeds x images) per-sample ``matrix``: Wilson for a
    proportion (joined with the hierarchical interval over two seeds or more), else the hierarchical
    bootstrap, seeds then images (:func:`~kmx_eval.metrics.bootstrap.summarise`)."""
    if proportion:
        present = matrix[~np.isnan(matrix)]
        if np.any((present != 0.0) & (present != 1.0)):
            raise DataError(f"the per-sample scores of {key[5]!r} ({key[0]}/{key[1]}/{key[3]}) "
                            "are declared a proportion but are not 0/1; rerun evaluate")
    elif (int(finite["seed"].nunique()) == 1 and int((~np.isnan(matrix)).any(axis=1).sum()) == 1
          and int(finite["seed"].iloc[0]) == seed
          and finite_bounds(finite["ci_low"].iloc[0], finite["ci_high"].iloc[0])):
        # One seed: the hierarchical bootstrap is the per-seed row's bootstrap (same indices, same
        # arithmetic; tested), which metrics.csv keeps at full precision while samples.csv rounds
        # the scores to 10 significant digits.
        return _Bounds(float(finite["ci_low"].iloc[0]), float(finite["ci_high"].iloc[0]),
                       seed_spread(matrix)[0], "hierarchical_bootstrap")
    interval = summarise(matrix, proportion=proportion, n_resamples=n_resamples, confidence=confidence,
                         seed=seed)
    return _Bounds(interval.low, interval.high, interval.seed_sd, interval.method)


def first_row(agg: pd.DataFrame, **where) -> pd.Series | None:
    """The first row of :func:`lookup` (None when nothing matches)."""
    rows = lookup(agg, **where)
    return rows.iloc[0] if len(rows) else None


def lookup(agg: pd.DataFrame, **where) -> pd.DataFrame:
    """Rows of the aggregated frame matching every ``column=value`` of ``where``."""
    mask = np.ones(len(agg), dtype=bool)
    for col, value in where.items():
        mask &= (agg[col] == value).to_numpy()
    return agg[mask]



#: Metrics with one value per prototype (``samples.csv``): prototype j of one head is not prototype j of
#: another, so :func:`paired_comparisons` never pairs them (:func:`prototype_difference` compares them).
UNPAIRED_METRICS = frozenset(m for m in PROTOTYPE_METRICS if m != "decision_agreement")


def paired_comparisons(
    samples: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    n_resamples: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """Paired bootstrap differences between two combinations, per dataset, explainer and metric.

    For a pair ``(A, B)`` (e.g. ``("B4", "B234")``) and each explainer and metric present in both,
    the evaluation samples of every seed are matched by ``(seed, sample)`` (the evaluation subset
    is the same for every combination, so the comparison is paired) into aligned (seed x image)
    matrices, NaN where a seed lacks the pair, and the difference

        d = (1/S) sum_s mean_{i matched under s} (s_B,si - s_A,si)

    is reported with the percentile interval and the two-sided bootstrap p-value of
    :func:`kmx_eval.metrics.bootstrap.paired_hierarchical_test`, which resamples training seeds, then
    the matched images within each drawn seed (docs/METHOD.md, section 6, "Intervals"), so the spread
    between trainings is inside the interval. With one seed this is the paired bootstrap of the ``n``
    matched pairs in sample order. ``mean_a`` and ``mean_b`` are the same mean over seeds of per-seed
    means. Positive ``difference`` means B scores higher.

    Parameters
    ----------
    samples : DataFrame
        Per-sample scores (columns :data:`SAMPLE_COLUMNS`); rows with a non-finite value (a reason
        in ``reason``) are left out, and so is their partner; per-prototype metrics
        (:data:`UNPAIRED_METRICS`) are not paired.
    pairs : sequence of (str, str)
        Combinations to compare, ``(A, B)``.
    n_resamples, confidence, seed
        Passed to ``paired_hierarchical_test``.

    Returns
    -------
    DataFrame
        ``dataset, a, b, method, metric, n, n_seeds, mean_a, mean_b, difference, ci_low, ci_high,
        p_value`` (unadjusted; :mod:`kmx_eval.report.multiplicity` adjusts them over the table).
    """
    check_columns(samples, SAMPLE_COLUMNS, "the per-sample scores frame")
    cols = ["dataset", "a", "b", "method", "metric", "n", "n_seeds", "mean_a", "mean_b", "difference",
            "ci_low", "ci_high", "p_value"]
    frame = _finite_scores(samples[~samples["metric"].isin(list(UNPAIRED_METRICS))])
    rows = []
    for dataset in dict.fromkeys(frame["dataset"]):
        ds = frame[frame["dataset"] == dataset]
        for a, b in pairs:
            left = ds[ds["combination"] == a]
            right = ds[ds["combination"] == b]
            for (method, metric), la in left.groupby(["method", "metric"], sort=False):
                rb = right[(right["method"] == method) & (right["metric"] == metric)]
                d = paired_difference(la, rb, n_resamples=n_resamples, confidence=confidence, seed=seed)
                if d is not None:
                    rows.append(dict(dataset=dataset, a=a, b=b, method=method, metric=metric, **asdict(d)))
    out = pd.DataFrame(rows, columns=cols)
    for col in ("mean_a", "mean_b", "difference", "ci_low", "ci_high"):
        out[col] = out[col].map(round_significant)
    return out


@dataclass(frozen=True)
class PairedDifference:
    """B − A over the matched (seed, sample) pairs of two sets of per-sample scores (see
    :func:`paired_difference`)."""

    n: int  # matched pairs
    n_seeds: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float  # two-sided bootstrap p-value of "no difference", unadjusted


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, *, n_resamples: int, confidence: float,
                      seed: int) -> PairedDifference | None:
    """B − A over the per-sample scores ``a`` and ``b`` (finite values of one key each), matched by
    ``(seed, sample)``; None with fewer than two pairs.

    The pairs form aligned (seed x image) matrices (NaN where a seed lacks the pair) and the
    difference, its interval and p-value are :func:`~kmx_eval.metrics.bootstrap.paired_hierarchical_test`
    of B − A, which resamples seeds, then the pairs within each drawn seed (docs/METHOD.md, section 6,
    "Intervals"); with one seed, the paired bootstrap of the pairs in sample order. ``mean_a`` and
    ``mean_b`` are :func:`~kmx_eval.metrics.bootstrap.seed_mean` of each side.
    """
    joined = a.merge(b, on=["seed", "sample"], suffixes=("_a", "_b"))
    joined = joined.sort_values(["seed", "sample"], kind="stable")
    if len(joined) < 2:
        return None
    va, vb = _paired_matrices(joined, "value_a", "value_b")
    diff, low, high, p = paired_hierarchical_test(vb, va, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return PairedDifference(n=len(joined), n_seeds=int(joined["seed"].nunique()), mean_a=seed_mean(va),
                            mean_b=seed_mean(vb), difference=float(diff), ci_low=float(low), ci_high=float(high),
                            p_value=float(p))


@dataclass(frozen=True)
class PrototypeDifference:
    """``mean over seeds of (mean_p a - mean_p b)`` for two prototype sets of one space, with the
    interval that resamples seeds, then each set's prototypes within a seed
    (:func:`~kmx_eval.metrics.bootstrap.hierarchical_difference_ci`), and the standard deviation of
    the per-seed differences (``ddof=1``; NaN with one seed)."""

    difference: float
    low: float
    high: float
    seed_sd: float
    n_seeds: int


def prototype_difference(samples: pd.DataFrame, *, dataset: str, combination: str, a: str, b: str, metric: str,
                         n_resamples: int, confidence: float, seed: int) -> PrototypeDifference | None:
    """The per-prototype ``metric`` of method ``a`` minus that of ``b`` (same dataset and combination,
    so the same space), from the per-prototype values of ``samples.csv``; None where either has none
    (a study written before they were kept). Only seeds where both have a value enter; the two sets'
    prototypes are not paired (docs/METHOD.md, section 6)."""
    if samples is None or not len(samples):
        return None
    sel = samples[(samples["dataset"] == dataset) & (samples["combination"] == combination)
                  & (samples["metric"] == metric)]
    values = pd.to_numeric(sel["value"], errors="coerce").astype(float)
    seeds = sorted(set(sel.loc[sel["method"] == a, "seed"]) & set(sel.loc[sel["method"] == b, "seed"]))
    groups = {m: [values[(sel["method"] == m) & (sel["seed"] == s)].to_numpy() for s in seeds] for m in (a, b)}
    per_seed = np.array([np.nanmean(x) - np.nanmean(y) if np.isfinite(x).any() and np.isfinite(y).any() else np.nan
                         for x, y in zip(groups[a], groups[b])])
    per_seed = per_seed[np.isfinite(per_seed)]
    if not per_seed.size:
        return None
    mean, low, high = hierarchical_difference_ci(groups[a], groups[b], n_resamples=n_resamples,
                                                 confidence=confidence, seed=seed)
    return PrototypeDifference(mean, low, high, float(np.std(per_seed, ddof=1)) if per_seed.size > 1 else np.nan,
                               int(per_seed.size))


def _finite_scores(samples: pd.DataFrame) -> pd.DataFrame:
    """The per-sample scores with a finite value (numeric, a copy); a missing score has a reason instead."""
    frame = samples.copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame[np.isfinite(frame["value"].to_numpy(dtype=float))]


def _paired_matrices(joined: pd.DataFrame, left: str, right: str) -> tuple[np.ndarray, np.ndarray]:
    """Two aligned :func:`seed_matrix` matrices of matched pairs (``joined``: one row per ``seed,
    sample`` with columns ``left`` and ``right``). With one seed the row holds the pairs in sample
    order."""
    return tuple(seed_matrix(joined[["seed", "sample", col]].rename(columns={col: "value"}))
                 for col in (left, right))



def control_differences(samples: pd.DataFrame, metrics: Sequence[str], *, n_resamples: int, confidence: float,
                        seed: int) -> pd.DataFrame:
    """Oracle minus random on the same model, per dataset, combination and metric (paired bootstrap).

    The (seed, sample) pairs form aligned (seed x image) matrices and the interval is
    :func:`kmx_eval.metrics.bootstrap.paired_hierarchical_test` of oracle − random (seeds resampled,
    then images within each, docs/METHOD.md, section 6, "Intervals"); with one seed, the paired
    bootstrap of the pairs in sample order. ``random``, ``oracle`` and ``difference`` are means over
    seeds of per-seed means; ``n`` counts the pairs.

    The oracle is the ``oracle`` map of the same model and grid (B4's grid for the CNN). A
    localisation metric (higher is better) is informative on a model when the interval lies above 0;
    one whose interval includes 0, or lies below it (the oracle scores worse than chance, as
    TopKIntersection can on a 2 x 2 grid), cannot tell the ceiling from the floor there.

    Returns ``dataset, combination, metric, n, random, oracle, difference, ci_low, ci_high, informative``.
    """
    cols = ["dataset", "combination", "metric", "n", "random", "oracle", "difference", "ci_low", "ci_high",
            "informative"]
    frame = _finite_scores(samples[samples["metric"].isin(list(metrics))
                                   & samples["method"].isin(["random", "oracle"])])
    rows = []
    for (ds, comb, metric), group in frame.groupby(["dataset", "combination", "metric"], sort=False):
        d = paired_difference(group[group["method"] == "random"], group[group["method"] == "oracle"],
                              n_resamples=n_resamples, confidence=confidence, seed=seed)
        if d is not None:
            rows.append(dict(dataset=ds, combination=comb, metric=metric, n=d.n, random=d.mean_a,
                             oracle=d.mean_b, difference=d.difference, ci_low=d.ci_low, ci_high=d.ci_high,
                             informative=bool(d.ci_low > 0)))
    return pd.DataFrame(rows, columns=cols)


def uninformative(controls: pd.DataFrame) -> dict[str, set[str]]:
    """Per dataset, the metrics whose oracle-minus-random interval includes 0 on some model."""
    out: dict[str, set[str]] = {}
    for r in controls.itertuples(index=False):
        if not r.informative:
            out.setdefault(r.dataset, set()).add(r.metric)
    return out



#: The categories ranked, each with the kind of rows it ranks: attribution maps for the first four,
#: concept maps for concept fidelity (docs/METHOD.md, section 6, "A ranking of distinct maps and metrics").
RANKED_CATEGORIES = {"localisation": "explainer", "faithfulness": "explainer", "randomisation": "explainer",
                     "robustness": "explainer", "concept_fidelity": "concepts"}
#: Columns of :func:`metric_ranking`'s ranking frame before the one column per metric.
RANKING_COLUMNS = ["dataset", "category", "combination", "method", "median_rank", "n_metrics", "same_as"]


def metric_ranking(agg: pd.DataFrame, skip: Mapping[str, set[str]] | None = None,
                   categories: Sequence[str] = tuple(RANKED_CATEGORIES), *,
                   same_as: Mapping[tuple[str, str, str], str] | None = None,
                   aliases: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank the distinct maps on the distinct metrics of each category, per dataset.

    Per dataset and category (``categories``, kinds as in :data:`RANKED_CATEGORIES`), the metrics
    that pass their control there (all but ``skip[dataset]``, :func:`uninformative`) and are not an
    alias of another scored metric (``aliases``: ``{metric: the metric of the same formula}``,
    :func:`kmx_eval.metrics.quantus.spec.metric_aliases`) rank the maps (controls excluded; maps in
    ``same_as``, ``{(dataset, combination, method): representative}`` from
    :mod:`kmx_eval.report.duplicates`, are counted once, under their representative) 1 = best
    respecting the metric's direction (ties share the mean rank); a map's rank in the category is
    its median over those metrics. Categories are not pooled: a faithfulness win says nothing about
    localisation. Agreement between metrics of a category is Kendall's tau
    (``scipy.stats.kendalltau``) between every pair of their rankings. Ranks are invariant to any
    increasing change of a metric, so they can be compared across metrics.

    Returns ``(ranking, agreement)``: ranking :data:`RANKING_COLUMNS` (``same_as``: the maps counted
    under this one, comma-separated) plus one column per metric; agreement ``dataset, category,
    metric_a, metric_b, tau, n``.
    """
    skip, same_as, aliases = skip or {}, same_as or {}, aliases or {}
    kinds = {c: RANKED_CATEGORIES.get(c, "explainer") for c in categories}
    sel = agg[agg["category"].isin(list(categories)) & ~agg["method"].isin(CONTROLS)]
    sel = sel[[kinds[c] == k for c, k in zip(sel["category"], sel["kind"])]]
    duplicate = [(d, c, m) in same_as for d, c, m in zip(sel["dataset"], sel["combination"], sel["method"])]
    sel = sel[~np.asarray(duplicate, dtype=bool)]
    ranking, agreement = [], []
    for (ds, category), group in sel.groupby(["dataset", "category"], sort=False):
        scored = set(group["metric"])
        ranks = {}
        for metric, g in group.groupby("metric", sort=False):
            if metric in skip.get(ds, set()) or aliases.get(metric) in scored:
                continue
            g = g[np.isfinite(g["value"].to_numpy(dtype=float))]
            hib = direction(g["higher_is_better"].iloc[0]) if len(g) else None
            if len(g) < 2 or hib is None:
                continue
            values = g.set_index(["combination", "method"])["value"].astype(float)
            ranks[metric] = (-values if hib else values).rank(method="average")
        if not ranks:
            continue
        table = pd.DataFrame(ranks)
        med = table.median(axis=1, skipna=True)
        for (comb, method), r in table.iterrows():
            merged = sorted(m for (d, c, m), rep in same_as.items() if (d, c, rep) == (ds, comb, method))
            ranking.append({"dataset": ds, "category": category, "combination": comb, "method": method,
                            "median_rank": float(med[(comb, method)]), "n_metrics": int(r.notna().sum()),
                            "same_as": ", ".join(merged), **{m: float(v) for m, v in r.items()}})
        agreement += _rank_agreement(table, dataset=ds, category=category)
    rank_frame = pd.DataFrame(ranking, columns=None if ranking else RANKING_COLUMNS)
    if len(rank_frame):
        order = {c: i for i, c in enumerate(categories)}
        rank_frame = rank_frame.assign(_order=rank_frame["category"].map(order)).sort_values(
            ["dataset", "_order", "median_rank", "combination", "method"], kind="stable").drop(columns="_order")
    return rank_frame.reset_index(drop=True), pd.DataFrame(
        agreement, columns=["dataset", "category", "metric_a", "metric_b", "tau", "n"])


def _rank_agreement(table: pd.DataFrame, *, dataset: str, category: str) -> list[dict]:
    """Kendall's tau between every pair of metric rankings (columns of ``table``) with three maps or more."""
    names, rows = list(table.columns), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = table[[a, b]].dropna()
            if len(both) >= 3:
                rows.append({"dataset": dataset, "category": category, "metric_a": a, "metric_b": b,
                             "tau": float(kendalltau(both[a], both[b]).statistic), "n": len(both)})
    return rows
