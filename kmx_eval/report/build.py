"""The report (docs/METHOD.md, section 5): reports/index.html, tables, figures and metrics.json,
assembled from every evaluate output and the plain :class:`ReportSettings`.

Beside the standard tables: the floor and ceiling of every localisation metric on every model
(:func:`~kmx_eval.report.stats.control_differences`; a metric that cannot tell the oracle from
the random map on a dataset is flagged and left out of the ranking there), the ranking across
metrics with their agreement (Kendall's tau), and headline sentences that say when a difference
between two combinations is within the noise (its paired interval includes 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from kmx_eval import io, paths
from kmx_eval.errors import DataError, ParamsError
from kmx_eval.metrics.quantus import QUANTUS_METRICS
from kmx_eval.metrics.tidy import CURVE_COLUMNS, SAMPLE_COLUMNS
from kmx_eval.report import figures, html, stats, summary, tables
from kmx_eval.report.numbers import fmt
from kmx_eval.report.table import to_csv_frames, to_latex, to_markdown

log = logging.getLogger("kmx_eval")

#: Post-hoc baselines of the CNN shown in the explanation gallery, when they were computed.
GALLERY_BASELINES = ("gradcam", "integrated_gradients")


@dataclass(frozen=True)
class ReportSettings:
    """What the report reads from params, as plain values (the stage builds it).

    ``datasets`` maps each dataset to ``{"source", "architecture", "weights", "image_size"}``;
    ``params`` is the whole params file as JSON-like data (printed in the report).
    """

    datasets: dict[str, dict[str, Any]]
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


def _read_frame(path: Path, columns, ds: str, comb: str, seeds, required: bool) -> pd.DataFrame:
    """One evaluate CSV restricted to this dataset, combination and the seeds of params."""
    if not path.exists():
        if required:
            raise DataError(f"{path} does not exist; run evaluate for {ds}/{comb} (dvc repro)")
        return pd.DataFrame(columns=list(columns))
    frame = pd.read_csv(path, keep_default_na=True)
    stats.check_columns(frame, columns, str(path))
    # Old rows of removed seeds (DVC leaves outputs of removed params behind) are ignored.
    return frame[(frame["dataset"] == ds) & (frame["combination"] == comb) & frame["seed"].isin(seeds)]


def read_evaluations(settings: "ReportSettings") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tidy metrics, per-sample scores and curves of params.datasets x (combinations + CNN) x seeds."""
    metrics, samples, curves = [], [], []
    seeds = list(settings.seeds)
    for ds in tqdm(settings.datasets, desc="report: read evaluations", leave=False):
        for comb in list(settings.combinations) + [paths.BASELINES]:
            folder = paths.evaluation(ds, comb)
            m = _read_frame(folder / "metrics.csv", stats.METRIC_COLUMNS, ds, comb, seeds, True)
            missing = sorted(set(seeds) - set(m["seed"]))
            if missing:
                raise DataError(f"{folder / 'metrics.csv'} has no rows for seed(s) "
                                f"{', '.join(map(str, missing))} of params seeds; rerun evaluate (dvc repro)")
            metrics.append(m)
            samples.append(_read_frame(folder / "samples.csv", SAMPLE_COLUMNS, ds, comb, seeds, False))
            curves.append(_read_frame(paths.curves(ds, comb), CURVE_COLUMNS, ds, comb, seeds, False))
    return (pd.concat(metrics, ignore_index=True), pd.concat(samples, ignore_index=True),
            pd.concat(curves, ignore_index=True))


def _rgb(images) -> np.ndarray:
    return np.stack([np.asarray(im.convert("RGB")) for im in images])


def _gallery(settings: "ReportSettings", ds: str, split, explainer: str) -> tuple[dict, str]:
    """Arrays of the explanation gallery of ``ds`` (first seed, first images of the evaluation subset)."""
    seed = settings.seeds[0]
    combos = list(settings.combinations)
    maps = {c: io.load_npz(paths.maps_file(ds, c, seed)) for c in combos + [paths.BASELINES]}
    reference = maps[combos[0]]["indices"][: settings.gallery_images]
    columns, note = {}, ""
    for comb in combos + [paths.BASELINES]:
        m = maps[comb]
        pos = {int(i): k for k, i in enumerate(m["indices"])}
        if any(int(i) not in pos for i in reference):
            raise DataError(f"{paths.maps_file(ds, comb, seed)} explains other test images than "
                            f"{paths.maps_file(ds, combos[0], seed)}; rerun explain (dvc repro)")
        rows = [pos[int(i)] for i in reference]
        if comb == paths.BASELINES:
            for name in GALLERY_BASELINES:
                if name in m:
                    columns[figures.EXPLAINER_LABELS.get(name, name)] = m[name][rows]
        elif explainer in m:
            columns[f"{comb} {figures.EXPLAINER_LABELS.get(explainer, explainer)}"] = m[explainer][rows]
    concepts_from = combos[-1]
    key = next((k for k in ("concepts_global", "concepts_class", "concepts") if k in maps[concepts_from]), None)
    concept_maps = maps[concepts_from][key] if key else None
    if concept_maps is not None:
        pos = {int(i): k for k, i in enumerate(maps[concepts_from]["indices"])}
        concept_maps = concept_maps[[pos[int(i)] for i in reference]]
    subset = split.select([int(i) for i in reference])
    masks = None
    if "mask" in subset.column_names:
        masks = np.stack([np.asarray(m.convert("L")) for m in subset["mask"]])
    else:
        note = f"{ds} has no object masks: the mask column is left out."
    return dict(images=_rgb(subset["image"]), maps=columns, masks=masks, concepts=concept_maps,
                concept_label=f"concepts ({concepts_from}, {(key or '').removeprefix('concepts_') or 'global'})",
                row_labels=[f"test #{int(i)}" for i in reference]), note


def _prototype_galleries(settings: "ReportSettings", ds: str, split, class_names) -> list[tuple[str, dict]]:
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
        out.append((comb, dict(images=images, kmeans=nb["kmeans"], linear=nb.get("linear"),
                               class_names=class_names, kmeans_distance=nb.get("kmeans_distance"),
                               linear_distance=nb.get("linear_distance"),
                               linear_label="CNN w_c" if source == "cnn" else "probe w_c")))
    return out


def _recorded_settings(settings: "ReportSettings") -> str:
    """The effective metric settings each evaluate stage recorded (``settings.json``), as YAML.

    Identical settings are shown once with the list of dataset/combination pairs they apply to.
    """
    groups: dict[str, list[str]] = {}
    for ds in settings.datasets:
        for comb in list(settings.combinations) + [paths.BASELINES]:
            path = paths.evaluation(ds, comb) / "settings.json"
            if path.exists():
                text = yaml.safe_dump(io.read_json(path), sort_keys=True)
                groups.setdefault(text, []).append(f"{ds}/{comb}")
    return "".join(f"# recorded by evaluate for {', '.join(where)}\n{text}\n"
                   for text, where in groups.items())


def _runs(settings: "ReportSettings", ds: str) -> list[dict]:
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


# ------------------------------------------------------------------------------------ assembling
def _figure(store: dict, name: str, fig) -> bytes:
    """Render ``fig``, keep its PNG and SVG for reports/figures/, return the PNG for the page."""
    rendered = figures.render(fig)
    store[f"{name}.png"] = rendered["png"]
    store[f"{name}.svg"] = rendered["svg"]
    return rendered["png"]


def build(settings: ReportSettings) -> None:
    """Write the report of the evaluate outputs under the current directory (the repository root)."""
    from datasets import load_from_disk

    from kmx_eval.explain import explainer_names

    datasets = list(settings.datasets)
    combos = list(settings.combinations)
    all_combos = combos + [paths.BASELINES]
    metric_name = settings.fidelity_metric
    if metric_name not in settings.metrics:
        raise ParamsError(f"report.fidelity_metric {metric_name!r} is not computed; choose one of "
                          f"evaluate.quantus ({', '.join(settings.metrics)})")
    refusal = QUANTUS_METRICS.get(metric_name).refusal_as_headline()
    if refusal:
        raise ParamsError(f"report.fidelity_metric: {refusal}")
    explainer = settings.explainer
    if explainer not in explainer_names(settings.explainers, "kmeans"):
        raise ParamsError(f"report.explainer {explainer!r} does not explain the k-means head; choose one of "
                          f"{', '.join(explainer_names(settings.explainers, 'kmeans'))}")
    metrics, samples, curves = read_evaluations(settings)
    # Intervals across seeds from the per-sample scores (images as clusters across seeds), with the
    # bootstrap settings of the per-seed rows (docs/METHOD.md, section 6, "Intervals").
    agg = stats.aggregate_seeds(metrics, samples, n_resamples=settings.n_resamples,
                                 confidence=settings.confidence)
    for ds in datasets:
        for comb in combos:
            if stats.lookup(agg, dataset=ds, combination=comb, method="kmeans", category="accuracy").empty:
                raise DataError(f"{paths.evaluation(ds, comb) / 'metrics.csv'} has no k-means accuracy; "
                                "rerun evaluate (dvc repro)")

    result_tables = tables.report_tables(agg, datasets, all_combos, settings.explainers,
                                         settings.metrics)
    cmp = stats.paired_comparisons(samples, [tuple(p) for p in settings.compare],
                                    settings.n_resamples,
                                    settings.confidence, seed=settings.seeds[0])
    comparison = tables.comparison_table(cmp, agg, settings.confidence)
    localisation = [m for m in settings.metrics if QUANTUS_METRICS.get(m).category == "localisation"]
    controls = stats.control_differences(samples, localisation, settings.n_resamples, settings.confidence,
                                          seed=settings.seeds[0])
    skip = stats.uninformative(controls)
    ranking, agreement = stats.metric_ranking(agg, skip)
    fits = {(ds, c): io.read_json(paths.fit_metrics(ds, c)) for ds in datasets for c in combos
            if paths.fit_metrics(ds, c).exists()}
    result_tables += [comparison, tables.variance_share_table(fits, datasets, combos),
                      tables.controls_table(controls, settings.confidence), tables.ranking_table(ranking, agreement)]
    by_name = {t.name: t for t in result_tables}
    numbers = summary.key_numbers(agg, datasets, combos, metric_name, explainer)
    every_pair = [(a, b) for i, a in enumerate(combos) for b in combos[i + 1:]]
    # The headline's two numbers, each paired over the same images: fidelity of the map and
    # accuracy of the k-means head.
    fid_samples = samples[((samples["metric"] == metric_name) & (samples["method"] == explainer))
                          | ((samples["metric"] == "accuracy") & (samples["method"] == "kmeans"))]
    paired = stats.paired_comparisons(fid_samples, every_pair, settings.n_resamples, settings.confidence,
                                       seed=settings.seeds[0])
    sentences = summary.headlines(agg, datasets, combos, metric_name, explainer, paired, skip)
    claims = summary.prototype_claims(agg, datasets, combos)

    figure_files: dict[str, bytes] = {}
    sections, overview, runs = [], [], []
    for ds in tqdm(datasets, desc="report: figures", leave=False):
        dd = load_from_disk(str(paths.prepared(ds)))
        class_names = list(dd["train"].features["label"].names)
        cfg = settings.datasets[ds]
        overview.append({"dataset": ds, "source": cfg["source"],
                         # What was explained: the architecture, and the checkpoint the train stage
                         # recorded (file name and sha256) when the CNN is the user's own.
                         "backbone": summary.backbone_provenance(
                             cfg["architecture"], cfg["weights"],
                             io.read_json(paths.backbone_meta(ds, settings.seeds[0])).get("checkpoint")),
                         "image_size": f"{cfg['image_size']} px", "classes": len(class_names),
                         "combinations": ", ".join(combos), "seeds": ", ".join(map(str, settings.seeds))})
        runs += _runs(settings, ds)
        points = figures.tradeoff_points(agg, ds, combos, metric_name, explainer)
        tradeoff = _figure(figure_files, f"tradeoff_{ds}",
                           figures.tradeoff_figure(points, ds, metric_name, explainer))
        proto = _figure(figure_files, f"prototype_fidelity_{ds}",
                        figures.prototype_fidelity_figure(agg, ds, all_combos))
        galleries = []
        for comb, kw in _prototype_galleries(settings, ds, dd["train"], class_names):
            png = _figure(figure_files, f"prototypes_{ds}_{comb}", figures.prototype_gallery(**kw))
            galleries.append((comb, html.Figure.from_png(
                png, f"nearest training images of the prototypes of {ds}, {comb}",
                "Rows: classes. Columns: the nearest training image of each k-means prototype p_ch "
                "and of the linear prototype w_c, with its training index and distance d.")))
        gallery_kw, gallery_note = _gallery(settings, ds, dd["test"], explainer)
        gallery = _figure(figure_files, f"gallery_{ds}", figures.explanation_gallery(**gallery_kw))
        curve_png = None
        if not curves[curves["dataset"] == ds].empty:
            curve_png = _figure(figure_files, f"curves_{ds}",
                                figures.curves_figure(curves, ds, all_combos, settings.explainers))
        sections.append(html.DatasetSection(
            name=ds, headline=sentences[ds], key_numbers=numbers[ds],
            tradeoff=html.Figure.from_png(tradeoff, f"trade-off figure of {ds}"),
            prototype_table=by_name["prototype_fidelity"].subset(ds), prototype_claim=claims[ds],
            prototype_figure=html.Figure.from_png(proto, f"prototype fidelity of {ds}"),
            prototype_galleries=galleries,
            explanation_gallery=html.Figure.from_png(gallery, f"explanation gallery of {ds}"),
            gallery_note=gallery_note,
            curves=html.Figure.from_png(curve_png, f"pixel-flipping curves of {ds}") if curve_png else None,
            comparisons=comparison.subset(ds, method=[explainer, "kmeans", "probe"]),
        ))

    # serialize_as_any keeps the fields of each dataset source's own Config subclass.
    dumped = settings.params
    shown = {k: dumped[k] for k in ("features", "head", "explain", "evaluate", "report")}
    trained_on = sorted({r["device"] for r in runs if r["device"]})
    context = html.ReportContext(
        title=settings.title, overview=overview, combinations=combos, seeds=list(settings.seeds),
        fidelity_metric=metric_name, explainer=explainer, sections=sections, tables=result_tables,
        settings_text="# params.yaml\n" + yaml.safe_dump(shown, sort_keys=False) + "\n"
                      + _recorded_settings(settings),
        params_text=yaml.safe_dump(dumped, sort_keys=False),
        versions=html.package_versions(),
        device=f"training: {', '.join(trained_on) or 'unknown'}; report: "
               f"{settings.device}",
        runs=runs,
    )
    page = html.render_report(context)

    with io.atomic_path(paths.REPORT_DIR / "tables") as folder:
        folder.mkdir()
        for table in result_tables:
            display, long = to_csv_frames(table)
            io.write_csv(folder / f"{table.name}.csv", display)
            io.write_csv(folder / f"{table.name}_long.csv", long)
            io.write_text(folder / f"{table.name}.md", to_markdown(table))
            io.write_text(folder / f"{table.name}.tex", to_latex(table))
        io.write_csv(folder / "aggregated.csv", agg)
    with io.atomic_path(paths.REPORT_DIR / "figures") as folder:
        folder.mkdir()
        for name, data in figure_files.items():
            io.write_bytes(folder / name, data)
    io.write_json(paths.REPORT_DIR / "metrics.json", numbers)
    io.write_text(paths.REPORT_DIR / "summary.md",
                  summary.summary_markdown(settings.title, sentences, claims))
    io.write_text(paths.REPORT_DIR / "index.html", page)
    log.info("report: %s (%d tables, %d figures)", paths.REPORT_DIR / "index.html", len(result_tables),
             len(figure_files))

