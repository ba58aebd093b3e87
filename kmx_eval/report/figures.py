"""Figures of the report (matplotlib, Agg, no pyplot state), rendered byte-stable to PNG and SVG.

Each builder takes frames or arrays and returns a :class:`matplotlib.figure.Figure`; :func:`render`
turns it into PNG and SVG bytes with a fixed SVG hash salt and no date or software metadata, so
the same numbers give the same bytes on every run (DVC then sees no change where there is none).

- :func:`tradeoff_figure` (docs/METHOD.md, section 5): per dataset, each block combination is a point
  ``(accuracy of its k-means head, semantic fidelity of its margin map)`` with bootstrap intervals
  on both axes, beside the original CNN (linear head; CAM, Grad-CAM and the other post-hoc
  baselines at the CNN's accuracy). Fidelity is on the normalised scale ``(v - floor) / (ceiling -
  floor)`` of each map's own grid where the study has the grid floor and ceiling rows (raw values
  otherwise); floor and ceiling are bands, never points. The Pareto front joins the compared heads
  that no other compared head beats on both axes (controls never).
- :func:`kmx_eval.report.forest.forest_figure`: the paired comparisons as a forest plot.
- :func:`prototype_fidelity_figure`: linear prototypes ``w_c`` versus k-means prototypes ``p_ch``.
- the galleries (image, mask, concept and attribution maps; nearest training images of the
  prototypes) are in :mod:`kmx_eval.report.galleries`, drawn in the same :func:`style`.
- :func:`curves_figure`: pixel-flipping curves per explainer.
"""

from __future__ import annotations

import io as _io
import math
from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kmx_eval.metrics.tidy import PROTOTYPE_METRICS
from kmx_eval.paths import BASELINES
from kmx_eval.report.numbers import direction, fmt
from kmx_eval.report.stats import CONTROLS, first_row

#: Resolution of the PNG files (the HTML embeds the PNG).
DPI = 110
#: Fixed salt of the ids matplotlib writes into SVG files (otherwise random per run).
SVG_HASHSALT = "kmx-eval"
#: rc settings under which every figure is drawn and saved.
RC = {
    "svg.hashsalt": SVG_HASHSALT,
    "svg.fonttype": "path",  # glyphs as paths: no font needs to be present where the SVG is viewed
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs on every machine
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "image.interpolation": "nearest",
    "path.simplify": False,
}
#: The attribution map of k-means heads shown in the trade-off figure and the gallery.
TRADEOFF_EXPLAINER = "margin"
#: The prototype metrics drawn as bars: all but KMEx's scale-dependent diversity (docs/METHOD.md, section 4).
SCALE_FREE_PROTOTYPE_METRICS = tuple(m for m in PROTOTYPE_METRICS if m != "diversity_kmex")
#: Markers of the CNN's post-hoc baselines in the trade-off figure (others get "P").
BASELINE_MARKERS = {"cam": "s", "gradcam": "^", "integrated_gradients": "D", "saliency": "v",
                    "random": "X"}
#: Display names of explainers in legends and gallery titles.
EXPLAINER_LABELS = {"cam": "CAM (linear head)", "gradcam": "Grad-CAM", "integrated_gradients": "IG",
                    "saliency": "Saliency", "random": "random", "margin": "margin",
                    "margin_centred": "margin (centred)", "distance": "distance"}


def style():
    """Seaborn's white-grid style plus :data:`RC`, as one context for drawing and saving."""
    rc = dict(sns.axes_style("whitegrid"))
    rc.update(RC)
    return matplotlib.rc_context(rc)


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend switch, nothing to close."""
    with style():
        fig = Figure(figsize=(width, height), dpi=DPI, layout=None)
    FigureCanvasAgg(fig)
    return fig


def render(fig: Figure) -> dict[str, bytes]:
    """PNG and SVG bytes of ``fig``, byte-identical for identical content.

    PNG: no ``Software`` text chunk; SVG: fixed hash salt, no ``Date`` and no ``Creator``.
    """
    out = {}
    with style():
        for fmt_, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
            buf = _io.BytesIO()
            fig.savefig(buf, format=fmt_, dpi=DPI, metadata=meta, bbox_inches="tight", pad_inches=0.08,
                        facecolor="white")
            out[fmt_] = buf.getvalue()
    return out


def palette(names: Sequence[str]) -> dict[str, tuple]:
    """Colour-blind-safe colours for ``names`` in their given order (stable across figures)."""
    colours = sns.color_palette("colorblind", max(len(names), 1))
    return {n: tuple(colours[i % len(colours)]) for i, n in enumerate(names)}


def _label(method: str) -> str:
    return EXPLAINER_LABELS.get(method, method)


def _message(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True, color="0.35")


# --------------------------------------------------------------------------------- trade-off
def cnn_accuracy(agg: pd.DataFrame, dataset: str) -> pd.Series | None:
    """The aggregated accuracy row of the original CNN (its linear head) on ``dataset``."""
    for comb, method in ((BASELINES, "cnn"), (BASELINES, "linear")):
        row = first_row(agg, dataset=dataset, combination=comb, kind="head", method=method,
                    category="accuracy", metric="accuracy")
        if row is not None:
            return row
    return None


def _legend_entries(fig: Figure) -> tuple[list, list[str]]:
    """Legend handles and labels of all axes of ``fig``, each label once (for one figure legend)."""
    handles, labels = [], []
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    return handles, labels


#: Control maps (floors and ceilings): drawn as bands of the trade-off figure, never as its points nor on its
#: Pareto front (``stats.CONTROLS`` plus the grid floor and the ceilings of docs/METHOD.md, section 6).
CONTROL_MAPS = frozenset(CONTROLS) | {"random_grid", "ceiling", "ceiling_pixel"}
#: Maps that live on the input pixels: read against the pixel floor and the pixel ceiling.
PIXEL_MAPS = frozenset({"integrated_gradients", "saliency"})
#: (floor, ceiling) of the normalised scale ``(v - floor) / (ceiling - floor)``: the random map and the
#: true ceiling of the map's own grid (of the pixels for a pixel map).
NORMALISED_REFERENCES = {"grid": ("random_grid", "ceiling"), "pixel": ("random", "ceiling_pixel")}
#: (floor, ceiling) drawn as bands on the raw scale, where a study has no grid floor or ceiling rows.
RAW_REFERENCES = {"grid": ("random", "oracle"), "pixel": ("random", "oracle_pixel")}
#: Columns of :func:`tradeoff_points`.
TRADEOFF_COLUMNS = ["label", "group", "method", "combination", "x", "x_low", "x_high", "y", "y_low", "y_high",
                    "chance", "higher_is_better", "note", "floor", "floor_low", "floor_high", "ceiling",
                    "ceiling_low", "ceiling_high", "y_norm", "y_norm_low", "y_norm_high", "raw_floor",
                    "raw_floor_low", "raw_floor_high", "raw_ceiling", "raw_ceiling_low", "raw_ceiling_high"]


def _reference_values(agg: pd.DataFrame, *, dataset: str, combination: str, method: str, metric: str) -> dict:
    """``value, low, high`` of a control row of ``metric`` (NaN where the study has none)."""
    row = first_row(agg, dataset=dataset, combination=combination, method=method, metric=metric)
    if row is None or not math.isfinite(float(row["value"])):
        return dict(value=np.nan, low=np.nan, high=np.nan)
    return dict(value=float(row["value"]), low=float(row["ci_low"]), high=float(row["ci_high"]))


def normalise(value: float, floor: float, ceiling: float) -> float:
    """``(value - floor) / (ceiling - floor)``: 0 at the floor, 1 at the ceiling (whichever way the metric
    points: a lower-is-better metric has its ceiling below its floor); NaN without both or when they
    coincide (a grid on which the metric cannot tell the ceiling from chance)."""
    if not all(math.isfinite(float(v)) for v in (value, floor, ceiling)) or abs(ceiling - floor) <= 1e-12:
        return float("nan")
    return (float(value) - floor) / (ceiling - floor)


def _rooms(agg: pd.DataFrame, *, dataset: str, combination: str, method: str, metric: str) -> dict:
    """The point's floor and ceiling on both scales (NaN where absent) and its normalised value."""
    kind = "pixel" if method in PIXEL_MAPS else "grid"
    where = dict(dataset=dataset, combination=combination, metric=metric)
    out = {}
    for prefix, (floor_m, ceiling_m) in (("", NORMALISED_REFERENCES[kind]), ("raw_", RAW_REFERENCES[kind])):
        for name, m in (("floor", floor_m), ("ceiling", ceiling_m)):
            ref = _reference_values(agg, method=m, **where)
            out.update({f"{prefix}{name}": ref["value"], f"{prefix}{name}_low": ref["low"],
                        f"{prefix}{name}_high": ref["high"]})
    return out


def tradeoff_points(
    agg: pd.DataFrame,
    dataset: str,
    combinations: Sequence[str],
    *,
    fidelity_metric: str,
    explainer: str = TRADEOFF_EXPLAINER,
) -> pd.DataFrame:
    """Points of the trade-off figure from the aggregated frame.

    One row per block combination (``x`` = accuracy of its k-means head, ``y`` = ``fidelity_metric``
    of its ``explainer`` map) and one per explainer filed under the CNN (``x`` = the CNN's accuracy,
    ``y`` = that explainer's ``fidelity_metric``), control maps (:data:`CONTROL_MAPS`) left out: they
    are the floors and ceilings, not competitors. Each point carries the floor and ceiling of its own
    grid (:data:`NORMALISED_REFERENCES`: ``random_grid`` and ``ceiling``, the pixel ones for a pixel
    map) with ``y_norm = (y - floor) / (ceiling - floor)`` and its interval mapped the same way (the
    floor and ceiling taken at their values; NaN where the study has no such rows), and the raw
    floor and ceiling (:data:`RAW_REFERENCES`: ``random`` and ``oracle``) for the raw scale.

    Returns
    -------
    DataFrame
        :data:`TRADEOFF_COLUMNS`.
    """
    rows = []

    def add(label, group, method, comb, acc, fid):
        rooms = _rooms(agg, dataset=dataset, combination=comb, method=method, metric=fidelity_metric)
        y = fid["value"] if fid is not None else np.nan
        y_low = fid["ci_low"] if fid is not None else np.nan
        y_high = fid["ci_high"] if fid is not None else np.nan
        ends = [normalise(v, rooms["floor"], rooms["ceiling"]) for v in (y_low, y_high)]
        rows.append(dict(
            label=label, group=group, method=method, combination=comb,
            x=acc["value"] if acc is not None else np.nan,
            x_low=acc["ci_low"] if acc is not None else np.nan,
            x_high=acc["ci_high"] if acc is not None else np.nan,
            y=y, y_low=y_low, y_high=y_high,
            chance=fid["chance"] if fid is not None else np.nan,
            higher_is_better=direction(fid["higher_is_better"]) if fid is not None else None,
            note=(fid["note"] if fid is not None else f"no {fidelity_metric} row for {method}"),
            y_norm=normalise(y, rooms["floor"], rooms["ceiling"]),
            y_norm_low=min(ends) if all(map(math.isfinite, ends)) else np.nan,
            y_norm_high=max(ends) if all(map(math.isfinite, ends)) else np.nan,
            **rooms,
        ))

    for comb in combinations:
        acc = first_row(agg, dataset=dataset, combination=comb, kind="head", method="kmeans",
                    category="accuracy", metric="accuracy")
        fid = first_row(agg, dataset=dataset, combination=comb, kind="explainer", method=explainer,
                    metric=fidelity_metric)
        add(comb, "combination", explainer, comb, acc, fid)
    acc = cnn_accuracy(agg, dataset)
    base = agg[(agg["dataset"] == dataset) & (agg["combination"] == BASELINES)
               & (agg["kind"] == "explainer") & (agg["metric"] == fidelity_metric)
               & ~agg["method"].isin(list(CONTROL_MAPS))]
    for _, fid in base.iterrows():
        add(f"CNN + {_label(fid['method'])}", "baseline", fid["method"], BASELINES, acc, fid)
    return pd.DataFrame(rows, columns=TRADEOFF_COLUMNS)


def normalised_scale(points: pd.DataFrame) -> bool:
    """Draw on the normalised scale: every point with a value has its grid's floor and ceiling."""
    drawn = points[np.isfinite(points["x"].astype(float)) & np.isfinite(points["y"].astype(float))]
    return bool(len(drawn)) and bool(np.isfinite(drawn["y_norm"].astype(float)).all())


def tradeoff_front(points: pd.DataFrame, *, normalised: bool | None = None) -> pd.DataFrame:
    """The points on the Pareto front (:func:`pareto_front`), over the heads being compared only: the
    block combinations and the CNN's own explainers, never a control map (:data:`CONTROL_MAPS`), on
    the scale the figure draws (normalised: higher is nearer the ceiling, whatever the metric's
    direction)."""
    normalised = normalised_scale(points) if normalised is None else normalised
    compared = points[~points["method"].isin(list(CONTROL_MAPS))]
    y = compared["y_norm" if normalised else "y"].astype(float)
    hib = [d for d in compared["higher_is_better"] if d is not None]
    higher = True if normalised or not hib else hib[0]
    ok = np.isfinite(compared["x"].astype(float)) & np.isfinite(y)
    front = pareto_front(compared["x"][ok], y[ok], higher)
    return compared[ok][front].sort_values("x")


def pareto_front(x: np.ndarray, y: np.ndarray, higher_y: bool = True) -> np.ndarray:
    """Boolean mask of the points no other point dominates (higher ``x`` and better ``y``).

    Point i is dominated when some j has ``x_j >= x_i`` and ``y_j >= y_i`` (``<=`` when lower ``y``
    is better) with at least one strict inequality. Points with a NaN coordinate are never on it.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float) if higher_y else -np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    front = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        front[i] = not dominated.any()
    return front


def _bands(ax, points: pd.DataFrame, *, normalised: bool) -> None:
    """Floor and ceiling as horizontal bands: on the normalised scale each point's floor interval mapped
    around 0 and its ceiling's around 1 (and the room below the floor shaded); on the raw scale the span
    of the models' floor (random map) and ceiling (oracle) intervals."""
    floor_span, ceiling_span = [], []
    for _, p in points.iterrows():
        if normalised:
            f, c = p["floor"], p["ceiling"]
            floor_span += [normalise(p["floor_low"], f, c), normalise(p["floor_high"], f, c), 0.0]
            ceiling_span += [normalise(p["ceiling_low"], f, c), normalise(p["ceiling_high"], f, c), 1.0]
        else:
            floor_span += [p["raw_floor"], p["raw_floor_low"], p["raw_floor_high"]]
            ceiling_span += [p["raw_ceiling"], p["raw_ceiling_low"], p["raw_ceiling_high"]]
    for span, colour, name in ((floor_span, "#d9534f", "floor"), (ceiling_span, "#2e7d32", "ceiling")):
        span = [float(v) for v in span if math.isfinite(float(v))]
        if not span:
            continue
        lo, hi = min(span), max(span)
        what = ("random map on the map's grid" if name == "floor" else "best map of the grid") if normalised \
            else ("random map" if name == "floor" else "oracle")
        ax.axhspan(lo, hi if hi > lo else lo + 1e-3 * max(abs(lo), 1.0), color=colour, alpha=0.18, lw=0, zorder=1,
                   label=f"{name}: {what} ({fmt(lo)} to {fmt(hi)})")


def tradeoff_figure(points: pd.DataFrame, dataset: str, *, fidelity_metric: str,
                    explainer: str = TRADEOFF_EXPLAINER) -> Figure:
    """The trade-off figure of one dataset (see module docstring); see :func:`tradeoff_points`.

    On the normalised scale (:func:`normalised_scale`) each point is placed between the floor (0) and
    ceiling (1) of its own grid, so maps of different resolutions compare; without the grid floor and
    ceiling rows the raw values are drawn with the random map and the oracle as bands. Controls are
    bands, never points; the Pareto front joins the compared heads only (:func:`tradeoff_front`).
    """
    fig = new_figure(6.4, 4.2)
    normalised = normalised_scale(points)
    ycol = "y_norm" if normalised else "y"
    with style():
        ax = fig.add_subplot(1, 1, 1)
        combos = points[points["group"] == "combination"]
        colours = palette(list(combos["label"]))
        finite = points[np.isfinite(points["x"].astype(float)) & np.isfinite(points[ycol].astype(float))]
        if not finite.empty:
            _bands(ax, finite, normalised=normalised)
        for _, p in finite.iterrows():
            is_combo = p["group"] == "combination"
            xerr = _err(p["x"], p["x_low"], p["x_high"])
            yerr = _err(p[ycol], p[f"{ycol}_low"], p[f"{ycol}_high"])
            colour = colours[p["label"]] if is_combo else "0.3"
            marker = "o" if is_combo else BASELINE_MARKERS.get(p["method"], "P")
            label = f"{p['label']} (k-means, {_label(explainer)})" if is_combo else p["label"]
            ax.errorbar([p["x"]], [p[ycol]], xerr=xerr, yerr=yerr, fmt=marker, color=colour,
                        markersize=8 if is_combo else 7, capsize=3, elinewidth=1, label=label,
                        markeredgecolor="black" if is_combo else "white", zorder=3)
            if is_combo:
                ax.annotate(p["label"], (p["x"], p[ycol]), xytext=(6, 6), textcoords="offset points",
                            fontsize=9, fontweight="bold", color=colour)
        hib = [d for d in points["higher_is_better"] if d is not None]
        higher = hib[0] if hib else True
        front = tradeoff_front(points, normalised=normalised)
        if len(front):
            ax.plot(front["x"], front[ycol], "--", color="0.55", lw=1.2, zorder=2, label="Pareto front (compared heads)")
        if finite.empty:
            _accuracies_only(ax, points, colours, fidelity_metric=fidelity_metric, dataset=dataset)
        ax.set_xlabel("test accuracy (k-means head; CNN for its baselines)")
        if normalised:
            ax.set_ylabel(f"{fidelity_metric}, (value - floor) / (ceiling - floor)\non each map's own grid")
        else:
            ax.set_ylabel(f"{fidelity_metric} {'(higher is better)' if higher else '(lower is better)'}")
        ax.set_title(f"{dataset}: semantic fidelity versus accuracy")
        if not finite.empty:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def _accuracies_only(ax, points: pd.DataFrame, colours: dict, *, fidelity_metric: str, dataset: str) -> None:
    """Without fidelity values (e.g. no masks) the accuracies are still worth showing: one vertical
    line per combination and the CNN, and a note saying why no point is drawn."""
    notes = sorted({n for n in points["note"] if isinstance(n, str) and n})
    accs = points[np.isfinite(points["x"])]
    shown: list[str] = []
    for _, p in accs.iterrows():
        name = p["label"] if p["group"] == "combination" else "CNN"
        if name in shown:
            continue
        shown.append(name)
        colour = colours.get(p["label"], "0.3")
        ax.axvline(p["x"], color=colour, lw=1.5)
        # Staggered labels: accuracies are often within a point of each other.
        ax.text(p["x"], 0.96 - 0.07 * (len(shown) - 1), f" {name} ({fmt(p['x'])})", color=colour,
                va="top", ha="left", transform=ax.get_xaxis_transform(), fontsize=8,
                fontweight="bold", bbox=dict(facecolor="white", edgecolor="none", pad=1.0))
    if len(accs):
        lo, hi = float(accs["x"].min()), float(accs["x"].max())
        pad = max(hi - lo, 0.02)
        ax.set_xlim(lo - pad, hi + pad)
    ax.set_yticks([])
    ax.text(0.02, 0.35, f"{fidelity_metric} not available on {dataset}"
            + (f":\n{notes[0]}" if notes else "") + "\n(vertical lines: accuracies)",
            transform=ax.transAxes, va="center", ha="left", color="0.35", fontsize=8,
            bbox=dict(facecolor="white", edgecolor="0.8", boxstyle="round,pad=0.4"))


def _err(v, low, high):
    """Asymmetric error bar [[v-low], [high-v]] or None without an interval."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return None
    return np.array([[max(v - low, 0.0)], [max(high - v, 0.0)]])


# ------------------------------------------------------------------------ prototype fidelity
def prototype_fidelity_figure(agg: pd.DataFrame, dataset: str, combinations: Sequence[str], *,
                              metrics: Sequence[str] = SCALE_FREE_PROTOTYPE_METRICS) -> Figure:
    """Bars of each prototype-fidelity metric: linear versus k-means prototypes per combination.

    One panel per metric (scales differ); bar height is the aggregated value, whiskers the
    interval; a dotted line marks the chance level where the metric has one (purity). The bars set
    heads in different spaces side by side, so KMEx's scale-dependent ``diversity_kmex`` is not
    drawn (docs/METHOD.md, section 4); the prototype table has it.
    """
    sel = agg[(agg["dataset"] == dataset) & (agg["category"] == "prototype_fidelity")
              & (agg["metric"] != "diversity_kmex")]
    present = [m for m in metrics if m in set(sel["metric"])]
    present += [m for m in dict.fromkeys(sel["metric"]) if m not in present]
    n = max(len(present), 1)
    fig = new_figure(2.3 * n + 0.8, 2.9)
    with style():
        if not present:
            _message(fig.add_subplot(1, 1, 1), f"no prototype-fidelity rows for {dataset}")
            return fig
        first = ("kmeans", "kmeans_kmex", "class_means", "linear_canonical", "linear", "probe_canonical", "probe")
        methods = [m for m in first if m in set(sel["method"])]
        methods += [m for m in dict.fromkeys(sel["method"]) if m not in methods]
        colours = palette(list(first) + [m for m in methods if m not in first])
        combos = [c for c in combinations if c in set(sel["combination"])]
        combos += [c for c in dict.fromkeys(sel["combination"]) if c not in combos]
        width = 0.8 / max(len(methods), 1)
        for k, metric in enumerate(present):
            ax = fig.add_subplot(1, n, k + 1)
            rows = sel[sel["metric"] == metric]
            labelled: set[str] = set()
            for j, method in enumerate(methods):
                for i, comb in enumerate(combos):
                    r = rows[(rows["method"] == method) & (rows["combination"] == comb)]
                    if r.empty or not math.isfinite(r["value"].iloc[0]):
                        continue
                    r = r.iloc[0]
                    xpos = i + (j - (len(methods) - 1) / 2) * width
                    ax.bar([xpos], [r["value"]], width=width * 0.95, color=colours[method],
                           yerr=_err(r["value"], r["ci_low"], r["ci_high"]), capsize=2,
                           label=None if method in labelled else method)
                    labelled.add(method)
            chance = rows["chance"][np.isfinite(rows["chance"])]
            if len(chance):
                ax.axhline(float(chance.mean()), ls=":", color="0.4", lw=1)
            hib = {direction(d) for d in rows["higher_is_better"]} - {None}
            arrow = " (↑)" if hib == {True} else " (↓)" if hib == {False} else ""
            ax.set_title(metric + arrow)
            ax.set_xticks(range(len(combos)))
            ax.set_xticklabels(combos, rotation=0)
        handles, labels = _legend_entries(fig)
        fig.legend(handles, [f"{lab} prototypes" for lab in labels], loc="upper center",
                   ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, 1.08))
        fig.suptitle(f"{dataset}: prototype fidelity", y=1.14)
        fig.subplots_adjust(wspace=0.45)
    return fig


# ---------------------------------------------------------------------------------- curves
def curves_figure(curves: pd.DataFrame, dataset: str, combinations: Sequence[str], *,
                  explainers: Sequence[str] | None = None) -> Figure:
    """Pixel-flipping curves: score against the fraction of flipped pixels, one panel per combination.

    Each line is an explainer's curve averaged over seeds (each seed's curve is already the mean
    over evaluation images); the band spans the per-seed curves when there are several seeds.
    A faithful map makes the score drop fast (small area under the curve). Panels do not share
    the y axis: a k-means head's score ``-min_h ||z - p_ch||^2`` and the CNN's logit differ in scale.
    """
    sel = curves[curves["dataset"] == dataset]
    combos = [c for c in combinations if c in set(sel["combination"])]
    combos += [c for c in dict.fromkeys(sel["combination"]) if c not in combos]
    methods = list(explainers or [])
    methods = [m for m in methods if m in set(sel["method"])] + \
        sorted(m for m in set(sel["method"]) if m not in methods)
    colours = palette(methods)
    n = max(len(combos), 1)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig = new_figure(2.9 * ncols + 1.6, 2.5 * nrows + 0.3)
    with style():
        if not combos:
            _message(fig.add_subplot(1, 1, 1), f"no pixel-flipping curves for {dataset}")
            return fig
        for k, comb in enumerate(combos):
            # No shared y axis: k-means scores (-||z - p||^2) and CNN logits live on different scales.
            ax = fig.add_subplot(nrows, ncols, k + 1)
            rows = sel[sel["combination"] == comb]
            for method in methods:
                r = rows[rows["method"] == method]
                if r.empty:
                    continue
                g = r.groupby("fraction", sort=True)["score"]
                mean, low, high = g.mean(), g.min(), g.max()
                ax.plot(mean.index, mean.to_numpy(), color=colours[method], lw=1.4, label=_label(method))
                if r["seed"].nunique() > 1:
                    ax.fill_between(mean.index, low.to_numpy(), high.to_numpy(), color=colours[method],
                                    alpha=0.15, lw=0)
            ax.set_title(comb if comb != BASELINES else "CNN (baselines)")
            ax.set_xlabel("fraction of pixels flipped")
            if k % ncols == 0:
                ax.set_ylabel("score of the explained class")
        handles, labels = _legend_entries(fig)
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.91, 0.5), frameon=False)
        fig.subplots_adjust(wspace=0.4, hspace=0.5, top=0.82 if nrows == 1 else 0.9, right=0.9)
        fig.suptitle(f"{dataset}: pixel-flipping curves", y=0.99)
    return fig
