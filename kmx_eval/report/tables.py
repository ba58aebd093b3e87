"""The report's tables: which numbers each holds, in which order, and their captions.

Each builder takes frames of :mod:`kmx_eval.report.stats` (the aggregated frame, paired
comparisons, controls, the ranking) and returns a :class:`~kmx_eval.report.table.Table`; the
standard tables are :func:`report_tables`.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from kmx_eval.errors import DataError
from kmx_eval.metrics.concept_fidelity import CONCEPT_FLOORS
from kmx_eval.metrics.evaluation import CONCEPT_METRICS
from kmx_eval.metrics.parts import CONCEPT_PART_AMI, KEYPOINT_POINTING
from kmx_eval.metrics.sharpness import SHARPNESS_METRICS
from kmx_eval.metrics.tidy import PROTOTYPE_METRICS, TIDY_COLUMNS
from kmx_eval.report.duplicates import SAME_MAP_RHO
from kmx_eval.report import multiplicity
from kmx_eval.report.normalised import NORMALISED, normalised_localisation
from kmx_eval.report.numbers import fmt, format_cell
from kmx_eval.report.stats import CONTROLS, aggregate_seeds
from kmx_eval.report.table import Table, assemble

#: Row index of every metric table.
INDEX = ["dataset", "combination", "method"]
#: Order of heads in tables (other methods follow in order of appearance); KMEx's reference head
#: (``kmeans_kmex``, docs/METHOD.md section 4) beside the suite's default.
HEAD_ORDER = ("kmeans", "kmeans_kmex", "probe", "linear", "cnn")
#: Columns compared only between rows in the same space at the same scale (KMEx's diversity depends
#: on the scale): no best value is marked across the rows of a dataset.
SAME_SPACE_ONLY = frozenset({"diversity_kmex"})


def _order(values: Iterable[str], preferred: Sequence[str] | None) -> list[str]:
    """Values in ``preferred`` order first, then the others in order of appearance."""
    seen = list(dict.fromkeys(values))
    preferred = [p for p in (preferred or []) if p in seen]
    return preferred + [v for v in seen if v not in preferred]


def _mark_best(numbers: pd.DataFrame, column: str = "column") -> pd.Series:
    """True where a value is the best of its display column within its dataset.

    The best is the maximum when ``higher_is_better`` is True and the minimum when it is False;
    ties are all marked; nothing is marked for metrics without a direction, for chance columns or
    where fewer than two finite values compete. Control maps (:data:`CONTROLS`: the random floor and
    the oracle ceiling) never compete, nor do the columns of :data:`SAME_SPACE_ONLY`.
    """
    best = pd.Series(False, index=numbers.index)
    competing = ~numbers["method"].isin(CONTROLS) if "method" in numbers else pd.Series(True, index=numbers.index)
    for _, group in numbers[competing].groupby(["dataset", column], sort=False):
        dirs = {d for d in group["higher_is_better"] if d is not None}
        finite = group[np.isfinite(group["value"].to_numpy(dtype=float))]
        same_space_only = group["metric"].isin(SAME_SPACE_ONLY).any()
        if len(dirs) != 1 or len(finite) < 2 or group["is_chance"].any() or same_space_only:
            continue
        target = finite["value"].max() if dirs.pop() else finite["value"].min()
        best.loc[finite.index[finite["value"] == target]] = True
    return best


def metric_table(
    agg: pd.DataFrame,
    *,
    name: str,
    title: str,
    caption: str,
    categories: Sequence[str],
    kinds: Sequence[str] | None = None,
    with_chance: bool = False,
    datasets: Sequence[str] | None = None,
    combinations: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> Table:
    """Pivot the aggregated frame: rows (dataset, combination, method), one column per metric.

    Parameters
    ----------
    agg : DataFrame
        Output of :func:`aggregate_seeds`.
    categories, kinds : sequence of str
        The tidy ``category`` (and optionally ``kind``) values the table shows.
    with_chance : bool
        Put a ``"{metric} chance"`` column beside each metric (localisation: a uniform random map,
        or the mask's share of the image for mass-based metrics).
    datasets, combinations, methods : sequence of str, optional
        Row order (params order); values not listed follow in order of appearance.
    metrics : sequence of str, optional
        Column order within a category (e.g. ``params.evaluate.quantus``).
    """
    sel = agg[agg["category"].isin(categories)]
    if kinds is not None:
        sel = sel[sel["kind"].isin(kinds)]
    ds_order = _order(sel["dataset"], datasets)
    comb_order = _order(sel["combination"], combinations)
    method_order = _order(sel["method"], list(methods or []) + list(HEAD_ORDER))
    metric_order = []
    for cat in categories:  # columns grouped by category, metrics in order of appearance
        metric_order += _order(sel.loc[sel["category"] == cat, "metric"], metrics)

    long_rows = []
    for _, r in sel.iterrows():
        base = {k: r[k] for k in INDEX}
        common = dict(higher_is_better=r["higher_is_better"], note=r["note"])
        long_rows.append({**base, "column": r["metric"], "metric": r["metric"], "is_chance": False,
                          "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                          "seed_sd": r["seed_sd"], "n_seeds": r["n_seeds"], "chance": r["chance"], **common})
        if with_chance:
            long_rows.append({**base, "column": f"{r['metric']} chance", "metric": r["metric"],
                              "is_chance": True, "value": r["chance"], "ci_low": np.nan,
                              "ci_high": np.nan, "seed_sd": np.nan, "n_seeds": r["n_seeds"],
                              "chance": r["chance"], "higher_is_better": None, "note": r["note"]})
    numbers = pd.DataFrame(long_rows, columns=INDEX + [
        "column", "metric", "is_chance", "value", "ci_low", "ci_high", "seed_sd", "n_seeds", "chance",
        "higher_is_better", "note"])
    columns = []
    for m in metric_order:
        columns.append(m)
        if with_chance:
            columns.append(f"{m} chance")
    if len(numbers):
        numbers = numbers.assign(
            _d=numbers["dataset"].map(ds_order.index), _c=numbers["combination"].map(comb_order.index),
            _m=numbers["method"].map(method_order.index), _k=numbers["column"].map(columns.index),
        ).sort_values(["_d", "_c", "_m", "_k"], kind="stable").drop(columns=["_d", "_c", "_m", "_k"])
        numbers = numbers.reset_index(drop=True)
    dup = numbers.duplicated(INDEX + ["column"], keep=False)
    if dup.any():
        r = numbers[dup].iloc[0]
        raise DataError(
            f"table {name}: metric {r['metric']!r} of {r['dataset']}/{r['combination']}/{r['method']} "
            "appears under two kinds; each dataset, combination, method and metric must be one row"
        )
    numbers["best"] = _mark_best(numbers) if len(numbers) else pd.Series(dtype=bool)
    return assemble(numbers, name=name, title=title, caption=caption, index=INDEX, columns=columns)



def _seeds_phrase(agg: pd.DataFrame) -> str:
    n = int(agg["n_seeds"].max()) if len(agg) else 0
    if n > 1:
        # Per-prototype keys of a study written before per-prototype values were kept have no samples.
        per_prototype = ("" if not (agg["interval"] == "mean_of_seed_bounds").any()
                         else "; keys without per-sample values show the mean of the per-seed intervals")
        return (f" Values are means over {n} seeds: [low, high] resamples the training seeds, then the "
                f"evaluation images (prototypes, for per-prototype metrics) within each drawn seed, so it "
                f"includes the spread between trainings (proportions: joined with the Wilson interval"
                f"{per_prototype}); ± is the standard deviation of the per-seed means.")
    return (" [low, high] is the bootstrap interval over evaluation samples (Wilson intervals for "
            "proportions).")


def report_tables(
    agg: pd.DataFrame,
    *,
    datasets: Sequence[str] | None = None,
    combinations: Sequence[str] | None = None,
    explainers: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
) -> list[Table]:
    """The report's standard tables: accuracy, prototype fidelity, localisation, faithfulness, concepts.

    ``combinations`` should include the CNN's pseudo-combination last (params order), ``explainers``
    and ``metrics`` fix the order of explainer rows and metric columns. Tables without
    any row (e.g. concept fidelity when no dataset has part maps) are still returned, empty.
    """
    seeds = _seeds_phrase(agg)
    best = " Bold: best value of the column within the dataset (respecting the metric's direction)."
    order = dict(datasets=datasets, combinations=combinations)
    prototype_metrics = list(PROTOTYPE_METRICS)
    return [
        metric_table(agg, name="accuracy", title="Accuracy and agreement of each head",
                     caption="Top-1 test accuracy of each head and agreement with the original CNN's "
                             "predictions, per dataset and block combination." + seeds + best,
                     categories=["accuracy", "agreement"], kinds=["head"], **order),
        metric_table(agg, name="prototype_fidelity", title="Prototype fidelity: linear vs k-means prototypes",
                     caption="Do prototypes represent the data? Proximity (distance to the nearest "
                             "training embedding over the median nearest-neighbour distance; about 1 sits "
                             "among the data), separation (distance to the nearest training embedding over "
                             "the distance to the nearest prototype of another class: scale-free, and no "
                             "shrinking of a reading drives it to 0), class purity, decision agreement and "
                             "two diversities of the k-means prototypes p_ch (H per class), of the linear "
                             "prototypes w_c (the CNN's fc, the probe's rows) and of the matched-capacity "
                             "reference 'class_means' (one per class: k-means at one prototype per class, "
                             "in the space of the linear rows of its block: the raw pooled deepest block for "
                             "the CNN's fc, the normalised z_S for a probe). A linear head's rows are "
                             "defined only up to alpha (w_c + v): 'linear'/'probe' read them as stored "
                             "(alpha = 1, v = 0), 'linear_canonical'/'probe_canonical' as the offset-free "
                             "nearest-prototype rule the head is, closest to the class means (closed form, "
                             "invariant to the head's alpha and v). Linear purity ranks training embeddings "
                             "by the centred logit "
                             "<w_c - wbar, z>, k-means purity by distance. diversity_scaled is the suite's "
                             "normalised entropy of each prototype's softmax over its squared distances to "
                             "the others in units of its median one: scale-free, comparable across rows. "
                             "diversity_kmex is KMEx's formula (utils/evaluation.py, diversity) on exact "
                             "distances: it depends on the scale of the space, so compare it only within one "
                             "row's space (no best value is marked). kmeans_kmex is KMEx's own head beside "
                             "the suite's default: raw pooled embeddings of the deepest block, scikit-learn "
                             "KMeans with 10 restarts, measured in that raw space." + seeds + best,
                     categories=["prototype_fidelity"], **order,
                     methods=["kmeans", "kmeans_kmex", "class_means", "linear_canonical", "linear", "probe_canonical",
                              "probe"],
                     metrics=prototype_metrics),
        metric_table(agg, name="localisation", title="Localisation against ground-truth masks",
                     caption="Quantus localisation metrics per explainer and combination, each beside "
                             "its analytic chance level and, as rows of the same model and grid, the "
                             "grid floor (random_grid: a uniform random value per cell of the grid the "
                             "maps live on, upsampled like them), the grid ceiling (ceiling: the metric's "
                             "maximum over maps of that grid), the pixel floor and ceiling of pixel-level "
                             "maps (random, ceiling_pixel) and the oracle (the mask averaged onto the grid, "
                             "a reference, not the ceiling). Every metric is "
                             "invariant to a per-image positive affine change of the map (mass metrics "
                             "count the mass above the map's mean)." + seeds + best,
                     categories=["localisation"], kinds=["explainer"], with_chance=True, **order,
                     methods=list(explainers or []) + list(CONTROLS), metrics=metrics),
        metric_table(agg, name="faithfulness", title="Faithfulness, complexity, randomisation and stability",
                     caption="Quantus faithfulness metrics through the model under explanation, in units "
                             "that do not depend on the model's output scale (curves rescaled per image "
                             "from the unperturbed score to the fully perturbed one), beside the random "
                             "map on the same model (floor; the oracle is a reference, not a ceiling); "
                             "Sparseness; RandomLogit and MPRT (the backbone's blocks re-initialised "
                             "from B4 down; lower is better, 0 = unrelated maps); MaxSensitivity "
                             "(lower is better; the random map's value is its chance level)." + seeds + best,
                     categories=["faithfulness", "complexity", "randomisation", "robustness"],
                     kinds=["explainer"], with_chance=False,
                     **order, methods=list(explainers or []) + list(CONTROLS), metrics=metrics),
        metric_table(agg, name="concept_fidelity", title="Semantic fidelity of concept maps",
                     caption="Purity of concepts on parts and agreement (ARI, NMI, and AMI: NMI corrected "
                             "for chance, about 0 for a random partition) between concept map "
                             "and part map, inside the object mask (_object) and over the whole image "
                             "(_image), where part or object masks exist; one row per concept scope "
                             "(concepts_global: shared by all classes, concepts_class: per class). Chance: "
                             "the same maps with ids shuffled over the scored pixels. Ceiling: the 'oracle' "
                             "row, the part map averaged onto the combination's grid. Floors with structure, "
                             "with the study's number of concepts K and no knowledge of the network: "
                             "floor_colour (k-means on each image's pixel colours), floor_slic (SLIC "
                             "superpixels, about K segments) and floor_grid (K equal grid cells); a concept "
                             "map that does not beat them says no more about parts than colour or position."
                             + seeds + best,
                     categories=["concept_fidelity"], kinds=["concepts"], with_chance=True, **order,
                     methods=["concepts_global", "concepts_class", "oracle", *CONCEPT_FLOORS],
                     metrics=list(CONCEPT_METRICS)),
        sharpness_table(agg, seeds=seeds, explainers=explainers, **order),
        metric_table(normalised_localisation(agg), name="localisation_normalised",
                     title="Localisation between floor and ceiling on each map's own grid",
                     caption="Each localisation value as (value - floor) / (ceiling - floor) on the grid "
                             "the map lives on: floor random_grid (a uniform random value per grid cell, "
                             "upsampled like the map) and ceiling the metric's maximum over maps of that "
                             "grid ('ceiling'); pixel-level maps (Integrated Gradients) against the pixel "
                             "random map and 'ceiling_pixel'. 0 = floor, 1 = ceiling: maps of different "
                             "resolutions are compared on this scale only. The interval is the value's, "
                             "mapped with floor and ceiling at their means." + seeds + best,
                     categories=[NORMALISED], kinds=["explainer"], **order,
                     methods=list(explainers or []) + list(CONTROLS), metrics=metrics),
        *keypoint_tables(agg, seeds=seeds, explainers=explainers, **order),
    ]


def keypoint_tables(agg: pd.DataFrame, *, seeds: str = "", explainers: Sequence[str] | None = None,
                    datasets: Sequence[str] | None = None, combinations: Sequence[str] | None = None) -> list[Table]:
    """The part-location tables (kind ``keypoints``: CUB-200-2011's annotated parts,
    :meth:`kmx_eval.metrics.evaluation.EvaluationTables.add_keypoints`), raw and between floor and
    ceiling; none where no dataset has part locations."""
    if not (agg["kind"] == "keypoints").any():
        return []
    order = dict(datasets=datasets, combinations=combinations)
    methods = list(explainers or []) + list(CONTROLS) + ["concepts_global", "concepts_class"]
    return [
        metric_table(agg, name="keypoints", title="Part locations: pointing game and concept-part alignment",
                     caption="At the dataset's annotated part locations (keypoints). keypoint_pointing: "
                             "whether a maximal pixel of the map lies within evaluate.keypoint_tolerance of a "
                             "visible part (chance: a uniformly drawn pixel; floors random_grid and random, "
                             "ceilings 'ceiling' and 'ceiling_pixel': the best any map of that grid can do). "
                             "concept_part_ami: adjusted mutual information between the concept at each visible "
                             "part and the part's name, over all evaluated images (chance 0, at most 1; the "
                             "interval resamples images within each seed), beside the structured floors "
                             "(colour k-means, SLIC, grid cells with the study's K)." + seeds,
                     categories=["localisation", "concept_fidelity"], kinds=["keypoints"], with_chance=True,
                     **order, methods=methods, metrics=[KEYPOINT_POINTING, CONCEPT_PART_AMI]),
        metric_table(normalised_localisation(agg, kind="keypoints"), name="keypoints_normalised",
                     title="Part pointing between floor and ceiling on each map's own grid",
                     caption="keypoint_pointing as (value - floor) / (ceiling - floor) on the grid the map "
                             "lives on (random_grid and ceiling; pixel-level maps against random and "
                             "ceiling_pixel): 0 = floor, 1 = ceiling." + seeds,
                     categories=[NORMALISED], kinds=["keypoints"], **order, methods=methods,
                     metrics=[KEYPOINT_POINTING]),
    ]


def sharpness_table(agg: pd.DataFrame, *, seeds: str = "", explainers: Sequence[str] | None = None,
                    datasets: Sequence[str] | None = None, combinations: Sequence[str] | None = None) -> Table:
    """Sharpness of each map beside its coarse twin (the map pooled to the study's coarsest grid and
    upsampled back; :mod:`kmx_eval.metrics.sharpness`, docs/METHOD.md section 6)."""
    return metric_table(
        agg, name="sharpness", title="Sharpness beyond the coarsest grid (B4's)",
        caption="Is a map sharper than B4's grid could show? Each score of the map beside its coarse twin "
                "(_coarse: the same map average-pooled to the study's coarsest grid, B4's, and upsampled "
                "back bilinearly), so a finer grid or the upsampling alone cannot pass for sharpness. "
                "mass_in_mask: share of the map's mass above its mean on the object; _gain: map minus "
                "coarse twin, per image (its interval is the paired one; about 0 for a B4 map). "
                "fine_energy: share of the mean-removed DCT energy beyond the coarse grid's Nyquist limit. "
                "half_max_area: pixels at or above the half maximum over object pixels (lower: more "
                "concentrated, not better localised). part_pointing: per part, whether the map's maximum "
                "in the pixels nearest that part falls on it (synthetic part maps only). Every score is "
                "invariant to a per-image positive affine change of the map." + seeds,
        categories=["sharpness"], kinds=["sharpness"], datasets=datasets, combinations=combinations,
        methods=list(explainers or []) + list(CONTROLS), metrics=list(SHARPNESS_METRICS))


def variance_share_table(fit_metrics: dict, datasets: Sequence[str] | None = None,
                         combinations: Sequence[str] | None = None) -> Table:
    """Each block's share of F_S's total variance, per dataset and combination (the fit stage's
    ``variance_share_B{b}``, mean over seeds; docs/METHOD.md, section 6).

    ``fit_metrics`` maps ``(dataset, combination)`` to the contents of that ``fit.json``
    (``{"seed0": {"variance_share_B4": ..., ...}}``). ``share_b = sum_{c in b} Var_c / sum_c Var_c``:
    with the ``channels`` weighting a block weighs by its channel count, ``balanced`` aims at equal
    shares.
    """
    rows = []
    for (ds, comb), per_seed in fit_metrics.items():
        for seed_key, numbers in per_seed.items():
            for key, value in numbers.items():
                if key.startswith("variance_share_"):
                    rows.append({**{c: None for c in TIDY_COLUMNS}, "dataset": ds,
                                 "seed": int(str(seed_key).removeprefix("seed")), "combination": comb,
                                 "kind": "head", "method": "F_S", "category": "block_variance",
                                 "metric": key.removeprefix("variance_share_"), "value": value,
                                 "n": 1, "n_missing": 0, "higher_is_better": None, "note": ""})
    frame = pd.DataFrame(rows, columns=list(TIDY_COLUMNS))
    agg = aggregate_seeds(frame) if len(frame) else frame
    return metric_table(agg, name="block_variance", title="Share of F_S's variance per block",
                        caption="Each block's share of the total variance of the combined map F_S on the "
                                "concept-fitting training images: channels weighting (B34, B234) against "
                                "balanced (B34_balanced, B234_balanced), where every block should bring "
                                "the same share.",
                        categories=["block_variance"], datasets=datasets, combinations=combinations,
                        metrics=["B1", "B2", "B3", "B4"])



def comparison_table(comparisons: pd.DataFrame, agg: pd.DataFrame | None = None,
                     confidence: float = 0.95, failed: dict[str, set[str]] | None = None) -> Table:
    """Display table of :func:`paired_comparisons`; bold where the difference is declared.

    Columns: the mean of A, the mean of B, ``B − A [low, high]``, ``n`` pairs, the p-value (adjusted
    by :mod:`kmx_eval.report.multiplicity` over the secondary rows; the unadjusted one of a primary
    endpoint), whether the row is a primary endpoint, and which combination the difference favours
    (using the metric's ``higher_is_better`` from ``agg`` when given), or "within the noise". The
    decision is ``differs`` of :func:`kmx_eval.report.multiplicity.adjust` when the frame has it (a
    frame without it is adjusted here, with no primary endpoint), so it follows the adjusted p-value.
    """
    if "differs" not in comparisons:
        comparisons = multiplicity.adjust(comparisons, confidence=confidence)
    index = ["dataset", "comparison", "method", "metric"]
    directions = {}
    if agg is not None and len(agg):
        for r in agg.itertuples(index=False):
            if r.higher_is_better is not None:
                directions[(r.dataset, r.metric)] = r.higher_is_better
    long_rows = []
    for r in comparisons.itertuples(index=False):
        base = dict(dataset=r.dataset, comparison=f"{r.b} − {r.a}", method=r.method, metric=r.metric)
        differs = bool(r.differs)
        hib = directions.get((r.dataset, r.metric))
        if r.metric in (failed or {}).get(r.dataset, set()):
            # the metric failed its control on this dataset (docs/METHOD.md, section 6): no verdict
            favours = "— (control failed)"
        elif not differs:
            favours = "within the noise"
        elif hib is None:
            favours = r.b if r.difference > 0 else r.a
            favours = f"{favours} (higher)"
        else:
            favours = r.b if (r.difference > 0) == hib else r.a
        common = dict(higher_is_better=hib, note="", is_chance=False, seed_sd=np.nan, chance=np.nan,
                      n_seeds=r.n_seeds)
        long_rows += [
            {**base, **common, "column": "mean A", "value": r.mean_a, "ci_low": np.nan,
             "ci_high": np.nan, "best": False, "text": None},
            {**base, **common, "column": "mean B", "value": r.mean_b, "ci_low": np.nan,
             "ci_high": np.nan, "best": False, "text": None},
            {**base, **common, "column": "B − A", "value": r.difference, "ci_low": r.ci_low,
             "ci_high": r.ci_high, "best": differs, "text": None},
            {**base, **common, "column": "pairs", "value": float(r.n), "ci_low": np.nan,
             "ci_high": np.nan, "best": False, "text": str(int(r.n))},
            {**base, **common, "column": "p", "value": float(r.p_adjusted), "ci_low": np.nan,
             "ci_high": np.nan, "best": False, "text": None},
            {**base, **common, "column": "endpoint", "value": np.nan, "ci_low": np.nan, "ci_high": np.nan,
             "best": False, "text": "primary" if r.primary else "secondary"},
            {**base, **common, "column": "favours", "value": np.nan, "ci_low": np.nan,
             "ci_high": np.nan, "best": False, "text": favours},
        ]
    numbers = pd.DataFrame(long_rows, columns=index + [
        "column", "value", "ci_low", "ci_high", "seed_sd", "n_seeds", "chance", "higher_is_better",
        "best", "note", "is_chance", "text"])

    def text(r):
        if isinstance(r["text"], str):
            return r["text"]
        return format_cell(r["value"], r["ci_low"], r["ci_high"])

    q = 1.0 - confidence
    caption = (f"Paired differences B − A over the same evaluation images (mean over seeds), with "
               f"{confidence:.0%} paired-bootstrap intervals that resample the training seeds, then the "
               f"images within each drawn seed. p: the two-sided bootstrap p-value, adjusted by "
               f"{multiplicity.METHOD} over the {multiplicity.family_size(comparisons)} secondary rows "
               f"(false discovery rate {q:.2g}); a primary endpoint (params report.primary) keeps its "
               "unadjusted p-value and is decided by its interval. Bold, and a combination under "
               f"'favours': the difference is declared (primary: the interval excludes zero; secondary: "
               f"adjusted p below {q:.2g} and the interval excludes zero); otherwise within the noise.")
    table = assemble(numbers, name="comparisons", title="Paired comparisons of block combinations",
                     caption=caption, index=index,
                     columns=["mean A", "mean B", "B − A", "pairs", "p", "endpoint", "favours"], text=text)
    table.numbers = numbers.drop(columns=["text"])
    return table



def controls_table(controls: pd.DataFrame, confidence: float = 0.95) -> Table:
    """Display table of :func:`control_differences`."""
    index = ["dataset", "combination", "metric"]
    long_rows = []
    for r in controls.itertuples(index=False):
        base = dict(dataset=r.dataset, combination=r.combination, metric=r.metric, higher_is_better=None,
                    note="", is_chance=False, seed_sd=np.nan, chance=np.nan, n_seeds=1, best=False)
        for column, value, low, high, text in (
                ("random (floor)", r.random, np.nan, np.nan, None),
                ("oracle (ceiling)", r.oracle, np.nan, np.nan, None),
                ("oracle − random", r.difference, r.ci_low, r.ci_high, None),
                ("informative", np.nan, np.nan, np.nan, "yes" if r.informative else "no: not used to rank")):
            long_rows.append({**base, "column": column, "value": value, "ci_low": low, "ci_high": high,
                              "text": text})
    numbers = pd.DataFrame(long_rows, columns=index + [
        "column", "value", "ci_low", "ci_high", "seed_sd", "n_seeds", "chance", "higher_is_better",
        "best", "note", "is_chance", "text"])

    def text(r):
        return r["text"] if isinstance(r["text"], str) else format_cell(r["value"], r["ci_low"], r["ci_high"])

    caption = (f"Can each localisation metric tell the oracle (the mask on the map's grid) from the random "
               f"map on the same model? Paired {confidence:.0%} bootstrap interval of oracle − random (seeds "
               "resampled, then images within each); a "
               "metric whose interval includes 0 on some model of a dataset is uninformative there and "
               "is left out of the ranking.")
    return assemble(numbers, name="controls", title="Floor and ceiling of every localisation metric",
                    caption=caption, index=index,
                    columns=["random (floor)", "oracle (ceiling)", "oracle − random", "informative"], text=text)



def ranking_table(ranking: pd.DataFrame, agreement: pd.DataFrame) -> Table:
    """Display table of :func:`metric_ranking`, per dataset and category: median rank, number of
    metrics, the maps counted as this one, mean Kendall's tau of the category's metric rankings."""
    index = ["dataset", "category", "combination", "method"]
    taus = (agreement.groupby(["dataset", "category"])["tau"].mean().to_dict() if len(agreement) else {})
    long_rows = []
    for r in ranking.to_dict("records"):
        base = dict(dataset=r["dataset"], category=r["category"], combination=r["combination"],
                    method=r["method"], higher_is_better=False, note="", is_chance=False, seed_sd=np.nan,
                    chance=np.nan, n_seeds=1, ci_low=np.nan, ci_high=np.nan, best=False)
        long_rows.append({**base, "column": "median rank", "value": r["median_rank"], "text": None})
        long_rows.append({**base, "column": "metrics", "value": float(r["n_metrics"]),
                          "text": str(int(r["n_metrics"]))})
        long_rows.append({**base, "column": "counted with", "value": np.nan, "text": r.get("same_as") or "—"})
        tau = taus.get((r["dataset"], r["category"]), np.nan)
        long_rows.append({**base, "column": "agreement (mean Kendall tau)", "value": tau, "text": None})
    numbers = pd.DataFrame(long_rows, columns=index + [
        "column", "value", "ci_low", "ci_high", "seed_sd", "n_seeds", "chance", "higher_is_better",
        "best", "note", "is_chance", "text"])

    def text(r):
        return r["text"] if isinstance(r["text"], str) else fmt(r["value"])

    caption = ("Per category (localisation, faithfulness, randomisation, stability, concepts), the median "
               "over the category's metrics of each map's rank among the explainers and combinations of "
               "the dataset (1 = best; controls excluded). Only distinct maps and metrics count: maps whose "
               f"Spearman correlation exceeds {SAME_MAP_RHO} on every image are one map (\"counted with\" lists the "
               "others), a metric of the same formula as another (an alias) is dropped, and a metric that "
               "fails its control on the dataset is left out. Agreement: mean Kendall's tau over pairs of "
               "the category's metrics (1 = identical rankings, 0 = unrelated). Read the agreement first.")
    return assemble(numbers, name="ranking", title="Ranking of distinct maps, per category", caption=caption,
                    index=index, columns=["median rank", "metrics", "counted with", "agreement (mean Kendall tau)"],
                    text=text)
