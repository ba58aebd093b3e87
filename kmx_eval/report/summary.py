"""Headline sentences generated from the numbers, one per dataset (never typed by hand).

The sentence compares the block combination whose attribution map (``margin`` by default) has the
best semantic fidelity (``params.report.fidelity_metric``, respecting its direction) with the
reference combination (the first of ``params.combinations``, B4 by default: the block the CNN's
own linear head reads) or, when the best one is the reference, with the runner-up. The accuracy
difference is in percentage points of the k-means heads' test accuracy,

    delta = 100 * (accuracy_best - accuracy_other),

and the sentence says "at a cost of", "and gains" or "at the same accuracy" from the sign of the
formatted difference, whichever way the numbers come out, or "at an accuracy within the noise" when
the paired interval of the difference (the same test images under both heads) includes 0. Every number goes through
:func:`kmx_eval.report.numbers.fmt` (accuracies as percentages ``fmt(100 * a)``), the same format
as the tables, from the same aggregated frame.

Every value of the headline stands between its floor and its ceiling, and the best map is named only
when it is above its floor by a paired interval that excludes 0; otherwise the sentence says it is at
chance (:mod:`kmx_eval.report.floors`; docs/METHOD.md, section 6, "Headlines that check the room").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from kmx_eval.paths import BASELINES
from kmx_eval.report.figures import TRADEOFF_EXPLAINER, cnn_accuracy
from kmx_eval.report.floors import Room, concept_room, room
from kmx_eval.report.numbers import direction, finite, fmt
from kmx_eval.report.stats import PrototypeDifference, first_row, prototype_difference


def percent(x: float) -> str:
    """An accuracy in [0, 1] as a percentage string, ``fmt(100 x) + '%'``."""
    return f"{fmt(100.0 * float(x))}%" if finite(x) else "n/a"


def _interval(r: pd.Series) -> str:
    if finite(r["ci_low"]) and finite(r["ci_high"]):
        return f" [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
    return ""


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def headline(
    agg: pd.DataFrame,
    dataset: str,
    combinations: Sequence[str],
    *,
    fidelity_metric: str,
    explainer: str = TRADEOFF_EXPLAINER,
    paired: pd.DataFrame | None = None,
    uninformative: bool = False,
    rooms: Mapping[str, Room] | None = None,
) -> str:
    """One sentence on the accuracy / semantic-fidelity trade-off of ``dataset``.

    ``paired`` holds :func:`~kmx_eval.report.stats.paired_comparisons` of the combinations; when
    the paired interval of the two compared combinations includes 0 the sentence says the
    difference is within the noise instead of naming a winner. ``uninformative``: the metric could
    not tell the oracle from the random map on this dataset, and the sentence says so.

    ``rooms`` (``{combination: Room}``, :func:`kmx_eval.report.floors.rooms`) places every value
    between its floor and its ceiling ("0.42 (grid floor 0.44, ceiling 0.8)") and gates the verdict:
    the best map is named "best" only when it is above its floor by a paired interval that excludes
    0 (:meth:`~kmx_eval.report.floors.Room.above_floor`); otherwise the sentence says that the
    best map is at chance and names no winner (docs/METHOD.md, section 6, "Headlines that check the
    room"). Without ``rooms`` the floor and ceiling are looked up in ``agg`` by name, and the best
    value must exceed the floor's.

    Parameters
    ----------
    agg : DataFrame
        Output of :func:`kmx_eval.report.stats.aggregate_seeds`.
    combinations : sequence of str
        Block combinations in params order (without the CNN's pseudo-combination); the first is
        the reference.
    fidelity_metric, explainer : str
        The metric (``params.report.fidelity_metric``) of the attribution map ``explainer``.

    Examples
    --------
    "On shapes, B234 localises best (RelevanceMassAccuracy 0.41 [0.36, 0.46] vs 0.22 for B4) at a
    cost of 2.1 accuracy points (95% vs 97.1%)."
    """
    acc = {c: first_row(agg, dataset=dataset, combination=c, kind="head", method="kmeans",
                        category="accuracy", metric="accuracy") for c in combinations}
    fid = {c: first_row(agg, dataset=dataset, combination=c, kind="explainer", method=explainer,
                        metric=fidelity_metric) for c in combinations}
    cnn = cnn_accuracy(agg, dataset)
    cnn_clause = f"; the CNN itself reaches {percent(cnn['value'])}" if cnn is not None else ""
    accs = [f"{percent(acc[c]['value'])} ({c})" for c in combinations if acc[c] is not None]
    acc_clause = f"k-means head accuracy is {_join(accs)}" if accs else "no k-means accuracy was recorded"

    scored = [c for c in combinations if fid[c] is not None and finite(fid[c]["value"])]
    if not scored:
        notes = sorted({str(f["note"]) for f in fid.values() if f is not None and str(f["note"]).strip()})
        why = f" ({notes[0]})" if notes else ""
        return (f"On {dataset}, {fidelity_metric} of the {explainer} map cannot be measured{why}; "
                f"{acc_clause}{cnn_clause}.")
    best, other, rooms, higher, at_chance = _ranking(agg, fid, scored, combinations, dataset=dataset,
                                                     method=explainer, metric=fidelity_metric, rooms=rooms,
                                                     room_of=room)
    if at_chance:
        return f"On {dataset}, " + _at_chance(fid, rooms, best, fidelity_metric=fidelity_metric,
                                              explainer=explainer, higher=higher) + f"; {acc_clause}{cnn_clause}."
    if other is None:
        return (f"On {dataset}, {best} is the only combination with a {fidelity_metric} value "
                f"({fmt(fid[best]['value'])}{_interval(fid[best])}); {acc_clause}{cnn_clause}.")
    diff = _paired(paired, dataset, method=explainer, metric=fidelity_metric, best=best, other=other)
    text = f"On {dataset}, " + _fidelity_clause(fid, best, other, fidelity_metric=fidelity_metric,
                                                explainer=explainer, diff=diff, rooms=rooms)
    acc_diff = _paired(paired, dataset, method="kmeans", metric="accuracy", best=best, other=other)
    accuracy = _accuracy_clause(acc.get(best), acc.get(other), other=other, acc_diff=acc_diff)
    text += accuracy if accuracy is not None else f"; {acc_clause}"
    if uninformative:
        text += (f"; {fidelity_metric} cannot tell the oracle from the random map on {dataset}, "
                 "so this comparison says little")
    return text + cnn_clause + "."


def _best_and_other(fid: dict, scored: list[str], combinations: Sequence[str]) -> tuple[str, str | None]:
    """The combination whose map scores best and the one it is compared with: the reference (the
    first of ``combinations``) or, when the best is the reference, the runner-up (None when no other
    combination has a value)."""
    dirs = {direction(fid[c]["higher_is_better"]) for c in scored} - {None}
    higher = dirs.pop() if len(dirs) == 1 else True
    sign = 1.0 if higher else -1.0

    def rank(c):  # better fidelity first; ties go to the combination listed first in params
        return (sign * float(fid[c]["value"]), -list(combinations).index(c))

    best = max(scored, key=rank)
    reference = combinations[0]
    if best == reference:
        others = [c for c in scored if c != best]
        return best, (max(others, key=rank) if others else None)
    return best, (reference if reference in scored else [c for c in scored if c != best][0])


def _in_room(r: pd.Series, room_of: Room | None) -> str:
    """A value with its floor and ceiling, ``"0.42 (grid floor 0.44, ceiling 0.8)"``."""
    return fmt(r["value"]) + ("" if room_of is None or not room_of.bounds() else " " + room_of.bounds())


def _at_chance(fid: dict, rooms: Mapping[str, Room], best: str, *, fidelity_metric: str, explainer: str,
               higher: bool = True) -> str:
    """The fidelity half when even the best map is not above its floor: no winner is named."""
    verb = "localises" if fid[best]["category"] == "localisation" else "scores"
    return (f"no combination's {explainer} map {verb} above chance on {fidelity_metric}: the best of them, "
            f"{best}, scores {_in_room(fid[best], rooms[best])}, at chance{_why_chance(rooms[best], higher)}")


def _why_chance(r: Room, higher: bool) -> str:
    """Why a value is at chance: its paired interval to the floor, or its value against the floor's."""
    versus = r.against_floor()
    if versus:
        return f"; its {versus} is not {'above' if higher else 'below'} 0"
    return f", not {'above' if higher else 'below'} its {r.floor_word}"


def faithfulness_sentence(agg: pd.DataFrame, dataset: str, combinations: Sequence[str], *, metric: str,
                          explainer: str = TRADEOFF_EXPLAINER, paired: pd.DataFrame | None = None,
                          rooms: Mapping[str, Room] | None = None, failed_control: bool = False) -> str:
    """One sentence on the primary faithfulness endpoint ``metric`` (``report.primary.faithfulness``) of
    the ``explainer`` map, read as the headline reads localisation: no claim where the metric fails its
    control on the dataset (``failed_control``: :func:`kmx_eval.report.stats.uninformative`); the best
    combination named only when its map is above its floor (the random map of the same model, over the
    same images; ``rooms`` as in :func:`headline`), else "at chance"; two combinations alike within the
    noise when their paired interval (``paired``) includes 0; every value between its floor and ceiling.
    """
    if failed_control:
        return (f"Faithfulness on {dataset} ({metric} of the {explainer} map, the primary endpoint): the metric "
                "fails its control here (an informed reference map does not beat the random map by an interval "
                "that excludes 0), so no faithfulness claim is made.")
    return _claim_sentence(agg, dataset, combinations, claim=_Claim(
        head=f"Faithfulness on {dataset} ({metric} of the {explainer} map, the primary endpoint): ",
        chance="no combination's map is more faithful than chance", best="is the most faithful"),
        metric=metric, method=explainer, paired=paired, rooms=rooms, room_of=room)


def concept_sentence(agg: pd.DataFrame, dataset: str, combinations: Sequence[str], *, metric: str,
                     method: str, paired: pd.DataFrame | None = None,
                     rooms: Mapping[str, Room] | None = None) -> str:
    """One sentence on the primary concepts endpoint ``metric`` (``report.primary.concepts``) of the
    concept maps ``method``, read as the headline reads localisation: every value between its floor (the
    strongest structured floor, or the shuffled-id chance level) and its ceiling (the part map on the
    grid; :func:`kmx_eval.report.floors.concept_room`), the best combination named only when above its
    floor by a paired interval that excludes 0, else "at chance"."""
    return _claim_sentence(agg, dataset, combinations, claim=_Claim(
        head=f"Concepts on {dataset} ({metric} of the {method} maps, the primary endpoint): ",
        chance="no combination's concepts match the parts better than chance", best="matches the parts best"),
        metric=metric, method=method, paired=paired, rooms=rooms, room_of=concept_room)


def _ranking(agg: pd.DataFrame, fid: dict, scored: Sequence[str], combinations: Sequence[str], *, dataset: str,
             method: str, metric: str, rooms, room_of):
    """``(best, other, rooms, higher, at_chance)`` of one claim: the best scored combination and the one
    it is compared with (:func:`_best_and_other`), each scored combination's room between floor and
    ceiling (``rooms`` as given, else ``room_of`` per combination), the metric's direction, and whether
    the best sits at or below its floor (then no sentence may call it best)."""
    best, other = _best_and_other(fid, scored, combinations)
    rooms = dict(rooms) if rooms is not None else {
        c: r for c in scored if (r := room_of(agg, None, dataset=dataset, combination=c, method=method,
                                              metric=metric)) is not None}
    higher = direction(fid[best]["higher_is_better"]) is not False
    at_chance = best in rooms and finite(rooms[best].floor) and not rooms[best].above_floor(higher)
    return best, other, rooms, higher, at_chance


@dataclass(frozen=True)
class _Claim:
    """The words of one claim's sentence: its opening, its at-chance verdict and its winner's verb."""

    head: str
    chance: str
    best: str


def _claim_sentence(agg: pd.DataFrame, dataset: str, combinations: Sequence[str], *, claim: _Claim, metric: str,
                    method: str, paired, rooms, room_of) -> str:
    """The faithfulness or concepts sentence (see :func:`faithfulness_sentence`)."""
    fid = {c: first_row(agg, dataset=dataset, combination=c, method=method, metric=metric) for c in combinations}
    scored = [c for c in combinations if fid[c] is not None and finite(fid[c]["value"])]
    if not scored:
        return claim.head + "not measured."
    best, other, rooms, higher, at_chance = _ranking(agg, fid, scored, combinations, dataset=dataset,
                                                     method=method, metric=metric, rooms=rooms, room_of=room_of)
    if at_chance:
        return claim.head + (f"{claim.chance}; the best of them, {best}, scores {_in_room(fid[best], rooms[best])}, "
                             f"at chance{_why_chance(rooms[best], higher)}.")
    versus = rooms[best].against_floor() if best in rooms else ""
    best_text = (fmt(fid[best]["value"]) + _interval(fid[best])
                 + (" " + rooms[best].bounds() if best in rooms and rooms[best].bounds() else "")
                 + (f", {versus}" if versus else ""))
    if other is None:
        return claim.head + f"{best} scores {best_text}."
    diff = _paired(paired, dataset, method=method, metric=metric, best=best, other=other)
    if diff is not None and not (diff["ci_low"] > 0 or diff["ci_high"] < 0):
        return claim.head + (f"{best} and {other} are alike within the noise ({best_text} vs "
                             f"{_in_room(fid[other], rooms.get(other))}; paired difference "
                             f"{fmt(diff['difference'])} [{fmt(diff['ci_low'])}, {fmt(diff['ci_high'])}] includes 0).")
    pair = (f"; paired difference {fmt(diff['difference'])} [{fmt(diff['ci_low'])}, {fmt(diff['ci_high'])}]"
            if diff is not None else "")
    return claim.head + (f"{best} {claim.best} ({best_text} vs {_in_room(fid[other], rooms.get(other))} for "
                         f"{other}{pair}).")


def _fidelity_clause(fid: dict, best: str, other: str, *, fidelity_metric: str, explainer: str, diff,
                     rooms: Mapping[str, Room] | None = None) -> str:
    """The headline's fidelity half: which combination's map scores best, or that the two are alike
    within the noise (``diff``, their paired difference, includes 0); each value with its floor and
    ceiling where ``rooms`` has them."""
    rooms = rooms or {}
    if diff is not None and not (diff["ci_low"] > 0 or diff["ci_high"] < 0):
        return (f"{best} and {other} localise alike within the noise ({fidelity_metric} of the "
                f"{explainer} map {_in_room(fid[best], rooms.get(best))} vs {_in_room(fid[other], rooms.get(other))}; "
                f"paired difference {fmt(diff['difference'])} [{fmt(diff['ci_low'])}, {fmt(diff['ci_high'])}] "
                "includes 0)")
    verb = ("localises best" if fid[best]["category"] == "localisation"
            else f"scores best on {fidelity_metric}")
    versus = rooms[best].against_floor() if best in rooms else ""
    text = (f"{best} {verb} ({fidelity_metric} of the {explainer} map "
            f"{fmt(fid[best]['value'])}{_interval(fid[best])}"
            f"{' ' + rooms[best].bounds() if best in rooms and rooms[best].bounds() else ''}"
            f"{', ' + versus if versus else ''} "
            f"vs {_in_room(fid[other], rooms.get(other))} for {other}")
    return text + (f"; paired difference {fmt(diff['difference'])} [{fmt(diff['ci_low'])}, {fmt(diff['ci_high'])}])"
                   if diff is not None else ")")


def _accuracy_clause(a_best: pd.Series | None, a_other: pd.Series | None, *, other: str, acc_diff) -> str | None:
    """The headline's accuracy half, in percentage points of the k-means heads' accuracy (None
    without both accuracies): a cost, a gain, the same, or within the noise of ``acc_diff``."""
    if a_best is None or a_other is None or not finite(a_best["value"]) or not finite(a_other["value"]):
        return None
    delta = 100.0 * (float(a_best["value"]) - float(a_other["value"]))
    shown = fmt(abs(delta))
    unit = "accuracy point" if shown == "1" else "accuracy points"
    pair = f"{percent(a_best['value'])} vs {percent(a_other['value'])}"
    if acc_diff is not None:
        pair += (f"; paired difference {fmt(100.0 * acc_diff['difference'])} "
                 f"[{fmt(100.0 * acc_diff['ci_low'])}, {fmt(100.0 * acc_diff['ci_high'])}] points")
    if shown == "0":
        return f" at the same accuracy ({pair})"
    if acc_diff is not None and acc_diff["ci_low"] <= 0 <= acc_diff["ci_high"]:
        return f" at an accuracy within the noise of {other}'s ({pair})"
    if delta < 0:
        return f" at a cost of {shown} {unit} ({pair})"
    return f" and gains {shown} {unit} ({pair})"


def _paired(paired: pd.DataFrame | None, dataset: str, *, method: str, metric: str, best: str, other: str):
    """``best - other`` from the paired comparisons (sign flipped if stored as other - best), or None."""
    if paired is None or not len(paired):
        return None
    sel = paired[(paired["dataset"] == dataset) & (paired["method"] == method) & (paired["metric"] == metric)]
    for r in sel.to_dict("records"):
        if (r["a"], r["b"]) == (other, best) and finite(r["ci_low"]):
            return r
        if (r["a"], r["b"]) == (best, other) and finite(r["ci_low"]):
            return {"difference": -r["difference"], "ci_low": -r["ci_high"], "ci_high": -r["ci_low"]}
    return None


def backbone_provenance(architecture: str, weights: str, checkpoint: dict | None) -> str:
    """The summary's backbone cell: the architecture and where its weights came from.

    ``checkpoint`` is the ``checkpoint`` entry the train stage writes into ``backbone.json``
    (``{"file": name, "sha256": hex}``) or ``None`` when the suite trained the CNN itself.

    >>> backbone_provenance("vgg16_bn", "none", {"file": "birds.safetensors", "sha256": "ab12"})
    'vgg16_bn, checkpoint birds.safetensors (sha256 ab12)'
    >>> backbone_provenance("resnet34", "none", None)
    'resnet34 (weights: none)'
    """
    if checkpoint:
        return f"{architecture}, checkpoint {checkpoint['file']} (sha256 {checkpoint['sha256']})"
    return f"{architecture} (weights: {weights})"


def headlines(agg: pd.DataFrame, datasets: Sequence[str], combinations: Sequence[str], *,
              fidelity_metric: str, explainer: str = TRADEOFF_EXPLAINER, paired: pd.DataFrame | None = None,
              uninformative: dict | None = None, rooms: Mapping[tuple[str, str, str], Room] | None = None,
              faithfulness_metric: str | None = None, concepts_metric: str | None = None,
              concept_method: str | None = None) -> dict[str, str]:
    """:func:`headline` of every dataset, in the given order, followed by the
    :func:`faithfulness_sentence` of ``faithfulness_metric`` (``report.primary.faithfulness``) and the
    :func:`concept_sentence` of ``concepts_metric`` (``report.primary.concepts``) of the concept maps
    ``concept_method`` when they are declared; ``rooms`` as :func:`kmx_eval.report.floors.rooms`
    returns them (``{(dataset, combination, metric): Room}``)."""
    def of(ds, metric):
        if rooms is None:
            return None
        return {c: r for (d, c, m), r in rooms.items() if d == ds and m == metric}

    failed = uninformative or {}
    out = {}
    for ds in datasets:
        out[ds] = headline(agg, ds, list(combinations), fidelity_metric=fidelity_metric, explainer=explainer,
                           paired=paired, uninformative=fidelity_metric in failed.get(ds, set()),
                           rooms=of(ds, fidelity_metric))
        if faithfulness_metric:
            out[ds] += " " + faithfulness_sentence(
                agg, ds, list(combinations), metric=faithfulness_metric, explainer=explainer, paired=paired,
                rooms=of(ds, faithfulness_metric), failed_control=faithfulness_metric in failed.get(ds, set()))
        if concepts_metric and concept_method:
            out[ds] += " " + concept_sentence(agg, ds, list(combinations), metric=concepts_metric,
                                              method=concept_method, paired=paired, rooms=of(ds, concepts_metric))
    return out


def key_numbers(
    agg: pd.DataFrame,
    datasets: Sequence[str],
    combinations: Sequence[str],
    *,
    fidelity_metric: str,
    explainer: str = TRADEOFF_EXPLAINER,
    baseline: str | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """The key numbers per dataset and combination (the page's key-numbers table; a few of them are
    the DVC metrics of ``reports/metrics.json``, :func:`dvc_metrics`).

    For each block combination: ``accuracy`` of the k-means head with ``accuracy_low/high``,
    ``probe_accuracy``, ``agreement`` (k-means head versus the CNN), and ``{fidelity_metric}`` of
    the ``explainer`` map with ``_low``, ``_high`` and ``_chance``. For the CNN (``baseline``,
    default ``kmx_eval.paths.BASELINES``): its ``accuracy`` and ``{fidelity_metric}_{explainer}`` of
    each post-hoc baseline. Missing values are NaN (null in JSON). Numbers come straight from
    ``agg``, so they equal the tables' numbers.
    """
    baseline = baseline or BASELINES
    nan = float("nan")

    def value(r, col="value"):
        return float(r[col]) if r is not None and finite(r[col]) else nan

    out: dict[str, dict[str, dict[str, float]]] = {}
    for ds in datasets:
        out[ds] = {}
        for comb in combinations:
            acc = first_row(agg, dataset=ds, combination=comb, kind="head", method="kmeans",
                       category="accuracy", metric="accuracy")
            probe = first_row(agg, dataset=ds, combination=comb, kind="head", method="probe",
                         category="accuracy", metric="accuracy")
            agr = first_row(agg, dataset=ds, combination=comb, kind="head", method="kmeans",
                       category="agreement")
            fid = first_row(agg, dataset=ds, combination=comb, kind="explainer", method=explainer,
                       metric=fidelity_metric)
            out[ds][comb] = {
                "accuracy": value(acc), "accuracy_low": value(acc, "ci_low"),
                "accuracy_high": value(acc, "ci_high"), "probe_accuracy": value(probe),
                "agreement": value(agr), fidelity_metric: value(fid),
                f"{fidelity_metric}_low": value(fid, "ci_low"),
                f"{fidelity_metric}_high": value(fid, "ci_high"),
                f"{fidelity_metric}_chance": value(fid, "chance"),
            }
        cnn = cnn_accuracy(agg, ds)
        entry = {"accuracy": value(cnn), "accuracy_low": value(cnn, "ci_low"),
                 "accuracy_high": value(cnn, "ci_high")}
        base = agg[(agg["dataset"] == ds) & (agg["combination"] == baseline)
                   & (agg["kind"] == "explainer") & (agg["metric"] == fidelity_metric)]
        for _, r in base.iterrows():
            entry[f"{fidelity_metric}_{r['method']}"] = value(r)
        out[ds][baseline] = entry
    return out


def dvc_metrics(numbers: dict[str, dict[str, dict[str, float]]], fidelity_metric: str
                ) -> dict[str, dict[str, dict[str, float]]]:
    """The numbers DVC tracks (``reports/metrics.json``; ``dvc metrics show/diff``), from
    :func:`key_numbers`: per dataset and combination the k-means head's ``accuracy`` with
    ``accuracy_low/high``, its ``agreement`` with the CNN, ``probe_accuracy`` and ``{fidelity_metric}``
    with ``_low/_high``; for the CNN its ``accuracy`` with its interval. Chance levels, the post-hoc
    baselines and every other metric stay in ``reports/tables`` (DVC shows one column per key, for
    every dataset and combination).
    """
    kept = ("accuracy", "accuracy_low", "accuracy_high", "agreement", "probe_accuracy", fidelity_metric,
            f"{fidelity_metric}_low", f"{fidelity_metric}_high")
    return {ds: {model: {k: v for k, v in values.items() if k in kept} for model, values in models.items()}
            for ds, models in numbers.items()}


# ------------------------------------------------------------------------------ prototype claim
#: The matched-capacity reference rows (``kmx_eval.metrics.evaluation.CLASS_MEANS``; not imported from there:
#: that module imports torch, which the report does not need; a test checks the two are equal).
CLASS_MEANS = "class_means"
#: The criterion of the prototype claim: scale-free, and no shrinking or shift of a linear reading drives
#: it to 0 (docs/METHOD.md, section 6; :func:`kmx_eval.metrics.prototype_fidelity.separation_proximities`).
CLAIM_METRIC = "separation"


def _criterion(agg: pd.DataFrame, dataset: str, combination: str, method: str) -> pd.Series | None:
    r = first_row(agg, dataset=dataset, combination=combination, kind="prototypes", method=method,
                  metric=CLAIM_METRIC)
    return r if r is not None and finite(r["value"]) else None


def _cell(r: pd.Series | None) -> str:
    return "n/a" if r is None else fmt(r["value"]) + _interval(r)


def _verdict(diff: PrototypeDifference) -> str:
    """holds / fails / within the noise, from the interval of linear minus reference (lower is closer)."""
    if finite(diff.low) and diff.low > 0:
        return "holds"
    if finite(diff.high) and diff.high < 0:
        return "fails"
    return "within the noise"


def _head_clause(agg: pd.DataFrame, samples: pd.DataFrame | None, *, dataset: str, combination: str, name: str,
                 linear: str, bootstrap: dict) -> tuple[str, str] | None:
    """(verdict, clause) for one linear head against the class means of its own space, or None."""
    reference = _criterion(agg, dataset, combination, CLASS_MEANS)
    for method, reading in ((f"{linear}_canonical", "canonical reading"), (linear, "rows as stored")):
        row = _criterion(agg, dataset, combination, method)
        if row is None or reference is None:
            continue
        diff = prototype_difference(samples, dataset=dataset, combination=combination, a=method, b=CLASS_MEANS,
                                    metric=CLAIM_METRIC, **bootstrap)
        if diff is None:
            continue
        verdict = _verdict(diff)
        spread = (f"seed sd {fmt(diff.seed_sd)} over {diff.n_seeds} seeds" if finite(diff.seed_sd)
                  else "one seed")
        return verdict, (f"{name} ({reading}): {_cell(row)} against {_cell(reference)}, difference "
                         f"{fmt(diff.difference)} [{fmt(diff.low)}, {fmt(diff.high)}], {spread}: {verdict}")
    return None


def prototype_claim(agg: pd.DataFrame, dataset: str, combinations: Sequence[str], *,
                    samples: pd.DataFrame | None = None, n_resamples: int = 1000, confidence: float = 0.95,
                    seed: int = 0, cnn: str = BASELINES) -> str:
    """One sentence: does "linear prototypes do not represent the data" hold (docs/METHOD.md, section 6)?

    Each linear head (the CNN's fc in the pseudo-combination ``cnn``, the raw pooled deepest-block
    space; each combination's probe, in its z_S) is compared with the matched-capacity reference of
    its own space, the class means (one prototype per class, k-means at H = 1), on the separation
    proximity (:data:`CLAIM_METRIC`: distance to the data in units of the distance to the nearest
    prototype of another class; scale-free, and no reading can shrink it to 0). The head is read at
    its canonical reading, or as stored where that reading is undefined; the sentence says which. The
    difference linear - class means gets the interval that resamples seeds, then prototypes
    (:func:`~kmx_eval.report.stats.prototype_difference`): the claim holds for a head when the interval
    lies above 0, fails when below, and is within the noise otherwise; each clause gives the seed
    spread of the difference. Needs the per-prototype values of ``samples``.
    """
    bootstrap = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)
    heads = [(cnn, "the CNN's fc", "linear")] + [(c, f"the {c} probe", "probe") for c in combinations if c != cnn]
    clauses = [c for comb, name, linear in heads
               if (c := _head_clause(agg, samples, dataset=dataset, combination=comb, name=name, linear=linear,
                                     bootstrap=bootstrap)) is not None]
    if not clauses:
        return (f"{dataset}: no linear head has per-prototype separation values beside the class means of its "
                f"space, so the claim that linear prototypes do not represent the data is not tested here.")
    counts = {v: sum(c[0] == v for c in clauses) for v in ("holds", "fails", "within the noise")}
    if counts["holds"] == len(clauses):
        verdict = "holds for every linear head"
    elif counts["fails"] == len(clauses):
        verdict = "fails for every linear head"
    else:
        verdict = (f"holds for {counts['holds']} of {len(clauses)} linear heads, fails for {counts['fails']} "
                   f"and is within the noise for {counts['within the noise']}")
    return (f"{dataset}: the claim that linear prototypes do not represent the data {verdict} (separation: "
            f"distance to the nearest training embedding over the distance to the nearest prototype of another "
            f"class, lower is closer to the data; each linear head against the class means of its own space, "
            f"k-means at one prototype per class; difference linear - class means with an interval over seeds "
            f"and prototypes: {'; '.join(c[1] for c in clauses)}).")


def prototype_claims(agg: pd.DataFrame, datasets: Sequence[str], combinations: Sequence[str], *,
                     samples: pd.DataFrame | None = None, n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict[str, str]:
    """:func:`prototype_claim` of every dataset, in the given order."""
    return {ds: prototype_claim(agg, ds, list(combinations), samples=samples, n_resamples=n_resamples,
                                confidence=confidence, seed=seed) for ds in datasets}


#: What a one-seed study's intervals leave out, said beside its sentences (docs/METHOD.md, section 7:
#: another seed, or another CPU's kernels in native mode, trains other weights).
ONE_SEED_NOTE = ("One training seed: the intervals above resample the test images only and leave training "
                 "variation out, so another seed (or another CPU's kernels) can move these verdicts; the "
                 "thorough profile resamples three seeds.")


def summary_markdown(title: str, sentences: dict[str, str], claims: dict[str, str], *,
                     platform: str | None = None, n_seeds: int | None = None) -> str:
    """The generated sentences of the report as Markdown (``reports/summary.md``): per dataset, the
    trade-off headline and the prototype-fidelity claim, exactly as the HTML shows them, so that
    a results folder can quote them without the HTML; ``platform`` (one line, see
    :func:`kmx_eval.numerics.describe`) says where the numbers were made, and with ``n_seeds`` 1
    each dataset's sentences say that their interval leaves training variation out
    (:data:`ONE_SEED_NOTE`). No commit or date: the same numbers give the same bytes (dvc.lock
    pins the code)."""
    lines = [f"# {title}", "", "Generated by the report stage from the study's numbers; the tables "
             "beside this file hold them.", ""]
    if platform:
        lines += [f"Made on: {platform}.", ""]
    for ds in sentences:
        lines += [f"## {ds}", "", sentences[ds], ""]
        if claims.get(ds):
            lines += [claims[ds], ""]
        if n_seeds == 1:
            lines += [ONE_SEED_NOTE, ""]
    return "\n".join(lines)
