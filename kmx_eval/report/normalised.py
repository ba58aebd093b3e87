"""Every localisation value between its floor and ceiling on the map's own grid (docs/METHOD.md, section 6).

From the aggregated frame (:func:`~kmx_eval.report.stats.aggregate_seeds`), each localisation row of
an explained model becomes ``(v - f) / (c - f)`` (:func:`kmx_eval.metrics.room.normalised`) with
``f``, ``c`` the floor and ceiling rows of the same dataset, model and metric that the map is read
against (:func:`kmx_eval.metrics.room.references_of`: ``random_grid`` and ``ceiling`` for maps on a
feature grid, ``random`` and ``ceiling_pixel`` for pixel-level maps). 0 is the floor and 1 the
ceiling whatever the grid, so maps of different resolutions are compared on this scale only. The
interval is the value's mapped through the same affine change (floor and ceiling at their means);
rows whose floor or ceiling is missing (a study run without ``random_grid``, a dataset without
masks) are left out.
"""

from __future__ import annotations

import pandas as pd

from kmx_eval.metrics.room import normalised, references_of

#: The ``category`` of the normalised rows (a table of their own).
NORMALISED = "localisation_normalised"


def normalised_localisation(agg: pd.DataFrame, kind: str = "explainer") -> pd.DataFrame:
    """Rows of ``agg`` (localisation, kind ``kind``: ``explainer`` for the masks' metrics, ``keypoints``
    for the pointing game at part locations) as ``(v - floor) / (ceiling - floor)`` on their own grid,
    category :data:`NORMALISED`; ``value``, ``ci_low``, ``ci_high``, ``chance`` and ``seed_sd``
    mapped; ``floor`` and ``ceiling`` columns hold the references' raw values."""
    loc = agg[(agg["kind"] == kind) & (agg["category"] == "localisation")]
    values = loc.set_index(["dataset", "combination", "method", "metric"])["value"]
    values = values[~values.index.duplicated()]
    rows = []
    for _, r in loc.iterrows():
        floor_m, ceiling_m = references_of(r["method"])
        f = values.get((r["dataset"], r["combination"], floor_m, r["metric"]))
        c = values.get((r["dataset"], r["combination"], ceiling_m, r["metric"]))
        if f is None or c is None or not pd.notna(f) or not pd.notna(c):
            continue
        out = r.copy()
        out["category"] = NORMALISED
        for col in ("value", "ci_low", "ci_high", "chance"):
            out[col] = normalised(r[col], f, c) if pd.notna(r[col]) else float("nan")
        out["seed_sd"] = r["seed_sd"] / (c - f) if c > f and pd.notna(r["seed_sd"]) else float("nan")
        out["floor"], out["ceiling"] = f, c
        out["note"] = (f"(value - {floor_m}) / ({ceiling_m} - {floor_m}) on the map's own grid; "
                       f"floor {f:.4g}, ceiling {c:.4g}")
        rows.append(out)
    return pd.DataFrame(rows, columns=list(agg.columns) + ["floor", "ceiling"])
