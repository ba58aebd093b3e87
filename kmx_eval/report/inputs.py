"""What the report reads: its settings, and the study's files (evaluate outputs, training runs,
recorded metric settings, maps and nearest neighbours of the galleries) as frames and arrays.

Paths come from :mod:`kmx_eval.paths`, relative to the working directory (the repository root);
a missing or stale file raises :class:`~kmx_eval.errors.DataError` naming it and the stage to rerun.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from kmx_eval import io, paths
from kmx_eval.errors import DataError
from kmx_eval.metrics.tidy import CURVE_COLUMNS, SAMPLE_COLUMNS
from kmx_eval.report import stats
from kmx_eval.report.figures import EXPLAINER_LABELS
from kmx_eval.report.numbers import fmt

#: Post-hoc baselines of the CNN shown in the explanation gallery, when they were computed.
GALLERY_BASELINES = ("gradcam", "integrated_gradients")


@dataclass(frozen=True)
class DatasetInfo:
    """What the report says about one dataset: its source and the backbone that was explained."""

    source: str
    architecture: str
    weights: str
    image_size: int


@dataclass(frozen=True)
class ReportSettings:
    """What the report reads from params, as plain values (the stage builds it).

    ``params`` is the whole params file as JSON-like data (printed in the report).
    """

    datasets: dict[str, DatasetInfo]
    combinations: list[str]
    seeds: list[int]
    title: str
    gallery_images: int
    fidelity_metric: str
    explainer: str
    metrics: list[str]
    explainers: list[str]
    compare: list[tuple[str, str]]
    n_resamples: int
    confidence: float
    device: str
    params: dict[str, Any] = field(default_factory=dict)
    #: ``report.primary.faithfulness``: the faithfulness claim's primary endpoint (None: no such sentence);
    #: the localisation claim's is ``fidelity_metric``.
    primary_faithfulness: str | None = None
    #: ``report.primary.concepts``: the concepts claim's primary endpoint (None: no such sentence).
    primary_concepts: str | None = None

    @property
    def models(self) -> list[str]:
        """The block combinations in params order, then the CNN's pseudo-combination."""
        return list(self.combinations) + [paths.BASELINES]


@dataclass(frozen=True)
class Evaluations:
    """Every evaluate output of params.datasets x (combinations + CNN) x seeds, as tidy frames."""

    metrics: pd.DataFrame  # columns kmx_eval.metrics.tidy.TIDY_COLUMNS
    samples: pd.DataFrame  # per-sample scores, SAMPLE_COLUMNS
    curves: pd.DataFrame  # pixel-flipping curves, CURVE_COLUMNS


def _read_frame(path: Path, columns, *, dataset: str, combination: str, seeds, required: bool) -> pd.DataFrame:
    """One evaluate CSV restricted to this dataset, combination and the seeds of params."""
    if not path.exists():
        if required:
            raise DataError(f"{path} does not exist; run evaluate for {dataset}/{combination} (dvc repro)")
        return pd.DataFrame(columns=list(columns))
    frame = pd.read_csv(path, keep_default_na=True)
    stats.check_columns(frame, columns, str(path))
    # Old rows of removed seeds (DVC leaves outputs of removed params behind) are ignored.
    return frame[(frame["dataset"] == dataset) & (frame["combination"] == combination)
                 & frame["seed"].isin(seeds)]


def read_evaluations(settings: ReportSettings) -> Evaluations:
    """Tidy metrics, per-sample scores and curves of params.datasets x (combinations + CNN) x seeds."""
    metrics, samples, curves = [], [], []
    seeds = list(settings.seeds)
    for ds in tqdm(settings.datasets, desc="report: read evaluations", leave=False):
        for comb in settings.models:
            folder = paths.evaluation(ds, comb)
            where = dict(dataset=ds, combination=comb, seeds=seeds)
            m = _read_frame(folder / "metrics.csv", stats.METRIC_COLUMNS, required=True, **where)
            missing = sorted(set(seeds) - set(m["seed"]))
            if missing:
                raise DataError(f"{folder / 'metrics.csv'} has no rows for seed(s) "
                                f"{', '.join(map(str, missing))} of params seeds; rerun evaluate (dvc repro)")
            metrics.append(m)
            samples.append(_read_frame(folder / "samples.csv", SAMPLE_COLUMNS, required=False, **where))
            curves.append(_read_frame(paths.curves(ds, comb), CURVE_COLUMNS, required=False, **where))
    return Evaluations(pd.concat(metrics, ignore_index=True), pd.concat(samples, ignore_index=True),
                       pd.concat(curves, ignore_index=True))


def fit_metrics(settings: ReportSettings) -> dict[tuple[str, str], dict]:
    """Each combination's ``fit.json`` that exists, by ``(dataset, combination)``."""
    return {(ds, c): io.read_json(paths.fit_metrics(ds, c)) for ds in settings.datasets
            for c in settings.combinations if paths.fit_metrics(ds, c).exists()}


def recorded_settings(settings: ReportSettings) -> str:
    """The effective metric settings each evaluate stage recorded (``settings.json``), as YAML.

    Identical settings are shown once with the list of dataset/combination pairs they apply to.
    """
    groups: dict[str, list[str]] = {}
    for ds in settings.datasets:
        for comb in settings.models:
            path = paths.evaluation(ds, comb) / "settings.json"
            if path.exists():
                text = yaml.safe_dump(io.read_json(path), sort_keys=True)
                groups.setdefault(text, []).append(f"{ds}/{comb}")
    return "".join(f"# recorded by evaluate for {', '.join(where)}\n{text}\n"
                   for text, where in groups.items())


def training_runs(settings: ReportSettings, ds: str) -> list[dict]:
    """Training runs of ``ds``: one row per seed from backbone.json and train.json."""
    train = io.read_json(paths.train_metrics(ds))
    rows = []
    for seed in settings.seeds:
        meta = io.read_json(paths.backbone_meta(ds, seed))
        numbers = train.get(f"seed{seed}", {})
        rows.append({"dataset": ds, "seed": seed, "architecture": meta.get("architecture", ""),
                     "weights": meta.get("weights", ""), "image size": meta.get("image_size", ""),
                     "epochs": meta.get("epochs", ""),
                     "CNN test accuracy": fmt(numbers.get("test_accuracy", meta.get("test_accuracy"))),
                     "device": meta.get("device", "")})
    return rows


def _rgb(images) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB")) for im in images])


@dataclass(frozen=True)
class Gallery:
    """The arrays of one dataset's explanation gallery (:func:`~kmx_eval.report.galleries.explanation_gallery`)."""

    images: np.ndarray
    maps: dict[str, np.ndarray]
    masks: np.ndarray | None
    concepts: np.ndarray | None
    concept_label: str
    row_labels: list[str]
    #: Said under the figure: what the gallery leaves out (e.g. masks of a dataset without them).
    note: str = ""


def _gallery_rows(maps: dict, reference, *, ds: str, comb: str, settings: ReportSettings) -> list[int]:
    """Rows of ``comb``'s maps holding the ``reference`` test images (by their indices)."""
    pos = {int(i): k for k, i in enumerate(maps["indices"])}
    if any(int(i) not in pos for i in reference):
        first, seed = settings.combinations[0], settings.seeds[0]
        raise DataError(f"{paths.maps_file(ds, comb, seed)} explains other test images than "
                        f"{paths.maps_file(ds, first, seed)}; rerun explain (dvc repro)")
    return [pos[int(i)] for i in reference]


def explanation_gallery(settings: ReportSettings, ds: str, split, *, explainer: str) -> Gallery:
    """Arrays of the explanation gallery of ``ds`` (first seed, first images of the evaluation subset)."""
    seed = settings.seeds[0]
    combos = list(settings.combinations)
    maps = {c: io.load_npz(paths.maps_file(ds, c, seed)) for c in settings.models}
    reference = maps[combos[0]]["indices"][: settings.gallery_images]
    columns = {}
    for comb in settings.models:
        m = maps[comb]
        rows = _gallery_rows(m, reference, ds=ds, comb=comb, settings=settings)
        if comb == paths.BASELINES:
            for name in GALLERY_BASELINES:
                if name in m:
                    columns[EXPLAINER_LABELS.get(name, name)] = m[name][rows]
        elif explainer in m:
            columns[f"{comb} {EXPLAINER_LABELS.get(explainer, explainer)}"] = m[explainer][rows]
    concepts_from = combos[-1]
    key = next((k for k in ("concepts_global", "concepts_class", "concepts") if k in maps[concepts_from]), None)
    concept_maps = maps[concepts_from][key] if key else None
    if concept_maps is not None:
        pos = {int(i): k for k, i in enumerate(maps[concepts_from]["indices"])}
        concept_maps = concept_maps[[pos[int(i)] for i in reference]]
    subset = split.select([int(i) for i in reference])
    masks, note = None, ""
    if "mask" in subset.column_names:
        masks = np.stack([np.asarray(m.convert("L")) for m in subset["mask"]])
    else:
        note = f"{ds} has no object masks: the mask column is left out."
    return Gallery(images=_rgb(subset["image"]), maps=columns, masks=masks, concepts=concept_maps,
                   concept_label=f"concepts ({concepts_from}, "
                                 f"{(key or '').removeprefix('concepts_') or 'global'})",
                   row_labels=[f"test #{int(i)}" for i in reference], note=note)


@dataclass(frozen=True)
class PrototypeGallery:
    """The arrays of one combination's prototype gallery (:func:`~kmx_eval.report.galleries.prototype_gallery`)."""

    combination: str
    images: dict[int, np.ndarray]
    kmeans: np.ndarray
    linear: np.ndarray | None
    class_names: Sequence[str]
    kmeans_distance: np.ndarray | None
    linear_distance: np.ndarray | None
    linear_label: str


def prototype_galleries(settings: ReportSettings, ds: str, split, *, class_names) -> list[PrototypeGallery]:
    """Arrays of each combination's prototype gallery (first seed)."""
    seed = settings.seeds[0]
    out = []
    for comb in settings.combinations:
        nb = io.load_npz(paths.head_dir(ds, comb, seed) / "neighbours.npz")
        if "kmeans" not in nb:
            raise DataError(f"{paths.head_dir(ds, comb, seed) / 'neighbours.npz'} lacks 'kmeans'; "
                            "rerun fit (dvc repro)")
        wanted = sorted({int(i) for i in np.ravel(nb["kmeans"])}
                        | ({int(i) for i in np.ravel(nb["linear"])} if "linear" in nb else set()))
        images = dict(zip(wanted, _rgb(split.select(wanted)["image"])))
        source = str(nb["linear_source"]) if "linear_source" in nb else "cnn"
        out.append(PrototypeGallery(combination=comb, images=images, kmeans=nb["kmeans"], linear=nb.get("linear"),
                                    class_names=class_names, kmeans_distance=nb.get("kmeans_distance"),
                                    linear_distance=nb.get("linear_distance"),
                                    linear_label="CNN w_c" if source == "cnn" else "probe w_c"))
    return out
