"""The room a headline number lives in: its floor, its ceiling, and whether the map is above the floor
(docs/METHOD.md, section 6, "Headlines that check the room").

A headline value ``v`` of a map is read between two control maps of the same model, images and
metric: the *floor*, a random map (``random_grid``, the random map of the map's own grid, where the
study has it; else ``random``, the pixel random map, named "pixel floor"), and the *ceiling*
(``ceiling``, the metric's maximum on that grid, where the study has it; else, for a localisation
metric, ``oracle``, the mask on the grid, named "oracle"; a faithfulness value has no oracle). Pixel-level maps (Integrated Gradients, saliency) are read against the
pixel controls (``random``; ``ceiling_pixel`` else ``oracle_pixel``). The map is *above the floor*
when the paired interval of ``v_i - floor_i`` over the same images (seeds, then images, resampled:
:func:`~kmx_eval.report.stats.paired_difference`) excludes 0 on the better side; otherwise the
headline says "at chance" and names no winner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kmx_eval.report.numbers import finite, fmt
from kmx_eval.report.stats import first_row, paired_difference

#: Floors and ceilings in the order they are looked up, with the words a sentence uses for them.
GRID_FLOORS = (("random_grid", "grid floor"), ("random", "pixel floor"))
GRID_CEILINGS = (("ceiling", "ceiling"), ("oracle", "oracle"))
PIXEL_FLOORS = (("random", "pixel floor"),)
PIXEL_CEILINGS = (("ceiling_pixel", "pixel ceiling"), ("oracle_pixel", "pixel oracle"))
#: Maps that live on the input pixels rather than on a feature grid.
PIXEL_MAPS = frozenset({"integrated_gradients", "saliency"})


@dataclass(frozen=True)
class Room:
    """A map's value between its floor and ceiling, and its paired difference to the floor.

    ``floor_word``/``ceiling_word``: what the sentence calls them ("grid floor", "pixel floor",
    "ceiling", "oracle"); NaN numbers where a control is missing. ``difference``, ``ci_low``,
    ``ci_high``: map minus floor over the same images (NaN without per-sample scores).
    """

    value: float
    floor: float
    floor_word: str
    ceiling: float
    ceiling_word: str
    difference: float = np.nan
    ci_low: float = np.nan
    ci_high: float = np.nan

    def above_floor(self, higher_is_better: bool = True) -> bool:
        """Better than the floor: by a paired interval that excludes 0 on the better side where one
        was computed, else (no per-sample scores) by the value alone, strictly. False without a floor."""
        if finite(self.ci_low) and finite(self.ci_high):
            return bool(self.ci_low > 0) if higher_is_better else bool(self.ci_high < 0)
        if not (finite(self.value) and finite(self.floor)):
            return False
        return self.value > self.floor if higher_is_better else self.value < self.floor

    def bounds(self) -> str:
        """``"(grid floor 0.44, ceiling 0.8)"``: the references that were measured, as the tables format
        them ("" with neither)."""
        parts = [f"{word} {fmt(v)}" for word, v in ((self.floor_word, self.floor), (self.ceiling_word, self.ceiling))
                 if finite(v)]
        return f"({', '.join(parts)})" if parts else ""

    def against_floor(self) -> str:
        """``"paired difference to the grid floor 0.01 [-0.02, 0.03]"``, or "" without an interval."""
        if not (finite(self.ci_low) and finite(self.ci_high)):
            return ""
        return (f"paired difference to the {self.floor_word} {fmt(self.difference)} "
                f"[{fmt(self.ci_low)}, {fmt(self.ci_high)}]")


def _reference(agg: pd.DataFrame, order, *, dataset: str, combination: str, metric: str
               ) -> tuple[str | None, str, float]:
    """The first control of ``order`` with a finite value of ``metric`` on this model: (method, word, value)."""
    for method, word in order:
        row = first_row(agg, dataset=dataset, combination=combination, method=method, metric=metric)
        if row is not None and finite(row["value"]):
            return method, word, float(row["value"])
    return None, order[-1][1], np.nan


def room(agg: pd.DataFrame, samples: pd.DataFrame | None, *, dataset: str, combination: str, method: str,
         metric: str, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Room | None:
    """The :class:`Room` of ``method``'s ``metric`` on ``dataset``/``combination`` (None without a value
    or without any control),
    with the paired difference to its floor from ``samples`` (per-sample scores) when given."""
    row = first_row(agg, dataset=dataset, combination=combination, method=method, metric=metric)
    if row is None or not finite(row["value"]):
        return None
    pixel = method in PIXEL_MAPS
    where = dict(dataset=dataset, combination=combination, metric=metric)
    floor_method, floor_word, floor = _reference(agg, PIXEL_FLOORS if pixel else GRID_FLOORS, **where)
    ceilings = PIXEL_CEILINGS if pixel else GRID_CEILINGS
    if row["category"] != "localisation":  # the mask (oracle) is a ceiling of localisation only
        ceilings = ceilings[:1]
    _, ceiling_word, ceiling = _reference(agg, ceilings, **where)
    if not (finite(floor) or finite(ceiling)):  # a study without controls: nothing to read against
        return None
    out = Room(float(row["value"]), floor, floor_word, ceiling, ceiling_word)
    return _against_floor(out, samples, floor_method, dataset=dataset, combination=combination, method=method,
                          metric=metric, n_resamples=n_resamples, confidence=confidence, seed=seed)


def rooms(agg: pd.DataFrame, samples: pd.DataFrame | None, *, datasets, combinations, method: str,
          metrics, concepts: bool = False, **bootstrap) -> dict[tuple[str, str, str], Room]:
    """``{(dataset, combination, metric): Room}`` of ``method``'s map for every metric of ``metrics``
    (None entries left out); with ``concepts``, of concept map ``method`` (:func:`concept_room`)."""
    of = concept_room if concepts else room
    out = {}
    for ds in datasets:
        for comb in combinations:
            for metric in metrics:
                r = of(agg, samples, dataset=ds, combination=comb, method=method, metric=metric, **bootstrap)
                if r is not None:
                    out[(ds, comb, metric)] = r
    return out


#: The structured concept floors (:data:`kmx_eval.metrics.concept_fidelity.CONCEPT_FLOORS`: pixel-colour
#: k-means, SLIC superpixels, grid cells) and the ceiling of a concept map (the part map on the grid).
CONCEPT_FLOOR_WORDS = {"floor_colour": "colour floor", "floor_slic": "superpixel floor",
                       "floor_grid": "grid-cell floor"}
CONCEPT_CEILING = ("oracle", "part-map ceiling")


def concept_room(agg: pd.DataFrame, samples: pd.DataFrame | None, *, dataset: str, combination: str, method: str,
                 metric: str, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Room | None:
    """The :class:`Room` of concept map ``method``'s ``metric`` (a concept-fidelity metric): the floor is
    the strongest structured floor on that model (the highest of :data:`CONCEPT_FLOOR_WORDS`' rows), or,
    where the study has none, the shuffled-id chance level of the row itself (no paired interval); the
    ceiling is the part map on the grid (``oracle``). None without a value or any reference."""
    row = first_row(agg, dataset=dataset, combination=combination, method=method, metric=metric)
    if row is None or not finite(row["value"]):
        return None
    where = dict(dataset=dataset, combination=combination, metric=metric)
    structured = [(float(r["value"]), m) for m in CONCEPT_FLOOR_WORDS
                  if (r := first_row(agg, method=m, **where)) is not None and finite(r["value"])]
    _, ceiling_word, ceiling = _reference(agg, (CONCEPT_CEILING,), **where)
    if structured:
        floor, floor_method = max(structured)
        floor_word = CONCEPT_FLOOR_WORDS[floor_method]
    else:
        floor_method, floor_word = None, "shuffled-id floor"
        floor = float(row["chance"]) if finite(row["chance"]) else np.nan
    if not (finite(floor) or finite(ceiling)):
        return None
    out = Room(float(row["value"]), floor, floor_word, ceiling, ceiling_word)
    return _against_floor(out, samples, floor_method, dataset=dataset, combination=combination, method=method,
                          metric=metric, n_resamples=n_resamples, confidence=confidence, seed=seed)


def _against_floor(out: Room, samples: pd.DataFrame | None, floor_method: str | None, *, dataset: str,
                   combination: str, method: str, metric: str, n_resamples: int, confidence: float,
                   seed: int) -> Room:
    """``out`` with the paired difference of ``method`` minus ``floor_method`` on the images both scored
    (the same images, seeds then images resampled); ``out`` unchanged without samples or a floor map."""
    if samples is None or floor_method is None or not len(samples):
        return out
    sel = samples[(samples["dataset"] == dataset) & (samples["combination"] == combination)
                  & (samples["metric"] == metric)].copy()
    sel["value"] = pd.to_numeric(sel["value"], errors="coerce")
    sel = sel[np.isfinite(sel["value"].to_numpy(dtype=float))]
    d = paired_difference(sel[sel["method"] == floor_method], sel[sel["method"] == method],
                          n_resamples=n_resamples, confidence=confidence, seed=seed)
    if d is None:
        return out
    return Room(out.value, out.floor, out.floor_word, out.ceiling, out.ceiling_word, d.difference, d.ci_low,
                d.ci_high)
