"""Tidy tables of metric values: one row per value, fixed columns, byte-stable files.

Every number of the ``evaluate`` stages goes through :func:`row` (or :func:`summary_row`, which
adds the interval of a per-sample vector: percentile bootstrap, or Wilson for a proportion) and
:func:`frame`. Columns are in the order of :data:`TIDY_COLUMNS` and rows are sorted by their
identifying columns, so the same results always give the same bytes and DVC does not see a change
where there is none.

The per-sample scores (``samples.csv``, :data:`SAMPLE_COLUMNS`) keep what a paired comparison
needs, and the pixel-flipping curves (``curves.csv``, :data:`CURVE_COLUMNS`) feed the DVC plots.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from kmx_eval.metrics.bootstrap import bootstrap_ci, wilson_interval

#: Columns of ``metrics.csv`` (docs/ARCHITECTURE.md, "Tidy metrics"), in file order.
TIDY_COLUMNS: tuple[str, ...] = (
    "dataset", "seed", "combination", "kind", "method", "category", "metric", "value",
    "ci_low", "ci_high", "n", "n_missing", "chance", "higher_is_better", "note",
)
#: Columns of ``samples.csv``: one score per evaluation sample, for paired bootstraps.
SAMPLE_COLUMNS: tuple[str, ...] = (
    "dataset", "seed", "combination", "method", "metric", "sample", "value", "reason",
)
#: Columns of ``curves.csv``: the mean pixel-flipping curve of each explainer.
CURVE_COLUMNS: tuple[str, ...] = ("dataset", "seed", "combination", "method", "fraction", "score")
#: Prototype-fidelity metrics (the ``metric`` of ``kind`` prototypes rows), in table order: name ->
#: higher_is_better. Two diversities (docs/METHOD.md, section 4): ``diversity_scaled``, scale-free,
#: compared across heads in different spaces; ``diversity_kmex``, KMEx's formula, which depends on
#: the scale of the space. Here, not in kmx_eval.metrics.evaluation, so the report reads it without torch.
PROTOTYPE_METRICS: dict[str, bool] = {"proximity": False, "separation": False, "purity": True,
                                      "decision_agreement": True, "diversity_scaled": True,
                                      "diversity_kmex": True}

#: Allowed values of the ``kind`` column.
KINDS = ("head", "prototypes", "explainer", "concepts", "sharpness", "interventions", "keypoints")
#: Allowed values of the ``category`` column.
CATEGORIES = ("accuracy", "agreement", "prototype_fidelity", "localisation", "faithfulness",
              "complexity", "randomisation", "robustness", "concept_fidelity", "sharpness", "interventions")

# Rows are identified by these columns; they also fix the sort order of the files.
_TIDY_KEY = ["dataset", "seed", "combination", "kind", "method", "category", "metric"]
_SAMPLE_KEY = ["dataset", "seed", "combination", "method", "metric", "sample"]
_CURVE_KEY = ["dataset", "seed", "combination", "method", "fraction"]


def _float(value: Any) -> float:
    """``None`` and non-numbers become NaN; numpy scalars become Python floats."""
    if value is None:
        return math.nan
    return float(value)


def row(
    *,
    dataset: str,
    seed: int,
    combination: str,
    kind: str,
    method: str,
    category: str,
    metric: str,
    value: float | None,
    ci_low: float | None = None,
    ci_high: float | None = None,
    n: int = 0,
    n_missing: int = 0,
    chance: float | None = None,
    higher_is_better: bool = True,
    note: str = "",
) -> dict[str, Any]:
    """One tidy row (a dict with exactly :data:`TIDY_COLUMNS`).

    ``value``, ``ci_low``, ``ci_high`` and ``chance`` may be ``None`` (written as empty cells);
    a missing ``value`` needs a ``note`` that says why, so that nothing is silently blank.

    Raises
    ------
    ValueError
        For a ``kind`` or ``category`` outside :data:`KINDS` / :data:`CATEGORIES`, or a missing
        value without a note.
    """
    if kind not in KINDS:
        raise ValueError(f"tidy row: kind {kind!r} is not one of {', '.join(KINDS)}")
    if category not in CATEGORIES:
        raise ValueError(f"tidy row: category {category!r} is not one of {', '.join(CATEGORIES)}")
    value_f = _float(value)
    if math.isnan(value_f) and not note:
        raise ValueError(f"tidy row {method}/{metric}: a missing value needs a note saying why")
    return {
        "dataset": str(dataset),
        "seed": int(seed),
        "combination": str(combination),
        "kind": kind,
        "method": str(method),
        "category": category,
        "metric": str(metric),
        "value": value_f,
        "ci_low": _float(ci_low),
        "ci_high": _float(ci_high),
        "n": int(n),
        "n_missing": int(n_missing),
        "chance": _float(chance),
        "higher_is_better": bool(higher_is_better),
        "note": str(note or ""),
    }


def missing_note(reasons: Iterable[str | None]) -> str:
    """Summarise per-sample reasons as ``"3 missing: constant map (2), empty mask (1)"``.

    Reasons are counted and listed by decreasing count, then alphabetically, so the note is
    stable. ``None`` entries (scored samples) are ignored; no reason gives ``""``.
    """
    counts = Counter(r for r in reasons if r)
    if not counts:
        return ""
    parts = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(counts.values())
    return f"{total} missing: " + ", ".join(f"{r} ({c})" for r, c in parts)


def summary_row(
    values: np.ndarray,
    *,
    reasons: Sequence[str | None] | None = None,
    n_resamples: int,
    confidence: float,
    bootstrap_seed: int,
    note: str = "",
    proportion: bool = False,
    **keys: Any,
) -> dict[str, Any]:
    """A tidy row for a per-sample vector: its NaN-ignoring mean with an interval of one seed.

    ``value = mean_i v_i`` over the ``n`` non-missing samples, ``n`` the number of scored samples
    and ``n_missing`` the number of NaNs. The interval (docs/METHOD.md, section 6, "Intervals"):

    - real-valued scores: the percentile bootstrap over samples,
      :func:`~kmx_eval.metrics.bootstrap.bootstrap_ci` with ``n_resamples``, ``confidence`` and
      ``bootstrap_seed`` (the evaluate stage passes the training seed);
    - ``proportion=True``: the Wilson score interval
      ``wilson_interval(value * n, n, confidence)``, which does not collapse to [1, 1] when every
      value is 1. For 0/1 values (accuracy, agreement, decision agreement, PointingGame) this is the
      Wilson interval of a binomial proportion. For per-prototype shares ``k_j / m`` (purity@m) it
      is Wilson at ``n`` = the number of prototypes, which is conservative: the ``m`` neighbours
      of a prototype are one cluster, not ``m`` independent draws, so only the prototypes count.
      Values must lie in [0, 1].

    The note joins ``note`` with :func:`missing_note` of ``reasons`` (or ``"N missing"`` when no
    reasons are given). ``keys`` are the identifying columns passed to :func:`row`.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    missing = np.isnan(v)
    if proportion:
        present = v[~missing]
        if np.any((present < 0.0) | (present > 1.0)):
            raise ValueError("summary_row: a proportion needs values in [0, 1]")
        n = int(present.size)
        if n:
            mean = float(present.mean())
            low, high = wilson_interval(min(max(mean * n, 0.0), float(n)), n, confidence)
        else:
            mean = low = high = math.nan
    else:
        mean, low, high = bootstrap_ci(v, n_resamples=n_resamples, confidence=confidence,
                                       seed=bootstrap_seed)
    why = missing_note(reasons) if reasons is not None else ""
    if not why and missing.any():
        why = f"{int(missing.sum())} missing"
    if not np.isfinite(mean) and not why:
        why = "no samples"
    full_note = "; ".join(x for x in (note, why) if x)
    return row(value=mean, ci_low=low, ci_high=high, n=int((~missing).sum()),
               n_missing=int(missing.sum()), note=full_note, **keys)


def _frame(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], key: list[str]) -> pd.DataFrame:
    rows = list(rows)
    for r in rows:
        if set(r) != set(columns):
            extra, lacking = sorted(set(r) - set(columns)), sorted(set(columns) - set(r))
            raise ValueError(f"row has unexpected columns {extra} / lacks {lacking}")
    df = pd.DataFrame(rows, columns=list(columns))
    if df.empty:
        return df
    if df.duplicated(subset=key).any():
        dup = df[df.duplicated(subset=key, keep=False)].iloc[0]
        raise ValueError(f"two rows share the key {dict(dup[key])}")
    # mergesort is stable, so equal keys (none, checked above) could never reorder between runs
    return df.sort_values(key, kind="mergesort").reset_index(drop=True)


def frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows from :func:`row` as a DataFrame with :data:`TIDY_COLUMNS`, sorted by the key columns.

    Raises ``ValueError`` for a row with other columns or two rows with the same key
    (dataset, seed, combination, kind, method, category, metric).
    """
    df = _frame(rows, TIDY_COLUMNS, _TIDY_KEY)
    if not df.empty:
        df["note"] = df["note"].fillna("")
    return df


def sample_rows(
    values: np.ndarray,
    reasons: Sequence[str | None],
    samples: np.ndarray,
    **keys: Any,
) -> list[dict[str, Any]]:
    """Per-sample rows for ``samples.csv``; ``samples`` are positions in the test split."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not (len(v) == len(reasons) == len(samples)):
        raise ValueError(f"sample_rows: {len(v)} values, {len(reasons)} reasons and "
                         f"{len(samples)} sample indices must match")
    return [
        {**{k: keys[k] for k in ("dataset", "seed", "combination", "method", "metric")},
         "sample": int(s), "value": float(x), "reason": r or ""}
        for x, r, s in zip(v, reasons, samples)
    ]


def samples_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows from :func:`sample_rows` as a sorted DataFrame with :data:`SAMPLE_COLUMNS`."""
    return _frame(rows, SAMPLE_COLUMNS, _SAMPLE_KEY)


def curve_rows(fractions: np.ndarray, scores: np.ndarray, **keys: Any) -> list[dict[str, Any]]:
    """Rows of one curve for ``curves.csv`` (``fractions`` and ``scores`` of equal length)."""
    f = np.asarray(fractions, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if f.shape != s.shape:
        raise ValueError(f"curve_rows: {f.size} fractions but {s.size} scores")
    return [
        {**{k: keys[k] for k in ("dataset", "seed", "combination", "method")},
         "fraction": float(a), "score": float(b)}
        for a, b in zip(f, s)
    ]


def curves_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows from :func:`curve_rows` as a sorted DataFrame with :data:`CURVE_COLUMNS`."""
    return _frame(rows, CURVE_COLUMNS, _CURVE_KEY)
