"""The paired comparisons as a forest plot (docs/METHOD.md, section 5): one row per metric, its difference
B − A with its interval, grouped by category, before the full comparisons table.

A forest plot puts every paired difference on a line through 0, so the reader sees at a glance which
intervals exclude 0 and on which side, where a table of a hundred rows hides it. Metrics have their own
units (an accuracy, a mass share, a correlation), so each row is drawn on its own scale: the difference
and its interval divided by the largest absolute end of that metric's intervals (over the compared
pairs), and turned so that right means B is better (a lower-is-better metric is mirrored; a metric
without a direction keeps the sign of B − A). The axis shows only the side of 0 and the relative width;
the numbers, in the metric's units, are printed on the right of every row. A filled marker is a declared
difference (the adjusted decision of :mod:`kmx_eval.report.multiplicity`), a hollow one is within the
noise; a metric that fails its control on the dataset (e.g. cannot tell the ceiling from the random map)
is drawn grey and says so.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from kmx_eval.report.figures import new_figure, style
from kmx_eval.report.numbers import direction, finite, fmt

#: Order of the categories in the plot (others follow in order of appearance).
CATEGORY_ORDER = ("accuracy", "agreement", "localisation", "faithfulness", "complexity", "randomisation",
                  "robustness", "sharpness", "concept_fidelity")
#: Columns of :func:`forest_rows`.
FOREST_COLUMNS = ["category", "method", "metric", "comparison", "label", "difference", "ci_low", "ci_high",
                  "higher_is_better", "differs", "primary", "failed_control", "scaled", "scaled_low", "scaled_high"]
#: Colours: a metric that passes its control, one that fails it (greyed).
INK, GREY = "#1d3557", "0.68"


def _categories(agg: pd.DataFrame, dataset: str) -> dict[tuple[str, str], tuple[str, bool | None]]:
    """``{(method, metric): (category, higher_is_better)}`` of ``dataset`` from the aggregated frame."""
    sel = agg[agg["dataset"] == dataset]
    out: dict = {}
    for r in sel.itertuples(index=False):
        out.setdefault((r.method, r.metric), (r.category, direction(r.higher_is_better)))
        out.setdefault(("*", r.metric), (r.category, direction(r.higher_is_better)))
    return out


def forest_rows(comparisons: pd.DataFrame, agg: pd.DataFrame, dataset: str, *, methods: Sequence[str],
                failed: Mapping[str, set[str]] | None = None) -> pd.DataFrame:
    """One row per compared pair, method and metric of ``dataset`` (``methods`` only), in plot order.

    Parameters
    ----------
    comparisons : DataFrame
        :func:`kmx_eval.report.multiplicity.adjust` of the paired comparisons (``differs`` and
        ``primary`` columns; without them the interval alone decides and nothing is primary).
    agg : DataFrame
        The aggregated frame, for each metric's category and direction.
    methods : sequence of str
        The maps and heads shown (the report's explainer, the k-means head, the probe).
    failed : mapping dataset -> set of metrics, optional
        Metrics that fail their control on the dataset: kept, flagged ``failed_control`` and greyed.

    Returns
    -------
    DataFrame
        :data:`FOREST_COLUMNS`; ``scaled*`` is the oriented difference over the metric's largest
        absolute interval end (module docstring), in [-1, 1].
    """
    failed_here = set((failed or {}).get(dataset, set()))
    sel = comparisons[(comparisons["dataset"] == dataset) & comparisons["method"].isin(list(methods))]
    info = _categories(agg, dataset)
    rows = []
    for r in sel.to_dict("records"):
        category, hib = info.get((r["method"], r["metric"]), info.get(("*", r["metric"]), ("other", None)))
        low, high = float(r["ci_low"]), float(r["ci_high"])
        interval = finite(low) and finite(high)
        differs = bool(r["differs"]) if "differs" in r else bool(interval and (low > 0 or high < 0))
        head = r["method"] != methods[0] if methods else False
        rows.append(dict(category=category, method=r["method"], metric=r["metric"],
                         comparison=f"{r['b']} − {r['a']}", label=f"{r['metric']} ({r['method']})" if head
                         else r["metric"], difference=float(r["difference"]), ci_low=low, ci_high=high,
                         higher_is_better=hib, differs=differs, primary=bool(r.get("primary", False)),
                         failed_control=r["metric"] in failed_here))
    out = pd.DataFrame(rows, columns=FOREST_COLUMNS[:-3])
    out = _scaled(out)
    order = {c: i for i, c in enumerate(CATEGORY_ORDER)}
    out["_c"] = [order.get(c, len(order)) for c in out["category"]]
    out["_m"] = range(len(out))
    return out.sort_values(["_c", "_m"], kind="stable").drop(columns=["_c", "_m"]).reset_index(drop=True)


def _scaled(rows: pd.DataFrame) -> pd.DataFrame:
    """Add ``scaled, scaled_low, scaled_high``: oriented (right = B better) and divided by the largest
    absolute interval end of the same method and metric (NaN without a finite one)."""
    rows = rows.copy()
    sign = np.array([-1.0 if h is False else 1.0 for h in rows["higher_is_better"]])
    d, lo, hi = (rows[c].to_numpy(dtype=float) * sign for c in ("difference", "ci_low", "ci_high"))
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    extent = pd.Series(np.nanmax(np.abs(np.vstack([d, lo, hi])), axis=0) if len(rows) else [], index=rows.index)
    scale = extent.groupby([rows["method"], rows["metric"]]).transform("max").to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(scale > 0, scale, 1.0)  # all-zero intervals sit at 0; NaN stays NaN
        rows["scaled"], rows["scaled_low"], rows["scaled_high"] = d / scale, lo / scale, hi / scale
    return rows


def forest_figure(rows: pd.DataFrame, dataset: str):
    """The forest plot of :func:`forest_rows` (module docstring)."""
    pairs = list(dict.fromkeys(rows["comparison"]))
    lines = _layout(rows, several_pairs=len(pairs) > 1)
    fig = new_figure(7.6, 0.9 + 0.24 * max(len(lines), 3))
    with style():
        ax = fig.add_subplot(1, 1, 1)
        if rows.empty:
            ax.text(0.5, 0.5, f"no paired comparisons on {dataset}", ha="center", va="center",
                    transform=ax.transAxes, color="0.35")
            ax.set_axis_off()
            return fig
        n = len(lines)
        ax.axvline(0.0, color="0.4", lw=1, zorder=1)
        labels = []
        for y, (kind, item) in zip(range(n - 1, -1, -1), lines):
            if kind == "header":
                labels.append(item)
                ax.axhline(y, color="0.88", lw=6, zorder=0)
                continue
            r = item
            colour = GREY if r["failed_control"] else INK
            if finite(r["scaled_low"]) and finite(r["scaled_high"]):
                ax.plot([r["scaled_low"], r["scaled_high"]], [y, y], color=colour, lw=1.6, zorder=2)
            if finite(r["scaled"]):
                ax.plot([r["scaled"]], [y], marker="D" if r["primary"] else "o", ms=6, zorder=3, color=colour,
                        markerfacecolor=colour if r["differs"] else "white", markeredgecolor=colour)
            name = r["label"] + (f"  {r['comparison']}" if len(pairs) > 1 else "")
            labels.append(name + ("  (fails its control)" if r["failed_control"] else ""))
            arrow = " (lower is better)" if r["higher_is_better"] is False else ""
            ax.text(1.02, y, f"{fmt(r['difference'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]{arrow}",
                    transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=7.5, color=colour)
        ax.set_yticks(range(n - 1, -1, -1), labels)
        for tick, (kind, item) in zip(ax.get_yticklabels(), lines):
            if kind == "header":
                tick.set_fontweight("bold")
            elif item["failed_control"]:
                tick.set_color(GREY)
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlim(-1.08, 1.08)
        ax.set_xticks([-1, 0, 1], ["A better", "0", "B better"])
        ax.grid(axis="y", visible=False)
        title = pairs[0] if len(pairs) == 1 else ", ".join(pairs)
        ax.set_title(f"{dataset}: paired differences {title}\n(each row on its own scale, its numbers at the "
                     "right; filled: declared, hollow: within the noise; diamond: primary endpoint)", fontsize=8)
    return fig


def _layout(rows: pd.DataFrame, *, several_pairs: bool) -> list[tuple[str, object]]:
    """Lines of the plot from top to bottom: a header per category, then its rows (metric, then pair)."""
    lines: list[tuple[str, object]] = []
    for category, group in rows.groupby("category", sort=False):
        lines.append(("header", str(category)))
        keys = ["metric", "method", "comparison"] if several_pairs else ["metric", "method"]
        order = {k: i for i, k in enumerate(dict.fromkeys(zip(group["method"], group["metric"])))}
        group = group.assign(_o=[order[(m, k)] for m, k in zip(group["method"], group["metric"])])
        lines += [("row", r) for r in group.sort_values(["_o"] + keys[2:], kind="stable").to_dict("records")]
    return lines
