"""Result tables of the report, built from the tidy metrics frame.

Every number in the report comes from one frame: :func:`aggregate_seeds` reduces the tidy rows that
the ``evaluate`` stages wrote (``kmx_eval.metrics.tidy.TIDY_COLUMNS``) to one row per dataset,
combination, method and metric; the tables, the figures, the headline sentences and
``reports/metrics.json`` all read that frame, and :func:`fmt` is the one number format they share.

A :class:`Table` keeps three aligned views of the same numbers:

- ``numbers``: long form, one row per cell (``value, ci_low, ci_high, seed_sd, n_seeds, chance,
  higher_is_better, best, note``), written as ``{name}_long.csv``;
- ``cells``: the display strings ``"value [low, high]"`` (``"... ± sd"`` over several seeds), written
  as ``{name}.csv``, Markdown and LaTeX (booktabs) and shown in the HTML report;
- ``best``: where a cell holds the best value of its column within its dataset.

Seed aggregation (docs/METHOD.md, section 6, "Intervals"; ``S`` seeds with a finite value ``v_s``
and per-seed bounds ``l_s, h_s``)::

    value   = (1/S) sum_s v_s
    seed_sd = sqrt( 1/(S-1) sum_s (m_s - mean_s m_s)^2 )   (only when S > 1; m_s = seed s's mean)

and the interval, by what exists for the key (the ``interval`` column says which):

- ``wilson`` / ``cluster_bootstrap``: the per-sample scores (``samples.csv``) of the key, as a
  matrix ``v_si`` (seeds x images, aligned by sample id, NaN where missing): images are resampled
  as clusters across seeds (an image's results under every seed move together;
  :func:`~kmx_eval.metrics.bootstrap.cluster_bootstrap_ci`), and a proportion (0/1 values:
  accuracy, agreement, decision agreement, PointingGame) gets the Wilson interval at the cluster
  design's effective number of images (:func:`~kmx_eval.metrics.bootstrap.proportion_ci`). With one
  seed both reproduce the per-seed row's interval;
- ``mean_of_seed_bounds``: keys without per-sample scores (prototype proximity, purity and
  diversity, which are per prototype and whose prototypes differ between seeds) keep
  ``ci_low = (1/S) sum_s l_s``, ``ci_high = (1/S) sum_s h_s``, the sampling uncertainty of one
  repetition.

``seed_sd`` is the spread across repetitions; the report shows it beside the interval rather than
mixing it in. Paired comparisons (:func:`paired_comparisons`, :func:`control_differences`) resample
images as clusters across seeds too (:func:`~kmx_eval.metrics.bootstrap.paired_cluster_bootstrap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from kmx_eval.errors import DataError
# The report reads the files the evaluate stages write through kmx_eval.metrics.tidy; its column
# lists are the contract (CURVE_COLUMNS is re-exported for stages/report.py).
from kmx_eval.metrics.tidy import CURVE_COLUMNS, SAMPLE_COLUMNS, TIDY_COLUMNS  # noqa: F401

#: Columns of the tidy metrics frame that the report reads (the contract of ``metrics.csv``).
METRIC_COLUMNS = TIDY_COLUMNS

#: What identifies one aggregated value.
KEYS = ["dataset", "combination", "kind", "method", "category", "metric"]
#: Row index of every metric table.
INDEX = ["dataset", "combination", "method"]

#: Significant digits of every number shown in the report (tables, HTML, headline sentences).
SIGNIFICANT_DIGITS = 4
#: Significant digits kept in the aggregated frame, the CSV tables and metrics.json, so that the
#: three hold identical floats and format to identical strings.
STORED_DIGITS = 10
MISSING = "n/a"
#: Cell of a table position that no row fills (e.g. agreement of the CNN with itself).
NOT_MEASURED = "–"

#: Order of heads in tables (other methods follow in order of appearance).
HEAD_ORDER = ("kmeans", "probe", "linear", "cnn")
#: Control maps (kmx_eval.explain.controls): shown beside the explainers, never ranked or bolded.
CONTROLS = ("random", "oracle", "oracle_pixel")


# ----------------------------------------------------------------------------------------- numbers
def fmt(x: float | None) -> str:
    """The report's number format: ``SIGNIFICANT_DIGITS`` significant digits, ``n/a`` if missing.

    Examples
    --------
    >>> fmt(0.412345), fmt(97.123), fmt(float("nan"))
    ('0.4123', '97.12', 'n/a')
    """
    if x is None:
        return MISSING
    x = float(x)
    if not math.isfinite(x):
        return MISSING
    text = f"{x:.{SIGNIFICANT_DIGITS}g}"
    return "0" if text == "-0" else text


def round_significant(x: float, digits: int = STORED_DIGITS) -> float:
    """Round ``x`` to ``digits`` significant digits (NaN and inf unchanged)."""
    x = float(x)
    if not math.isfinite(x) or x == 0.0:
        return x
    return float(f"{x:.{digits}g}")


def format_cell(value: float, low: float = np.nan, high: float = np.nan, seed_sd: float = np.nan) -> str:
    """``"value [low, high]"``, with ``" ± sd"`` when a spread across seeds exists."""
    if not finite(value):
        return MISSING
    text = fmt(value)
    if finite(low) and finite(high):
        text += f" [{fmt(low)}, {fmt(high)}]"
    if finite(seed_sd):
        text += f" ± {fmt(seed_sd)}"
    return text


def finite(x) -> bool:
    """True for a value that converts to a finite float (None, NaN, text: False)."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def direction(x) -> bool | None:
    """Parse a ``higher_is_better`` entry (bool, ``"True"``/``"False"``, 1/0, empty) to True/False/None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer, float, np.floating)):
        return bool(x)
    text = str(x).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def check_columns(frame: pd.DataFrame, required: Iterable[str], what: str) -> None:
    """Raise :class:`DataError` naming the missing columns of ``what``."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {', '.join(missing)}; expected {', '.join(required)}")


# ------------------------------------------------------------------------------------ aggregation
#: Values of the aggregated frame's ``interval`` column: how ``ci_low``/``ci_high`` were computed.
INTERVALS = ("wilson", "cluster_bootstrap", "mean_of_seed_bounds")
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
    frame = samples[["seed", "sample", "value"]].copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    if seeds is not None:
        frame = frame[frame["seed"].isin(list(seeds))]
    if frame.empty:
        return np.empty((0, 0))
    wide = frame.pivot(index="seed", columns="sample", values="value").sort_index(axis=0).sort_index(axis=1)
    return wide.to_numpy(dtype=float)


def aggregate_seeds(metrics: pd.DataFrame, samples: pd.DataFrame | None = None, *, n_resamples: int = 1000,
                    confidence: float = 0.95, bootstrap_seed: int | None = None,
                    proportion=None) -> pd.DataFrame:
    """Reduce the tidy metrics of all seeds to one row per dataset, combination, method and metric.

    Implements the equations of the module docstring: the mean value over seeds; the interval from
    the per-sample scores where ``samples`` has them for the key (images resampled as clusters
    across seeds, Wilson for proportions, ``seed_sd`` from
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
        Seed of the cluster bootstrap; by default the smallest seed of the key, which is the seed
        the evaluate stage gives the per-seed row's bootstrap, so one seed reproduces that row.
    proportion : callable ``(kind, metric) -> bool``, optional
        Which keys are proportions; default :func:`kmx_eval.metrics.evaluation.is_proportion`.

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
    from kmx_eval.metrics.bootstrap import cluster_bootstrap_ci, proportion_ci, seed_spread

    check_columns(metrics, METRIC_COLUMNS, "the tidy metrics frame")
    frame = metrics.copy()
    for col in ("value", "ci_low", "ci_high", "n", "n_missing", "chance"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    by_key: dict = {}
    if samples is not None and len(samples):
        check_columns(samples, SAMPLE_COLUMNS, "the per-sample scores frame")
        by_key = {key: group for key, group in samples.groupby(_SAMPLE_KEYS, sort=False)}
        if proportion is None:
            from kmx_eval.metrics.evaluation import is_proportion as proportion
    rows = []
    for key, group in frame.groupby(KEYS, sort=False, dropna=False):
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
        low = float(finite["ci_low"].mean()) if finite["ci_low"].notna().any() else np.nan
        high = float(finite["ci_high"].mean()) if finite["ci_high"].notna().any() else np.nan
        sd = float(values.std(ddof=1)) if n_seeds > 1 else np.nan
        interval = "mean_of_seed_bounds"
        sample_key = tuple(key[i] for i in (0, 1, 3, 5))  # dataset, combination, method, metric
        if sample_key in by_key:
            seeds = sorted(int(x) for x in group["seed"].unique())
            matrix = seed_matrix(by_key[sample_key], seeds)
            if matrix.size:
                boot_seed = min(seeds) if bootstrap_seed is None else int(bootstrap_seed)
                if proportion(key[2], key[5]):
                    present = matrix[~np.isnan(matrix)]
                    if np.any((present != 0.0) & (present != 1.0)):
                        raise DataError(f"the per-sample scores of {key[5]!r} ({key[0]}/{key[1]}/{key[3]}) "
                                        "are declared a proportion but are not 0/1; rerun evaluate")
                    _, low, high = proportion_ci(matrix, confidence)
                    interval = "wilson"
                elif (n_seeds == 1 and int((~np.isnan(matrix)).any(axis=1).sum()) == 1
                      and int(finite["seed"].iloc[0]) == boot_seed
                      and finite_bounds(finite["ci_low"].iloc[0], finite["ci_high"].iloc[0])):
                    # One seed: the cluster bootstrap is the per-seed row's bootstrap (same indices,
                    # same arithmetic; tested), which metrics.csv keeps at full precision while
                    # samples.csv rounds the scores to 10 significant digits.
                    low, high = float(finite["ci_low"].iloc[0]), float(finite["ci_high"].iloc[0])
                    interval = "cluster_bootstrap"
                else:
                    _, low, high = cluster_bootstrap_ci(matrix, n_resamples=n_resamples, confidence=confidence,
                                                        seed=boot_seed)
                    interval = "cluster_bootstrap"
                sd = seed_spread(matrix)[0]
        rows.append(dict(
            zip(KEYS, key),
            value=float(values.mean()) if n_seeds else np.nan,
            ci_low=low,
            ci_high=high,
            seed_sd=sd,
            n_seeds=n_seeds,
            n=float(finite["n"].mean()) if finite["n"].notna().any() else np.nan,
            n_missing=float(group["n_missing"].sum()) if group["n_missing"].notna().any() else np.nan,
            chance=float(group["chance"].mean()) if group["chance"].notna().any() else np.nan,
            higher_is_better=next(iter(directions)) if directions else None,
            note="; ".join(notes),
            interval=interval if finite_bounds(low, high) else "",
        ))
    out = pd.DataFrame(rows, columns=AGGREGATED_COLUMNS)
    for col in ("value", "ci_low", "ci_high", "seed_sd", "chance", "n"):
        out[col] = out[col].map(round_significant)
    # True / False / None (a metric without a direction): object dtype keeps None distinct.
    out["higher_is_better"] = pd.Series([direction(d) for d in out["higher_is_better"]], index=out.index,
                                        dtype=object)
    return out


def finite_bounds(low, high) -> bool:
    """True when both bounds of an interval are finite."""
    return finite(low) and finite(high)


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


# ------------------------------------------------------------------------------------------ tables
@dataclass
class Table:
    """One result table in three aligned views (see module docstring).

    Attributes
    ----------
    name : str
        File stem under ``reports/tables/`` and HTML id (``table-{name}``).
    title, caption : str
        Heading and explanation shown with the table (caption also in LaTeX).
    numbers : DataFrame
        Long form: ``index`` columns, ``column`` (the display column), ``value, ci_low, ci_high,
        seed_sd, n_seeds, chance, higher_is_better, best, note``.
    cells : DataFrame
        Display strings; a MultiIndex of the ``index`` columns, one column per display column.
    best : DataFrame
        Booleans aligned with ``cells``: the emphasised cells (best per column within a dataset;
        for comparisons, intervals that exclude zero).
    notes : DataFrame
        Strings aligned with ``cells``: why a value is missing.
    sort_keys : DataFrame
        Floats aligned with ``cells`` used to sort the HTML table (NaN last).
    """

    name: str
    title: str
    caption: str
    index: list[str]
    numbers: pd.DataFrame
    cells: pd.DataFrame
    best: pd.DataFrame
    notes: pd.DataFrame
    sort_keys: pd.DataFrame

    @property
    def empty(self) -> bool:
        return self.cells.empty

    def subset(self, dataset: str, **levels: Sequence[str]) -> "Table":
        """The rows of one dataset, optionally only those whose index ``level`` is in ``levels[level]``.

        Best marks are per dataset already, so they carry over unchanged.
        """
        keep = np.array(self.cells.index.get_level_values("dataset") == dataset, dtype=bool)
        numbers_keep = np.array(self.numbers["dataset"] == dataset, dtype=bool)
        for level, allowed in levels.items():
            keep &= np.asarray(self.cells.index.get_level_values(level).isin(list(allowed)))
            numbers_keep &= np.asarray(self.numbers[level].isin(list(allowed)))
        numbers = self.numbers[numbers_keep]
        return Table(self.name, self.title, self.caption, self.index, numbers, self.cells[keep],
                     self.best[keep], self.notes[keep], self.sort_keys[keep])

    def html_rows(self) -> dict:
        """Header and rows for the HTML template: each cell ``text``, ``sort``, ``best``, ``note``."""
        header = [{"text": name, "numeric": False} for name in self.index]
        header += [{"text": col, "numeric": True} for col in self.cells.columns]
        rows = []
        for i, key in enumerate(self.cells.index):
            key = key if isinstance(key, tuple) else (key,)
            cells = [{"text": str(k), "sort": None, "best": False, "note": "", "index": True} for k in key]
            for j, col in enumerate(self.cells.columns):
                s = self.sort_keys.iat[i, j]
                cells.append({"text": self.cells.iat[i, j],
                              "sort": None if not finite(s) else repr(float(s)),
                              "best": bool(self.best.iat[i, j]), "note": self.notes.iat[i, j],
                              "index": False})
            rows.append(cells)
        return {"header": header, "rows": rows}


def _order(values: Iterable[str], preferred: Sequence[str] | None) -> list[str]:
    """Values in ``preferred`` order first, then the others in order of appearance."""
    seen = list(dict.fromkeys(values))
    preferred = [p for p in (preferred or []) if p in seen]
    return preferred + [v for v in seen if v not in preferred]


def _mark_best(numbers: pd.DataFrame, column: str = "column") -> pd.Series:
    """True where a value is the best of its display column within its dataset.

    The best is the maximum when ``higher_is_better`` is True and the minimum when it is False;
    ties are all marked; nothing is marked for metrics without a direction, for chance columns or
    where fewer than two finite values compete. Control maps (:data:`CONTROLS`: the random floor and
    the oracle ceiling) never compete.
    """
    best = pd.Series(False, index=numbers.index)
    competing = ~numbers["method"].isin(CONTROLS) if "method" in numbers else pd.Series(True, index=numbers.index)
    for _, group in numbers[competing].groupby(["dataset", column], sort=False):
        dirs = {d for d in group["higher_is_better"] if d is not None}
        finite = group[np.isfinite(group["value"].to_numpy(dtype=float))]
        if len(dirs) != 1 or len(finite) < 2 or group["is_chance"].any():
            continue
        target = finite["value"].max() if dirs.pop() else finite["value"].min()
        best.loc[finite.index[finite["value"] == target]] = True
    return best


def metric_table(
    agg: pd.DataFrame,
    *,
    name: str,
    title: str,
    caption: str,
    categories: Sequence[str],
    kinds: Sequence[str] | None = None,
    with_chance: bool = False,
    datasets: Sequence[str] | None = None,
    combinations: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> Table:
    """Pivot the aggregated frame: rows (dataset, combination, method), one column per metric.

    Parameters
    ----------
    agg : DataFrame
        Output of :func:`aggregate_seeds`.
    categories, kinds : sequence of str
        The tidy ``category`` (and optionally ``kind``) values the table shows.
    with_chance : bool
        Put a ``"{metric} chance"`` column beside each metric (localisation: a uniform random map,
        or the mask's share of the image for mass-based metrics).
    datasets, combinations, methods : sequence of str, optional
        Row order (params order); values not listed follow in order of appearance.
    metrics : sequence of str, optional
        Column order within a category (e.g. ``params.evaluate.quantus``).
    """
    sel = agg[agg["category"].isin(categories)]
    if kinds is not None:
        sel = sel[sel["kind"].isin(kinds)]
    ds_order = _order(sel["dataset"], datasets)
    comb_order = _order(sel["combination"], combinations)
    method_order = _order(sel["method"], list(methods or []) + list(HEAD_ORDER))
    metric_order = []
    for cat in categories:  # columns grouped by category, metrics in order of appearance
        metric_order += _order(sel.loc[sel["category"] == cat, "metric"], metrics)

    long_rows = []
    for _, r in sel.iterrows():
        base = {k: r[k] for k in INDEX}
        common = dict(higher_is_better=r["higher_is_better"], note=r["note"])
        long_rows.append({**base, "column": r["metric"], "metric": r["metric"], "is_chance": False,
                          "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                          "seed_sd": r["seed_sd"], "n_seeds": r["n_seeds"], "chance": r["chance"], **common})
        if with_chance:
            long_rows.append({**base, "column": f"{r['metric']} chance", "metric": r["metric"],
                              "is_chance": True, "value": r["chance"], "ci_low": np.nan,
                              "ci_high": np.nan, "seed_sd": np.nan, "n_seeds": r["n_seeds"],
                              "chance": r["chance"], "higher_is_better": None, "note": r["note"]})
    numbers = pd.DataFrame(long_rows, columns=INDEX + [
        "column", "metric", "is_chance", "value", "ci_low", "ci_high", "seed_sd", "n_seeds", "chance",
        "higher_is_better", "note"])
    columns = []
    for m in metric_order:
        columns.append(m)
        if with_chance:
            columns.append(f"{m} chance")
    if len(numbers):
        numbers = numbers.assign(
            _d=numbers["dataset"].map(ds_order.index), _c=numbers["combination"].map(comb_order.index),
            _m=numbers["method"].map(method_order.index), _k=numbers["column"].map(columns.index),
        ).sort_values(["_d", "_c", "_m", "_k"], kind="stable").drop(columns=["_d", "_c", "_m", "_k"])
        numbers = numbers.reset_index(drop=True)
    dup = numbers.duplicated(INDEX + ["column"], keep=False)
    if dup.any():
        r = numbers[dup].iloc[0]
        raise DataError(
            f"table {name}: metric {r['metric']!r} of {r['dataset']}/{r['combination']}/{r['method']} "
            "appears under two kinds; each dataset, combination, method and metric must be one row"
        )
    numbers["best"] = _mark_best(numbers) if len(numbers) else pd.Series(dtype=bool)
    return _assemble(name, title, caption, INDEX, numbers, columns)


def _assemble(name, title, caption, index, numbers, columns, text=None) -> Table:
    """Build the aligned display frames of a table from its long form."""
    keys = list(dict.fromkeys(tuple(r) for r in numbers[index].itertuples(index=False)))
    mi = pd.MultiIndex.from_tuples(keys, names=index) if keys else pd.MultiIndex.from_tuples([], names=index)
    cells = pd.DataFrame(NOT_MEASURED, index=mi, columns=columns, dtype=object)
    best = pd.DataFrame(False, index=mi, columns=columns)
    notes = pd.DataFrame("", index=mi, columns=columns, dtype=object)
    sort_keys = pd.DataFrame(np.nan, index=mi, columns=columns)
    for i, r in numbers.iterrows():
        key = tuple(r[k] for k in index)
        col = r["column"]
        if text is not None:
            cells.at[key, col] = text(r)
        elif r.get("is_chance", False):
            cells.at[key, col] = fmt(r["value"])
        else:
            cells.at[key, col] = format_cell(r["value"], r["ci_low"], r["ci_high"], r["seed_sd"])
        best.at[key, col] = bool(r["best"])
        notes.at[key, col] = r["note"] if isinstance(r["note"], str) else ""
        sort_keys.at[key, col] = r["value"]
    return Table(name, title, caption, list(index), numbers, cells, best, notes, sort_keys)


def _seeds_phrase(agg: pd.DataFrame) -> str:
    n = int(agg["n_seeds"].max()) if len(agg) else 0
    if n > 1:
        return (f" Values are means over {n} seeds: [low, high] resamples evaluation images as clusters "
                "across seeds (Wilson intervals for proportions; for per-prototype metrics, the mean of "
                "the per-seed intervals) and ± is the standard deviation of the per-seed means.")
    return (" [low, high] is the bootstrap interval over evaluation samples (Wilson intervals for "
            "proportions).")


def report_tables(
    agg: pd.DataFrame,
    datasets: Sequence[str] | None = None,
    combinations: Sequence[str] | None = None,
    explainers: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> list[Table]:
    """The report's standard tables: accuracy, prototype fidelity, localisation, faithfulness, concepts.

    ``combinations`` should include the CNN's pseudo-combination last (params order), ``explainers``
    and ``metrics`` fix the order of explainer rows and metric columns. Tables without
    any row (e.g. concept fidelity when no dataset has part maps) are still returned, empty.
    """
    seeds = _seeds_phrase(agg)
    best = " Bold: best value of the column within the dataset (respecting the metric's direction)."
    order = dict(datasets=datasets, combinations=combinations)
    prototype_metrics = ["proximity", "purity", "decision_agreement", "diversity"]
    return [
        metric_table(agg, name="accuracy", title="Accuracy and agreement of each head",
                     caption="Top-1 test accuracy of each head and agreement with the original CNN's "
                             "predictions, per dataset and block combination." + seeds + best,
                     categories=["accuracy", "agreement"], kinds=["head"], **order),
        metric_table(agg, name="prototype_fidelity", title="Prototype fidelity: linear vs k-means prototypes",
                     caption="Do prototypes represent the data? Proximity (distance to the nearest "
                             "training embedding over the median nearest-neighbour distance; about 1 sits "
                             "among the data), class purity, decision agreement and diversity of the "
                             "k-means prototypes p_ch and of the linear prototypes w_c (the CNN's fc, the "
                             "probe's rows). A linear head's rows are defined only up to alpha (w_c + v): "
                             "'linear'/'probe' read them as stored (alpha = 1, v = 0), "
                             "'linear_favourable'/'probe_favourable' at the equivalent alpha > 0 and "
                             "shared v that put them closest to the data (invariant to the head's alpha "
                             "and v). Linear purity ranks training embeddings by the centred logit "
                             "<w_c - wbar, z>, k-means purity by distance." + seeds + best,
                     categories=["prototype_fidelity"], **order,
                     methods=["kmeans", "linear_favourable", "linear", "probe_favourable", "probe"],
                     metrics=prototype_metrics),
        metric_table(agg, name="localisation", title="Localisation against ground-truth masks",
                     caption="Quantus localisation metrics per explainer and combination, each beside "
                             "its analytic chance level and, as rows of the same model and grid, the "
                             "random map (floor) and the oracle map (ceiling: the mask averaged onto the "
                             "grid the map lives on; oracle_pixel for pixel-level maps). Every metric is "
                             "invariant to a per-image positive affine change of the map (mass metrics "
                             "count the mass above the map's mean)." + seeds + best,
                     categories=["localisation"], kinds=["explainer"], with_chance=True, **order,
                     methods=list(explainers or []) + list(CONTROLS), metrics=metrics),
        metric_table(agg, name="faithfulness", title="Faithfulness, complexity, randomisation and stability",
                     caption="Quantus faithfulness metrics through the model under explanation, in units "
                             "that do not depend on the model's output scale (curves rescaled per image "
                             "from the unperturbed score to the fully perturbed one), beside the random "
                             "map on the same model (floor; the oracle is a reference, not a ceiling); "
                             "Sparseness; RandomLogit and MPRT (the backbone's blocks re-initialised "
                             "from B4 down; lower is better, 0 = unrelated maps); MaxSensitivity "
                             "(lower is better; the random map's value is its chance level)." + seeds + best,
                     categories=["faithfulness", "complexity", "randomisation", "robustness"],
                     kinds=["explainer"], with_chance=False,
                     **order, methods=list(explainers or []) + list(CONTROLS), metrics=metrics),
        metric_table(agg, name="concept_fidelity", title="Semantic fidelity of concept maps",
                     caption="Purity of concepts on parts and agreement (ARI, NMI) between concept map "
                             "and part map, inside the object mask (_object) and over the whole image "
                             "(_image), where part or object masks exist; one row per concept scope "
                             "(concepts_global: shared by all classes, concepts_class: per class). Chance: "
                             "the same maps with ids shuffled over the scored pixels. Ceiling: the 'oracle' "
                             "row, the part map averaged onto the combination's grid." + seeds + best,
                     categories=["concept_fidelity"], with_chance=True, **order,
                     methods=["concepts_global", "concepts_class", "oracle"],
                     metrics=[f"concept_{score}_{region}" for region in ("object", "image")
                              for score in ("purity", "ari", "nmi")]),
    ]


def variance_share_table(fit_metrics: dict, datasets: Sequence[str] | None = None,
                         combinations: Sequence[str] | None = None) -> Table:
    """Each block's share of F_S's total variance, per dataset and combination (the fit stage's
    ``variance_share_B{b}``, mean over seeds; docs/METHOD.md, section 6).

    ``fit_metrics`` maps ``(dataset, combination)`` to the contents of that ``fit.json``
    (``{"seed0": {"variance_share_B4": ..., ...}}``). ``share_b = sum_{c in b} Var_c / sum_c Var_c``:
    with the ``channels`` weighting a block weighs by its channel count, ``balanced`` aims at equal
    shares.
    """
    rows = []
    for (ds, comb), per_seed in fit_metrics.items():
        for seed_key, numbers in per_seed.items():
            for key, value in numbers.items():
                if key.startswith("variance_share_"):
                    rows.append({**{c: None for c in METRIC_COLUMNS}, "dataset": ds,
                                 "seed": int(str(seed_key).removeprefix("seed")), "combination": comb,
                                 "kind": "head", "method": "F_S", "category": "block_variance",
                                 "metric": key.removeprefix("variance_share_"), "value": value,
                                 "n": 1, "n_missing": 0, "higher_is_better": None, "note": ""})
    frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
    agg = aggregate_seeds(frame) if len(frame) else frame
    return metric_table(agg, name="block_variance", title="Share of F_S's variance per block",
                        caption="Each block's share of the total variance of the combined map F_S on the "
                                "concept-fitting training images: channels weighting (B34, B234) against "
                                "balanced (B34_balanced, B234_balanced), where every block should bring "
                                "the same share.",
                        categories=["block_variance"], datasets=datasets, combinations=combinations,
                        metrics=["B1", "B2", "B3", "B4"])


# ------------------------------------------------------------------------------ paired comparisons
def paired_comparisons(
    samples: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
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

    is reported with the percentile interval of
    :func:`kmx_eval.metrics.bootstrap.paired_cluster_bootstrap`, which resamples images as clusters
    across seeds (an image's pairs under every seed move together; docs/METHOD.md, section 6,
    "Intervals"). With one seed this is the paired bootstrap of the ``n`` matched pairs in sample
    order. ``mean_a`` and ``mean_b`` are the same mean over seeds of per-seed means. Positive
    ``difference`` means B scores higher.

    Parameters
    ----------
    samples : DataFrame
        Per-sample scores (columns :data:`SAMPLE_COLUMNS`); rows with a non-finite value (a reason
        in ``reason``) are left out, and so is their partner.
    pairs : sequence of (str, str)
        Combinations to compare, ``(A, B)``.
    n_resamples, confidence, seed
        Passed to ``paired_cluster_bootstrap``.

    Returns
    -------
    DataFrame
        ``dataset, a, b, method, metric, n, n_seeds, mean_a, mean_b, difference, ci_low, ci_high``.
    """
    from kmx_eval.metrics.bootstrap import paired_cluster_bootstrap, seed_mean

    check_columns(samples, SAMPLE_COLUMNS, "the per-sample scores frame")
    cols = ["dataset", "a", "b", "method", "metric", "n", "n_seeds", "mean_a", "mean_b", "difference",
            "ci_low", "ci_high"]
    frame = samples.copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame = frame[np.isfinite(frame["value"].to_numpy(dtype=float))]
    rows = []
    for dataset in _order(frame["dataset"], None):
        ds = frame[frame["dataset"] == dataset]
        for a, b in pairs:
            left = ds[ds["combination"] == a]
            right = ds[ds["combination"] == b]
            for (method, metric), la in left.groupby(["method", "metric"], sort=False):
                rb = right[(right["method"] == method) & (right["metric"] == metric)]
                joined = la.merge(rb, on=["seed", "sample"], suffixes=("_a", "_b"))
                joined = joined.sort_values(["seed", "sample"], kind="stable")
                if len(joined) < 2:
                    continue
                va, vb = _paired_matrices(joined, "value_a", "value_b")
                diff, low, high = paired_cluster_bootstrap(vb, va, n_resamples=n_resamples,
                                                           confidence=confidence, seed=seed)
                rows.append(dict(dataset=dataset, a=a, b=b, method=method, metric=metric,
                                 n=len(joined), n_seeds=int(joined["seed"].nunique()),
                                 mean_a=seed_mean(va), mean_b=seed_mean(vb),
                                 difference=float(diff), ci_low=float(low), ci_high=float(high)))
    out = pd.DataFrame(rows, columns=cols)
    for col in ("mean_a", "mean_b", "difference", "ci_low", "ci_high"):
        out[col] = out[col].map(round_significant)
    return out


def _paired_matrices(joined: pd.DataFrame, left: str, right: str) -> tuple[np.ndarray, np.ndarray]:
    """Two aligned :func:`seed_matrix` matrices of matched pairs (``joined``: one row per ``seed,
    sample`` with columns ``left`` and ``right``). With one seed the row holds the pairs in sample
    order."""
    return tuple(seed_matrix(joined[["seed", "sample", col]].rename(columns={col: "value"}))
                 for col in (left, right))


def comparison_table(comparisons: pd.DataFrame, agg: pd.DataFrame | None = None,
                     confidence: float = 0.95) -> Table:
    """Display table of :func:`paired_comparisons`; bold where the interval excludes zero.

    Columns: the mean of A, the mean of B, ``B − A [low, high]``, ``n`` pairs and which combination
    the difference favours (using the metric's ``higher_is_better`` from ``agg`` when given).
    """
    index = ["dataset", "comparison", "method", "metric"]
    directions = {}
    if agg is not None and len(agg):
        for r in agg.itertuples(index=False):
            if r.higher_is_better is not None:
                directions[(r.dataset, r.metric)] = r.higher_is_better
    long_rows = []
    for r in comparisons.itertuples(index=False):
        base = dict(dataset=r.dataset, comparison=f"{r.b} − {r.a}", method=r.method, metric=r.metric)
        excludes_zero = finite(r.ci_low) and finite(r.ci_high) and (r.ci_low > 0 or r.ci_high < 0)
        hib = directions.get((r.dataset, r.metric))
        if not excludes_zero:
            favours = "neither"
        elif hib is None:
            favours = r.b if r.difference > 0 else r.a
            favours = f"{favours} (higher)"
        else:
            favours = r.b if (r.difference > 0) == hib else r.a
        common = dict(higher_is_better=hib, note="", is_chance=False, seed_sd=np.nan, chance=np.nan,
                      n_seeds=r.n_seeds)
        long_rows += [
            {**base, **common, "column": "mean A", "value": r.mean_a, "ci_low": np.nan,
             "ci_high": np.nan, "best": False, "text": None},
            {**base, **common, "column": "mean B", "value": r.mean_b, "ci_low": np.nan,
             "ci_high": np.nan, "best": False, "text": None},
            {**base, **common, "column": "B − A", "value": r.difference, "ci_low": r.ci_low,
             "ci_high": r.ci_high, "best": bool(excludes_zero), "text": None},
            {**base, **common, "column": "pairs", "value": float(r.n), "ci_low": np.nan,
             "ci_high": np.nan, "best": False, "text": str(int(r.n))},
            {**base, **common, "column": "favours", "value": np.nan, "ci_low": np.nan,
             "ci_high": np.nan, "best": False, "text": favours},
        ]
    numbers = pd.DataFrame(long_rows, columns=index + [
        "column", "value", "ci_low", "ci_high", "seed_sd", "n_seeds", "chance", "higher_is_better",
        "best", "note", "is_chance", "text"])

    def text(r):
        if isinstance(r["text"], str):
            return r["text"]
        return format_cell(r["value"], r["ci_low"], r["ci_high"])

    caption = (f"Paired differences B − A over the same evaluation images (mean over seeds), with "
               f"{confidence:.0%} paired-bootstrap intervals that resample images as clusters across seeds. "
               "Bold: the interval excludes zero.")
    table = _assemble("comparisons", "Paired comparisons of block combinations", caption, index, numbers,
                      ["mean A", "mean B", "B − A", "pairs", "favours"], text=text)
    table.numbers = numbers.drop(columns=["text"])
    return table


# ------------------------------------------------------------------------------------- renderings
def to_markdown(table: Table) -> str:
    """GitHub Markdown of the table; best cells in bold, missing-value notes as footnotes."""
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    header = list(table.index) + list(table.cells.columns)
    lines = [f"**{esc(table.title)}**", "", "| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join([":--"] * len(table.index) + ["--:"] * len(table.cells.columns)) + "|"]
    notes: list[str] = []
    for i, key in enumerate(table.cells.index):
        key = key if isinstance(key, tuple) else (key,)
        out = [esc(k) for k in key]
        for j in range(table.cells.shape[1]):
            text = esc(table.cells.iat[i, j])
            if table.best.iat[i, j]:
                text = f"**{text}**"
            note = table.notes.iat[i, j]
            if text == MISSING and note:
                if note not in notes:
                    notes.append(note)
                text += f"<sup>{notes.index(note) + 1}</sup>"
            out.append(text)
        lines.append("| " + " | ".join(out) + " |")
    lines += ["", esc(table.caption)]
    lines += [f"<sup>{k + 1}</sup> {esc(n)}" for k, n in enumerate(notes)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))
    return out.replace("±", r"$\pm$").replace("−", "$-$")


def to_latex(table: Table) -> str:
    """LaTeX (booktabs: ``\\toprule``, ``\\midrule``, ``\\bottomrule``) via pandas' Styler.

    Best cells are wrapped in ``\\textbf{}``; names are escaped (``margin\\_centred``).
    """
    cells = table.cells.map(_latex_escape)
    cells.index = pd.MultiIndex.from_tuples(
        [tuple(_latex_escape(k) for k in (key if isinstance(key, tuple) else (key,)))
         for key in table.cells.index], names=[_latex_escape(n) for n in table.index]) \
        if len(cells) else cells.index
    cells.columns = [_latex_escape(c) for c in cells.columns]
    styles = np.where(table.best.to_numpy(), "textbf:--rwrap;", "")
    styler = cells.style.apply(lambda _: styles, axis=None)
    return styler.to_latex(hrules=True, caption=_latex_escape(table.caption), label=f"tab:{table.name}",
                           position_float="centering", column_format="l" * len(table.index)
                           + "r" * len(cells.columns), multirow_align="t", clines=None)


def to_csv_frames(table: Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The display frame (``{name}.csv``) and the long numeric frame (``{name}_long.csv``)."""
    display = table.cells.reset_index()
    numbers = table.numbers.drop(columns=[c for c in ("is_chance",) if c in table.numbers.columns])
    return display, numbers


# ------------------------------------------------------------------------------ controls and ranking
def control_differences(samples: pd.DataFrame, metrics: Sequence[str], n_resamples: int, confidence: float,
                        seed: int) -> pd.DataFrame:
    """Oracle minus random on the same model, per dataset, combination and metric (paired bootstrap).

    The (seed, sample) pairs form aligned (seed x image) matrices and the interval is
    :func:`kmx_eval.metrics.bootstrap.paired_cluster_bootstrap` of oracle − random (images resampled
    as clusters across seeds, docs/METHOD.md, section 6, "Intervals"); with one seed, the paired
    bootstrap of the pairs in sample order. ``random``, ``oracle`` and ``difference`` are means over
    seeds of per-seed means; ``n`` counts the pairs.

    The oracle is the ``oracle`` map of the same model and grid (B4's grid for the CNN). A
    localisation metric (higher is better) is informative on a model when the interval lies above 0;
    one whose interval includes 0, or lies below it (the oracle scores worse than chance, as
    TopKIntersection can on a 2 x 2 grid), cannot tell the ceiling from the floor there.

    Returns ``dataset, combination, metric, n, random, oracle, difference, ci_low, ci_high, informative``.
    """
    from kmx_eval.metrics.bootstrap import paired_cluster_bootstrap, seed_mean

    cols = ["dataset", "combination", "metric", "n", "random", "oracle", "difference", "ci_low", "ci_high",
            "informative"]
    frame = samples[samples["metric"].isin(list(metrics)) & samples["method"].isin(["random", "oracle"])].copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame = frame[np.isfinite(frame["value"].to_numpy(dtype=float))]
    rows = []
    for (ds, comb, metric), group in frame.groupby(["dataset", "combination", "metric"], sort=False):
        joined = group[group["method"] == "random"].merge(group[group["method"] == "oracle"],
                                                           on=["seed", "sample"], suffixes=("_r", "_o"))
        joined = joined.sort_values(["seed", "sample"], kind="stable")
        if len(joined) < 2:
            continue
        vr, vo = _paired_matrices(joined, "value_r", "value_o")
        diff, low, high = paired_cluster_bootstrap(vo, vr, n_resamples=n_resamples, confidence=confidence,
                                                   seed=seed)
        rows.append(dict(dataset=ds, combination=comb, metric=metric, n=len(joined), random=seed_mean(vr),
                         oracle=seed_mean(vo), difference=float(diff), ci_low=float(low),
                         ci_high=float(high), informative=bool(low > 0)))
    return pd.DataFrame(rows, columns=cols)


def uninformative(controls: pd.DataFrame) -> dict[str, set[str]]:
    """Per dataset, the metrics whose oracle-minus-random interval includes 0 on some model."""
    out: dict[str, set[str]] = {}
    for r in controls.itertuples(index=False):
        if not r.informative:
            out.setdefault(r.dataset, set()).add(r.metric)
    return out


def controls_table(controls: pd.DataFrame, confidence: float = 0.95) -> Table:
    """Display table of :func:`control_differences`."""
    index = ["dataset", "combination", "metric"]
    long_rows = []
    for r in controls.itertuples(index=False):
        base = dict(dataset=r.dataset, combination=r.combination, metric=r.metric, higher_is_better=None,
                    note="", is_chance=False, seed_sd=np.nan, chance=np.nan, n_seeds=1, best=False)
        for column, value, low, high, text in (
                ("random (floor)", r.random, np.nan, np.nan, None),
                ("oracle (ceiling)", r.oracle, np.nan, np.nan, None),
                ("oracle − random", r.difference, r.ci_low, r.ci_high, None),
                ("informative", np.nan, np.nan, np.nan, "yes" if r.informative else "no: not used to rank")):
            long_rows.append({**base, "column": column, "value": value, "ci_low": low, "ci_high": high,
                              "text": text})
    numbers = pd.DataFrame(long_rows, columns=index + [
        "column", "value", "ci_low", "ci_high", "seed_sd", "n_seeds", "chance", "higher_is_better",
        "best", "note", "is_chance", "text"])

    def text(r):
        return r["text"] if isinstance(r["text"], str) else format_cell(r["value"], r["ci_low"], r["ci_high"])

    caption = (f"Can each localisation metric tell the oracle (the mask on the map's grid) from the random "
               f"map on the same model? Paired {confidence:.0%} bootstrap interval of oracle − random (images "
               "resampled as clusters across seeds); a "
               "metric whose interval includes 0 on some model of a dataset is uninformative there and "
               "is left out of the ranking.")
    return _assemble("controls", "Floor and ceiling of every localisation metric", caption, index, numbers,
                     ["random (floor)", "oracle (ceiling)", "oracle − random", "informative"], text=text)


def metric_ranking(agg: pd.DataFrame, skip: Mapping[str, set[str]] | None = None,
                   categories: Sequence[str] = ("localisation", "faithfulness", "randomisation", "robustness"),
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rank every explainer x combination per metric, then take the median rank, per dataset.

    Per dataset and metric (``categories``, minus the metrics in ``skip[dataset]``), explainer maps
    (controls excluded) are ranked 1 = best respecting the metric's direction (ties share the mean
    rank); the overall rank is the median over metrics. Agreement between metrics is Kendall's tau
    (``scipy.stats.kendalltau``) between every pair of metric rankings; its mean is reported.
    Ranks are invariant to any increasing change of a metric, so they can be compared across metrics.

    Returns ``(ranking, agreement)``: ranking ``dataset, combination, method, median_rank, n_metrics``
    plus one column per metric; agreement ``dataset, metric_a, metric_b, tau, n``.
    """
    from scipy.stats import kendalltau

    skip = skip or {}
    sel = agg[(agg["kind"] == "explainer") & agg["category"].isin(list(categories))
              & ~agg["method"].isin(CONTROLS)]
    ranking, agreement = [], []
    for ds, group in sel.groupby("dataset", sort=False):
        ranks = {}
        for metric, g in group.groupby("metric", sort=False):
            if metric in skip.get(ds, set()):
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
            ranking.append({"dataset": ds, "combination": comb, "method": method,
                            "median_rank": float(med[(comb, method)]), "n_metrics": int(r.notna().sum()),
                            **{m: float(v) for m, v in r.items()}})
        names = list(table.columns)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                both = table[[a, b]].dropna()
                if len(both) >= 3:
                    tau = kendalltau(both[a], both[b]).statistic
                    agreement.append({"dataset": ds, "metric_a": a, "metric_b": b, "tau": float(tau),
                                      "n": len(both)})
    rank_frame = pd.DataFrame(ranking)
    if len(rank_frame):
        rank_frame = rank_frame.sort_values(["dataset", "median_rank", "combination", "method"], kind="stable")
    return rank_frame.reset_index(drop=True), pd.DataFrame(agreement, columns=["dataset", "metric_a", "metric_b",
                                                                               "tau", "n"])


def ranking_table(ranking: pd.DataFrame, agreement: pd.DataFrame) -> Table:
    """Display table of :func:`metric_ranking`: median rank, number of metrics, mean Kendall's tau."""
    index = ["dataset", "combination", "method"]
    taus = agreement.groupby("dataset")["tau"].mean().to_dict() if len(agreement) else {}
    long_rows = []
    for r in ranking.to_dict("records"):
        base = dict(dataset=r["dataset"], combination=r["combination"], method=r["method"], higher_is_better=False,
                    note="", is_chance=False, seed_sd=np.nan, chance=np.nan, n_seeds=1, ci_low=np.nan,
                    ci_high=np.nan, best=False)
        long_rows.append({**base, "column": "median rank", "value": r["median_rank"], "text": None})
        long_rows.append({**base, "column": "metrics", "value": float(r["n_metrics"]),
                          "text": str(int(r["n_metrics"]))})
        tau = taus.get(r["dataset"], np.nan)
        long_rows.append({**base, "column": "agreement (mean Kendall tau)", "value": tau, "text": None})
    numbers = pd.DataFrame(long_rows, columns=index + [
        "column", "value", "ci_low", "ci_high", "seed_sd", "n_seeds", "chance", "higher_is_better",
        "best", "note", "is_chance", "text"])

    def text(r):
        return r["text"] if isinstance(r["text"], str) else fmt(r["value"])

    caption = ("Median over the informative localisation, faithfulness, randomisation and stability "
               "metrics of each map's rank among the explainers and combinations of the dataset "
               "(1 = best; controls excluded), and how much the metric rankings agree (mean Kendall's tau "
               "over pairs of metrics; 1 = identical rankings, 0 = unrelated). Read the agreement first.")
    return _assemble("ranking", "Ranking across metrics", caption, index, numbers,
                     ["median rank", "metrics", "agreement (mean Kendall tau)"], text=text)
