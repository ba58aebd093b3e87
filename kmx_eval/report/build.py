"""The report (docs/METHOD.md, section 5): reports/index.html, summary.md, tables, figures and
metrics.json, assembled from every evaluate output and the plain :class:`ReportSettings`.

Beside the standard tables: the floor and ceiling of every localisation metric on every model
(:func:`~kmx_eval.report.stats.control_differences`; a metric that cannot tell the oracle from
the random map on a dataset is flagged and left out of the ranking there), the ranking across
metrics with their agreement (Kendall's tau), and headline sentences that say when a difference
between two combinations is within the noise (its paired interval includes 0).

The new outputs are written beside the old ones and swapped in only once all are written
(:func:`kmx_eval.io.replace_together`): a failure mid-way leaves ``reports/`` as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd
import yaml
from tqdm.auto import tqdm

from kmx_eval import io, numerics, paths
from kmx_eval.errors import DataError, ParamsError
from kmx_eval.metrics.parts import KEYPOINT_POINTING
from kmx_eval.metrics.quantus import QUANTUS_METRICS
from kmx_eval.metrics.quantus.spec import metric_aliases
from kmx_eval.report import duplicates, figures, floors, galleries, html, inputs, stats, summary, tables
from kmx_eval.report import faithfulness as rf
from kmx_eval.report import forest, multiplicity
from kmx_eval.report.inputs import Evaluations, ReportSettings
from kmx_eval.report.table import Table, to_csv_frames, to_latex, to_markdown

log = logging.getLogger("kmx_eval")

#: What the report stage writes under ``reports/``, all swapped in together.
OUTPUTS = ("tables", "figures", "metrics.json", "summary.md", "index.html")


#: Caption of the forest plots (kmx_eval/report/forest.py).
FOREST_CAPTION = ("Paired differences B − A of the map and the heads over the same images and seeds, one row per "
                  "metric, grouped by category, with intervals that resample seeds, then images. Each row has its "
                  "own scale (its numbers, in the metric's units, at the right), turned so that right means B is "
                  "better. Filled: declared (primary endpoint: interval excludes 0; other rows: Benjamini-Hochberg "
                  "adjusted); hollow: within the noise; grey: the metric fails its control on this dataset. "
                  "Every row is in the full comparisons table under Paired comparisons and Full tables.")


def check_settings(settings: ReportSettings) -> None:
    """Refuse a fidelity metric or explainer the report cannot show, naming what would be valid."""
    # Imported here: kmx_eval.explain imports torch (tens of seconds on a loaded machine), which
    # nothing else in the report needs.
    from kmx_eval.explain import explainer_names

    metric_name = settings.fidelity_metric
    if metric_name not in settings.metrics:
        raise ParamsError(f"report.fidelity_metric {metric_name!r} is not computed; choose one of "
                          f"evaluate.quantus ({', '.join(settings.metrics)})")
    refusal = QUANTUS_METRICS.get(metric_name).refusal_as_headline()
    if refusal:
        raise ParamsError(f"report.fidelity_metric: {refusal}")
    kmeans_explainers = explainer_names(settings.explainers, "kmeans")
    if settings.explainer not in kmeans_explainers:
        raise ParamsError(f"report.explainer {settings.explainer!r} does not explain the k-means head; "
                          f"choose one of {', '.join(kmeans_explainers)}")


@dataclass
class Results:
    """The report's numbers and sentences, computed from the evaluations (no figure yet)."""

    agg: pd.DataFrame  # stats.aggregate_seeds
    tables: list[Table]
    comparison: Table
    numbers: dict  # summary.key_numbers, per dataset and model
    sentences: dict[str, str]  # the headline of each dataset
    claims: dict[str, str]  # the prototype claim of each dataset
    fidelity_metric: str
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: multiplicity.adjust of the paired comparisons (the forest plots read it)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: per dataset, the metrics that fail their control (greyed in the forest plots)
    failed_controls: dict = field(default_factory=dict)

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)


def _check_accuracy(agg: pd.DataFrame, settings: ReportSettings) -> None:
    for ds in settings.datasets:
        for comb in settings.combinations:
            if stats.lookup(agg, dataset=ds, combination=comb, method="kmeans", category="accuracy").empty:
                raise DataError(f"{paths.evaluation(ds, comb) / 'metrics.csv'} has no k-means accuracy; "
                                "rerun evaluate (dvc repro)")


def controlled_localisation(metrics, samples: pd.DataFrame) -> list[str]:
    """The localisation metrics whose oracle-minus-random control gates their comparisons: the Quantus
    ones of ``metrics`` (``evaluate.quantus``) and, where ``samples`` hold it (a dataset with part
    locations), the pointing game at the keypoints: the oracle map must point at the parts more often
    than the random one before its paired comparisons count (docs/METHOD.md, section 6)."""
    out = [m for m in metrics if QUANTUS_METRICS.get(m).category == "localisation"]
    return out + ([KEYPOINT_POINTING] if (samples["metric"] == KEYPOINT_POINTING).any() else [])


def compute(settings: ReportSettings, evaluations: Evaluations) -> Results:
    """Aggregate across seeds, build every table and the generated sentences."""
    datasets, combos, samples = list(settings.datasets), list(settings.combinations), evaluations.samples
    bootstrap = dict(n_resamples=settings.n_resamples, confidence=settings.confidence)
    # Intervals across seeds from the per-sample scores (seeds resampled, then images within each), with the
    # bootstrap settings of the per-seed rows (docs/METHOD.md, section 6, "Intervals").
    agg = stats.aggregate_seeds(evaluations.metrics, samples, **bootstrap)
    _check_accuracy(agg, settings)
    result_tables = tables.report_tables(agg, datasets=datasets, combinations=settings.models,
                                         explainers=settings.explainers, metrics=settings.metrics)
    cmp = stats.paired_comparisons(samples, [tuple(p) for p in settings.compare], **bootstrap,
                                   seed=settings.seeds[0])
    # Multiplicity (docs/METHOD.md, section 6): the primary endpoints unadjusted, every other row by
    # Benjamini-Hochberg over the table; "within the noise" follows the adjusted decision.
    # report.primary: one endpoint per claim (localisation: the fidelity metric; faithfulness when declared)
    primary = [(settings.explainer, settings.fidelity_metric), ("kmeans", "accuracy")]
    if settings.primary_faithfulness:
        primary.insert(1, (settings.explainer, settings.primary_faithfulness))
    cmp = multiplicity.adjust(cmp, primary=primary, confidence=settings.confidence)
    localisation = controlled_localisation(settings.metrics, samples)
    controls = stats.control_differences(samples, localisation, **bootstrap, seed=settings.seeds[0])
    # Faithfulness against the random map of the same model; a faithfulness metric is ranked, favours a
    # combination or enters a sentence only where occlusion beats random on every model (report.faithfulness).
    faithfulness = [m for m in settings.metrics if QUANTUS_METRICS.get(m).category == "faithfulness"]
    higher = {m: QUANTUS_METRICS.get(m).higher_is_better for m in faithfulness}
    faith_controls = rf.faithfulness_controls(samples, faithfulness, higher=higher, **bootstrap,
                                              seed=settings.seeds[0])
    skip = rf.merged(stats.uninformative(controls), rf.failed_faithfulness(samples, faith_controls, faithfulness))
    comparison = tables.comparison_table(cmp, agg, settings.confidence, failed=skip)
    # Distinct maps and metrics only (docs/METHOD.md, section 6): same-map groups from the maps files
    # (a DVC dependency of the report), aliases from the metric specs.
    same_map = duplicates.map_duplicates(datasets, settings.models, settings.seeds, excluded=stats.CONTROLS)
    ranking, agreement = stats.metric_ranking(agg, skip, same_as=duplicates.same_as_mapping(same_map),
                                              aliases=metric_aliases())
    result_tables += [comparison, tables.variance_share_table(inputs.fit_metrics(settings), datasets, combos),
                      tables.controls_table(controls, settings.confidence), tables.ranking_table(ranking, agreement),
                      rf.random_differences_table(rf.random_differences(samples, faithfulness, higher=higher, **bootstrap,
                                                                        seed=settings.seeds[0]),
                                                  faith_controls, settings.confidence)]
    metric_name, explainer = settings.fidelity_metric, settings.explainer
    # The headline's numbers, each paired over the same images: fidelity (and the primary faithfulness
    # endpoint) of the map and accuracy of the k-means head.
    endpoints = [metric_name] + ([settings.primary_faithfulness] if settings.primary_faithfulness else [])
    fid_samples = samples[(samples["metric"].isin(endpoints) & (samples["method"] == explainer))
                          | ((samples["metric"] == "accuracy") & (samples["method"] == "kmeans"))]
    every_pair = [(a, b) for i, a in enumerate(combos) for b in combos[i + 1:]]
    paired = stats.paired_comparisons(fid_samples, every_pair, **bootstrap, seed=settings.seeds[0])
    # Each headline value between its floor and ceiling, and the map against its floor over the same
    # images (docs/METHOD.md, section 6, "Headlines that check the room").
    rooms = floors.rooms(agg, samples, datasets=datasets, combinations=combos, method=explainer,
                         metrics=endpoints, **bootstrap, seed=settings.seeds[0])
    concept_method, concept_rooms, concept_paired = _concept_endpoint(settings, agg, samples, bootstrap)
    rooms.update(concept_rooms)
    paired = pd.concat([paired, concept_paired], ignore_index=True) if len(concept_paired) else paired
    return Results(agg=agg, tables=result_tables, comparison=comparison,
                   numbers=summary.key_numbers(agg, datasets, combos, fidelity_metric=metric_name,
                                                       explainer=explainer),
                   sentences=summary.headlines(agg, datasets, combos, fidelity_metric=metric_name,
                                                        explainer=explainer, paired=paired, uninformative=skip,
                                                        rooms=rooms, faithfulness_metric=settings.primary_faithfulness,
                                                        concepts_metric=settings.primary_concepts,
                                                        concept_method=concept_method),
                   claims=summary.prototype_claims(agg, datasets, combos, samples=samples, **bootstrap,
                                                   seed=settings.seeds[0]), fidelity_metric=metric_name,
                   curves=evaluations.curves, comparisons=cmp, failed_controls=skip)


def _concept_endpoint(settings: ReportSettings, agg: pd.DataFrame, samples: pd.DataFrame, bootstrap: dict
                      ) -> tuple[str | None, dict, pd.DataFrame]:
    """The concept maps of the concepts sentence (``concepts_global`` where the study has them) with the
    rooms and paired comparisons of ``report.primary.concepts``; ``(None, {}, empty)`` without one."""
    metric, combos = settings.primary_concepts, list(settings.combinations)
    methods = [m for m in dict.fromkeys(agg.loc[agg["kind"] == "concepts", "method"]) if m not in stats.CONTROLS]
    if not metric or not methods:
        return None, {}, pd.DataFrame()
    method = "concepts_global" if "concepts_global" in methods else methods[0]
    every_pair = [(a, b) for i, a in enumerate(combos) for b in combos[i + 1:]]
    paired = stats.paired_comparisons(samples[(samples["metric"] == metric) & (samples["method"] == method)],
                                      every_pair, **bootstrap, seed=settings.seeds[0])
    rooms = floors.rooms(agg, samples, datasets=list(settings.datasets), combinations=combos, method=method,
                         metrics=[metric], concepts=True, **bootstrap, seed=settings.seeds[0])
    return method, rooms, paired


class _Figures:
    """The rendered figures: PNG and SVG kept for reports/figures/, the PNG embedded in the page."""

    def __init__(self):
        self.files: dict[str, bytes] = {}

    def add(self, name: str, fig, *, alt: str, caption: str = "") -> html.Figure:
        rendered = figures.render(fig)
        self.files[f"{name}.png"] = rendered["png"]
        self.files[f"{name}.svg"] = rendered["svg"]
        return html.Figure.from_png(rendered["png"], alt, caption)


def _overview(settings: ReportSettings, ds: str, class_names: list[str]) -> dict:
    """The summary table's row of ``ds``."""
    info = settings.datasets[ds]
    return {"dataset": ds, "source": info.source,
            # What was explained: the architecture, and the checkpoint the train stage recorded
            # (file name and sha256) when the CNN is the user's own.
            "backbone": summary.backbone_provenance(
                info.architecture, info.weights,
                io.read_json(paths.backbone_meta(ds, settings.seeds[0])).get("checkpoint")),
            "image_size": f"{info.image_size} px", "classes": len(class_names),
            "combinations": ", ".join(settings.combinations), "seeds": ", ".join(map(str, settings.seeds))}


def _dataset_section(settings: ReportSettings, results: Results, ds: str, *, dd, store: _Figures
                     ) -> html.DatasetSection:
    """Every figure of ``ds`` (rendered into ``store``) and its part of the page."""
    agg, metric_name, explainer = results.agg, settings.fidelity_metric, settings.explainer
    points = figures.tradeoff_points(agg, ds, settings.combinations, fidelity_metric=metric_name, explainer=explainer)
    tradeoff = store.add(f"tradeoff_{ds}", figures.tradeoff_figure(points, ds, fidelity_metric=metric_name,
                                                                 explainer=explainer),
                         alt=f"trade-off figure of {ds}")
    rows = forest.forest_rows(results.comparisons, agg, ds, methods=[explainer, "kmeans", "probe"],
                              failed=results.failed_controls)
    forest_plot = store.add(f"comparisons_{ds}", forest.forest_figure(rows, ds), alt=f"paired comparisons of {ds}",
                            caption=FOREST_CAPTION) if len(rows) else None
    proto = store.add(f"prototype_fidelity_{ds}", figures.prototype_fidelity_figure(agg, ds, settings.models),
                      alt=f"prototype fidelity of {ds}")
    prototypes = []
    class_names = list(dd["train"].features["label"].names)
    for g in inputs.prototype_galleries(settings, ds, dd["train"], class_names=class_names):
        fig = galleries.prototype_gallery(g.images, g.kmeans, linear=g.linear, class_names=g.class_names,
                                          kmeans_distance=g.kmeans_distance, linear_distance=g.linear_distance,
                                          linear_label=g.linear_label)
        prototypes.append((g.combination, store.add(
            f"prototypes_{ds}_{g.combination}", fig,
            alt=f"nearest training images of the prototypes of {ds}, {g.combination}",
            caption="Rows: classes. Columns: the nearest training image of each k-means prototype p_ch "
                    "and of the linear prototype w_c, with its training index and distance d.")))
    g = inputs.explanation_gallery(settings, ds, dd["test"], explainer=explainer)
    gallery = store.add(f"gallery_{ds}", galleries.explanation_gallery(
        g.images, g.maps, masks=g.masks, concepts=g.concepts, concept_label=g.concept_label,
        row_labels=g.row_labels), alt=f"explanation gallery of {ds}")
    curves = None
    if not results.curves[results.curves["dataset"] == ds].empty:
        curves = store.add(f"curves_{ds}", figures.curves_figure(results.curves, ds, settings.models,
                                                                 explainers=settings.explainers),
                           alt=f"pixel-flipping curves of {ds}")
    return html.DatasetSection(
        name=ds, headline=results.sentences[ds], key_numbers=results.numbers[ds], tradeoff=tradeoff,
        prototype_table=results.table("prototype_fidelity").subset(ds), prototype_claim=results.claims[ds],
        prototype_figure=proto, prototype_galleries=prototypes, explanation_gallery=gallery,
        gallery_note=g.note, curves=curves, forest=forest_plot,
        comparisons=results.comparison.subset(ds, method=[explainer, "kmeans", "probe"]))


def _context(settings: ReportSettings, results: Results, *, sections, overview, runs,
             platform: str = "") -> html.ReportContext:
    """Everything the page shows besides the dataset sections' figures."""
    dumped = settings.params
    shown = {k: dumped[k] for k in ("features", "head", "explain", "evaluate", "report")}
    trained_on = sorted({r["device"] for r in runs if r["device"]})
    return html.ReportContext(
        title=settings.title, overview=overview, combinations=list(settings.combinations),
        seeds=list(settings.seeds), fidelity_metric=settings.fidelity_metric, explainer=settings.explainer,
        sections=sections, tables=results.tables,
        settings_text="# params.yaml\n" + yaml.safe_dump(shown, sort_keys=False) + "\n"
                      + inputs.recorded_settings(settings),
        params_text=yaml.safe_dump(dumped, sort_keys=False),
        versions=html.package_versions(),
        device=f"training: {', '.join(trained_on) or 'unknown'}; report: {settings.device}",
        runs=runs, platform=platform,
    )


def write_report(folder, *, results: Results, title: str, figure_files: dict[str, bytes], page: str,
                 platform: str = "", n_seeds: int | None = None) -> None:
    """Write every output of :data:`OUTPUTS` under ``folder`` (``reports/``), swapped in together:
    until all are written the old ones stay, and a failure leaves them as they were."""
    with io.replace_together(folder, OUTPUTS) as staging:
        (staging / "tables").mkdir()
        for table in results.tables:
            display, long = to_csv_frames(table)
            io.write_csv(staging / "tables" / f"{table.name}.csv", display)
            io.write_csv(staging / "tables" / f"{table.name}_long.csv", long)
            io.write_text(staging / "tables" / f"{table.name}.md", to_markdown(table))
            io.write_text(staging / "tables" / f"{table.name}.tex", to_latex(table))
        io.write_csv(staging / "tables" / "aggregated.csv", results.agg)
        (staging / "figures").mkdir()
        for name, data in figure_files.items():
            io.write_bytes(staging / "figures" / name, data)
        io.write_json(staging / "metrics.json", summary.dvc_metrics(results.numbers, results.fidelity_metric))
        io.write_text(staging / "summary.md", summary.summary_markdown(title, results.sentences, results.claims,
                                                                      platform=platform, n_seeds=n_seeds))
        io.write_text(staging / "index.html", page)


def build(settings: ReportSettings) -> None:
    """Write the report of the evaluate outputs under the current directory (the repository root)."""
    # Imported here: the datasets library takes seconds to import and only the galleries need it.
    from datasets import load_from_disk

    check_settings(settings)
    results = compute(settings, inputs.read_evaluations(settings))
    store, sections, overview, runs = _Figures(), [], [], []
    for ds in tqdm(settings.datasets, desc="report: figures", leave=False):
        dd = load_from_disk(str(paths.prepared(ds)))
        overview.append(_overview(settings, ds, list(dd["train"].features["label"].names)))
        runs += inputs.training_runs(settings, ds)
        sections.append(_dataset_section(settings, results, ds, dd=dd, store=store))
    # Where the numbers were made: the stages' platform records (kmx_eval/numerics.py), in metrics/.
    platform = numerics.summarise(numerics.read_records())
    page = html.render_report(_context(settings, results, sections=sections, overview=overview, runs=runs,
                                       platform=platform))
    write_report(paths.REPORT_DIR, results=results, title=settings.title, figure_files=store.files, page=page,
                 platform=platform, n_seeds=len(settings.seeds))
    log.info("report: %s (%d tables, %d figures)", paths.REPORT_DIR / "index.html", len(results.tables),
             len(store.files))
