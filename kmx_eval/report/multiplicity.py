"""Multiplicity control over the table of paired comparisons (docs/METHOD.md, section 6, "Multiplicity").

The comparisons table holds hundreds of paired differences (every explainer and metric, every pair of
combinations, every dataset). At 95% one in twenty of those whose true difference is 0 would still show
an interval that excludes 0, so a verdict read off the table row by row ("B234 localises better") is
not a 95% verdict. The report therefore separates

- the **primary endpoints** (:func:`primary_endpoints`: ``params.report.primary``'s localisation
  metric, which is the headline's ``fidelity_metric``, and faithfulness metric when declared, of the
  headline's map, and the k-means head's accuracy): each is one pre-declared claim, decided on its own
  unadjusted interval (it excludes 0), and
- **every other row** (secondary): its two-sided bootstrap p-value
  (:func:`kmx_eval.metrics.bootstrap.bootstrap_p_value`) is adjusted by **Benjamini-Hochberg**
  over all secondary rows of the table (all datasets together: ``scipy.stats.false_discovery_control``,
  ``method="bh"``), controlling the expected share of false "differs" verdicts among those declared at
  ``q = 1 - confidence``. A row differs when its adjusted p-value is below ``q`` *and* its interval
  excludes 0 (the interval and the p-value come from the same resamples, so the second condition only
  guards the edge where interpolation of the percentile and the +1 of the p-value disagree); otherwise
  it is *within the noise*.

Why BH and not Holm: a bootstrap p-value is never below ``2 / (B + 1)`` (0.002 at ``B = 1000``), while
Holm's smallest threshold is ``q / m`` (7e-5 for ``m = 680`` rows): under Holm no row of a large table
could ever differ, however large its effect. BH's threshold for the k-th smallest p-value,
``k q / m``, lets a real effect through once enough rows carry one. BH assumes independent or
positively dependent p-values; the rows share images and seeds, which makes them positively dependent
for the most part (the same hard image moves every metric the same way).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

from kmx_eval.report.numbers import finite

#: The method named in the table's caption and in docs/METHOD.md.
METHOD = "Benjamini-Hochberg"
#: Columns :func:`adjust` adds to a comparisons frame.
ADDED_COLUMNS = ["primary", "p_adjusted", "differs"]


def excludes_zero(low: float, high: float) -> bool:
    """The interval ``[low, high]`` lies strictly on one side of 0 (False without a finite interval)."""
    return bool(finite(low) and finite(high) and (low > 0 or high < 0))


def adjust(comparisons: pd.DataFrame, *, primary: Iterable[tuple[str, str]] = (), confidence: float = 0.95
           ) -> pd.DataFrame:
    """The comparisons frame with ``primary``, ``p_adjusted`` and ``differs`` (module docstring).

    Parameters
    ----------
    comparisons : DataFrame
        :func:`kmx_eval.report.stats.paired_comparisons` (columns ``method, metric, ci_low, ci_high,
        p_value`` among others).
    primary : iterable of (method, metric)
        The primary endpoints: rows of these (on every dataset and pair) keep their unadjusted p-value
        and are decided by their interval alone.
    confidence : float
        Of the intervals; the false discovery rate is ``q = 1 - confidence``.

    Returns
    -------
    DataFrame
        A copy with ``primary`` (bool), ``p_adjusted`` (BH over the secondary rows with a finite p-value;
        the unadjusted p-value on primary rows; NaN without one) and ``differs`` (bool), in the same
        row order.
    """
    out = comparisons.copy()
    endpoints = {(str(m), str(k)) for m, k in primary}
    out["primary"] = [(str(m), str(k)) in endpoints for m, k in zip(out["method"], out["metric"])]
    p = pd.to_numeric(out["p_value"], errors="coerce").to_numpy(dtype=float)
    adjusted = np.full(len(out), np.nan)
    secondary = ~out["primary"].to_numpy(dtype=bool) & np.isfinite(p)
    if secondary.any():
        adjusted[secondary] = false_discovery_control(p[secondary], method="bh")
    on_primary = out["primary"].to_numpy(dtype=bool)
    adjusted[on_primary] = p[on_primary]
    out["p_adjusted"] = adjusted
    q = 1.0 - float(confidence)
    interval = [excludes_zero(lo, hi) for lo, hi in zip(out["ci_low"], out["ci_high"])]
    out["differs"] = [bool(iv and (prim or (np.isfinite(pa) and pa < q)))
                      for iv, prim, pa in zip(interval, out["primary"], adjusted)]
    return out


def family_size(comparisons: pd.DataFrame) -> int:
    """Number of rows adjusted together (secondary rows with a finite p-value) in :func:`adjust`'s output."""
    if "primary" not in comparisons or not len(comparisons):
        return 0
    p = pd.to_numeric(comparisons["p_value"], errors="coerce").to_numpy(dtype=float)
    return int((~comparisons["primary"].to_numpy(dtype=bool) & np.isfinite(p)).sum())


def primary_endpoints(*, explainer: str, fidelity_metric: str, faithfulness: str | None = None,
                      declared=None) -> list[tuple[str, str]]:
    """The primary endpoints as ``(method, metric)`` pairs, one per claim of the headline
    (docs/METHOD.md, section 6, "Multiplicity"): ``declared`` when the caller already listed them, else
    the localisation claim's ``fidelity_metric`` (``params.report.primary.localisation``, which equals
    ``report.fidelity_metric``) of the ``explainer`` map, the accuracy claim's k-means head accuracy,
    and, when declared, the faithfulness claim's ``faithfulness`` metric
    (``params.report.primary.faithfulness``) of the same map."""
    if declared:
        return [tuple(e) for e in declared]
    out = [(explainer, fidelity_metric), ("kmeans", "accuracy")]
    if faithfulness:
        out.append((explainer, faithfulness))
    return out
