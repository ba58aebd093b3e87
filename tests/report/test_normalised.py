"""Localisation values between the floor and the ceiling of each map's own grid (kmx_eval/report/normalised.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kmx_eval.report import tables
from kmx_eval.report.normalised import NORMALISED, normalised_localisation


def _agg(rows) -> pd.DataFrame:
    out = []
    for combination, method, value in rows:
        out.append({"dataset": "d", "combination": combination, "kind": "explainer", "method": method,
                    "category": "localisation", "metric": "RelevanceMassAccuracy", "value": value,
                    "ci_low": value - 0.01, "ci_high": value + 0.01, "chance": 0.4, "seed_sd": 0.02,
                    "n_seeds": 3, "n": 48, "n_missing": 0, "higher_is_better": True, "note": "",
                    "interval": "cluster bootstrap"})
    return pd.DataFrame(out)


AGG = _agg([("B4", "margin", 0.5), ("B4", "random_grid", 0.3), ("B4", "ceiling", 0.9), ("B4", "random", 0.4),
            ("cnn", "cam", 0.6), ("cnn", "integrated_gradients", 0.7), ("cnn", "random_grid", 0.35),
            ("cnn", "ceiling", 0.85), ("cnn", "random", 0.4), ("cnn", "ceiling_pixel", 1.0),
            ("B34", "margin", 0.6), ("B34", "random", 0.4)])  # B34: a study without random_grid or ceiling


def test_each_map_is_read_against_the_floor_and_ceiling_of_its_own_grid():
    out = normalised_localisation(AGG).set_index(["combination", "method"])
    assert set(out["category"]) == {NORMALISED}
    assert out.loc[("B4", "margin"), "value"] == pytest.approx((0.5 - 0.3) / (0.9 - 0.3))
    assert out.loc[("cnn", "cam"), "value"] == pytest.approx((0.6 - 0.35) / (0.85 - 0.35))
    # Integrated Gradients is a pixel map: the pixel floor and the pixel ceiling
    assert out.loc[("cnn", "integrated_gradients"), "value"] == pytest.approx((0.7 - 0.4) / (1.0 - 0.4))
    assert out.loc[("cnn", "integrated_gradients"), "floor"] == 0.4
    # the references themselves sit at 0 and 1
    assert out.loc[("B4", "random_grid"), "value"] == 0 and out.loc[("B4", "ceiling"), "value"] == 1
    # the interval is mapped through the same affine change: it still holds the value
    r = out.loc[("B4", "margin")]
    assert r["ci_low"] < r["value"] < r["ci_high"] and r["seed_sd"] == pytest.approx(0.02 / 0.6)
    # no floor or ceiling on the grid: no normalised row (never a number against another grid's references)
    assert "B34" not in out.index.get_level_values("combination")


def test_report_tables_hold_the_normalised_table():
    by_name = {t.name: t for t in tables.report_tables(AGG, datasets=["d"], combinations=["B4", "B34", "cnn"],
                                                       explainers=["margin", "cam", "integrated_gradients"])}
    t = by_name["localisation_normalised"]
    assert "floor" in t.caption and "ceiling" in t.caption
    values = t.numbers.set_index(["combination", "method"])["value"]
    assert np.isclose(values.loc[("B4", "margin")], 1 / 3)
