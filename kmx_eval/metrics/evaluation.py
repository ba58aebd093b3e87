"""Assemble the ``evaluate`` stage's tables from arrays: heads, prototypes, explainers, concepts.

The stage (``stages/evaluate.py``) loads files and builds models; everything it computes goes
through :class:`EvaluationTables`, whose methods take arrays and append tidy rows
(:mod:`~kmx_eval.metrics.tidy`), per-sample scores and pixel-flipping curves. Each per-sample
vector gets its mean and an interval over the samples of its seed (docs/METHOD.md, section 6,
"Intervals"): a seeded percentile bootstrap (:func:`~kmx_eval.metrics.bootstrap.bootstrap_ci`,
seeded by the training seed), or for a proportion (:func:`is_proportion`: accuracy, agreement,
decision agreement, purity, PointingGame) the Wilson interval, which does not collapse to [1, 1]
at 100%. Per-prototype vectors (proximity, separation, purity, both diversities) are summarised over
prototypes.
Nothing is silently zero: a value that cannot be computed is NaN with a note.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kmx_eval.metrics import concept_fidelity as cf
from kmx_eval.metrics import interventions as iv
from kmx_eval.metrics import parts as kp
from kmx_eval.metrics import prototype_fidelity as pf
from kmx_eval.metrics import sharpness as sh
from kmx_eval.metrics import tidy
from kmx_eval.metrics.accuracy import accuracy, agreement
from kmx_eval.metrics.ceilings import cached_ceilings
from kmx_eval.metrics.faithfulness import refused_count
from kmx_eval.metrics.quantus import (NO_MASKS, QUANTUS_METRICS, Category, Invariance, QuantusRun,
                                      QuantusSettings, affine_equivalent, run_quantus)
from kmx_eval.metrics.tidy import PROTOTYPE_METRICS

log = logging.getLogger("kmx_eval")

NO_PARTS = "not applicable: dataset has no part maps or masks"
#: The prototype metrics with one value per prototype (the rest, decision agreement, has one per test
#: sample): their values go to ``samples.csv`` with the prototype's index as ``sample``, and across
#: seeds the report resamples seeds, then prototypes within each seed (:func:`is_per_prototype`).
PER_PROTOTYPE_METRICS = frozenset(m for m in PROTOTYPE_METRICS if m != "decision_agreement")
#: Suffix of the method name of a linear head's canonical reading (``probe_canonical``,
#: :func:`~kmx_eval.metrics.prototype_fidelity.canonical_linear_reading`).
CANONICAL = "_canonical"
#: The matched-capacity reference: one prototype per class, the class mean (= k-means at one
#: prototype per class), in the space of the linear heads it is compared with (:func:`class_means_set`).
CLASS_MEANS = "class_means"
CONCEPT_METRICS = tuple(f"concept_{score}_{region}" for region in ("object", "image")
                        for score in cf.SCORES)
#: What each structured concept floor is, at the front of its rows' notes.
FLOOR_NOTES = {"floor_colour": "k-means on each image's pixel colours",
               "floor_slic": "SLIC superpixels (about K segments)",
               "floor_grid": "K equal grid cells"}
#: (kind, metric) of the rows whose values are proportions (Wilson intervals): 0/1 outcomes per
#: sample, and purity@m (a share k_j / m per prototype). Quantus metrics declare it in their spec
#: (``QuantusSpec.proportion``).
PROPORTION_METRICS = frozenset({("head", "accuracy"), ("head", "agreement"),
                                ("prototypes", "purity"), ("prototypes", "decision_agreement"),
                                ("interventions", "background_agreement")})


def is_per_prototype(kind: str, metric: str) -> bool:
    """True for the prototype metrics with one value per prototype (:data:`PER_PROTOTYPE_METRICS`).

    Their prototypes differ between seeds, so the report's interval across seeds resamples seeds and
    then prototypes within each (:func:`~kmx_eval.metrics.bootstrap.hierarchical_bootstrap_ci`).
    """
    return kind == "prototypes" and metric in PER_PROTOTYPE_METRICS


def is_proportion(kind: str, metric: str) -> bool:
    """True when the rows of ``kind``/``metric`` are proportions and get Wilson intervals.

    Accuracy, agreement, decision agreement and purity (:data:`PROPORTION_METRICS`), and an
    explainer metric whose :class:`~kmx_eval.metrics.quantus.QuantusSpec` declares
    ``proportion=True`` (PointingGame). Used for the per-seed rows
    (:func:`~kmx_eval.metrics.tidy.summary_row`) and across seeds by the report
    (:func:`kmx_eval.report.stats.aggregate_seeds`).
    """
    if (kind, metric) in PROPORTION_METRICS:
        return True
    return kind == "explainer" and metric in QUANTUS_METRICS and QUANTUS_METRICS.get(metric).proportion


@dataclass
class PrototypeSet:
    """Prototypes in the space z_S and the head they belong to.

    Attributes
    ----------
    prototypes : (P, D) array
    classes : (P,) array, class index of each prototype
    decisions : (n_test,) array, the head's own decisions on the test embeddings (for decision
        agreement with the nearest-prototype rule without offsets)
    linear : bool
        The rows ``w_c`` of a linear head (the CNN's fc, a probe): read also at the canonical reading
        (:meth:`EvaluationTables.add_prototypes`), which needs ``bias``.
    space : (z_train, z_test) arrays, optional
        The embeddings of the space these prototypes live in, when it is not the table's z_S (the
        KMEx reference head lives in the raw pooled embeddings of the deepest block); proximity,
        purity and decision agreement are then measured there.
    space_note : str
        Says which space that is, in the rows' notes.
    bias : (P,) array, optional
        The biases ``b_c`` of a linear head.
    note : str
        What the set is, at the front of its rows' notes (the class-mean reference says so).
    """

    prototypes: np.ndarray
    classes: np.ndarray
    decisions: np.ndarray
    linear: bool = False
    bias: np.ndarray | None = None
    space: tuple[np.ndarray, np.ndarray] | None = None
    space_note: str = ""
    note: str = ""


def linear_prototype_set(head, decisions) -> PrototypeSet:
    """The rows ``w_c`` and biases ``b_c`` of a linear head (``LinearSEM``, ``LinearProbe``) as a linear
    :class:`PrototypeSet`, with the head's own ``decisions`` on the test embeddings."""
    return PrototypeSet(head.prototypes_, head.classes_, np.asarray(decisions), linear=True, bias=head.bias_)


def class_means_set(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, classes) -> PrototypeSet:
    """The matched-capacity reference (docs/METHOD.md, sections 4 and 6): one prototype per class, the
    mean of its training embeddings in the space ``z_train`` of the linear heads it is compared with.

    It is k-means at one prototype per class (the one-cluster optimum is the mean; tested against
    ``KMeansHead(n_prototypes=1)``), so no fit is needed. Its decisions are its own nearest-mean rule
    on ``z_test`` (decision agreement 1 by construction).
    """
    classes = np.asarray(classes).ravel()
    means = pf.class_mean_prototypes(z_train, y_train, classes=classes)
    return PrototypeSet(means, classes, pf.nearest_prototype_decisions(z_test, means, classes),
                        note="class means (k-means at one prototype per class)")


def kmeans_prototype_set(prototypes: np.ndarray, n_distinct: np.ndarray | None, decisions,
                         classes=None) -> PrototypeSet:
    """Flatten ``KMeansHead.prototypes_`` (C, H, D) into a :class:`PrototypeSet`.

    Only the first ``n_distinct[c]`` prototypes of class c are kept: a class with too few
    distinct training embeddings repeats them to fill H rows, and a repeat is not a prototype
    (it would count twice in proximity and purity and collapse diversity). ``classes`` are the
    labels of the C rows (``KMeansHead.classes_``; default ``0..C-1``).
    """
    protos = np.asarray(prototypes, dtype=np.float64)
    C, H, _ = protos.shape
    labels = np.arange(C) if classes is None else np.asarray(classes)
    keep = np.full(C, H) if n_distinct is None else np.minimum(np.asarray(n_distinct), H)
    rows, proto_classes = [], []
    for c in range(C):
        rows.append(protos[c, : keep[c]])
        proto_classes.extend([labels[c]] * int(keep[c]))
    return PrototypeSet(np.concatenate(rows), np.asarray(proto_classes), np.asarray(decisions))


def kmex_reference_set(head, z_train: np.ndarray, z_test: np.ndarray) -> PrototypeSet:
    """The prototypes of KMEx's reference head (:mod:`kmx_eval.heads.kmex`) with their own space.

    ``z_train``, ``z_test`` are the raw pooled embeddings of the deepest block, which that head was
    fitted on; its proximity, purity and decision agreement are measured there, not in the table's
    z_S (docs/METHOD.md, section 4). Its decisions are the head's own on ``z_test``.
    """
    ps = kmeans_prototype_set(head.prototypes_, head.n_prototypes_per_class_, head.predict(z_test),
                              classes=head.classes_)
    return replace(ps, space=(np.asarray(z_train), np.asarray(z_test)),
                   space_note="the raw pooled embeddings of the deepest block (KMEx's space)")


def summary_metrics(fidelity_metric: str, computed: list[str]) -> tuple[str, ...]:
    """The explainer metric of the DVC metrics file ``evaluate.json`` (:meth:`EvaluationTables.summary`):
    the report's ``fidelity_metric`` (docs/METHOD.md, section 5, the trade-off's y axis) where
    ``computed`` (``evaluate.quantus``) has it. DVC's metrics hold the key numbers; every other metric
    stays in ``metrics.csv`` and the report's tables (``dvc metrics show`` prints one column per key)."""
    return (fidelity_metric,) if fidelity_metric in computed else ()


@dataclass
class EvaluationTables:
    """Rows of ``metrics.csv``, ``samples.csv`` and ``curves.csv`` for one dataset x combination.

    Parameters
    ----------
    dataset, combination : str
    n_resamples, confidence : bootstrap settings (``params.evaluate.bootstrap``)
    """

    dataset: str
    combination: str
    n_resamples: int
    confidence: float
    rows: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    #: (seed, method) -> maps already scored, and (seed, method, metric) -> their results, so that
    #: maps equal up to a per-image positive affine change share them (:meth:`add_explainer`).
    _maps: dict[tuple[int, str], np.ndarray] = field(default_factory=dict, repr=False)
    _results: dict[tuple[int, str, str], tuple] = field(default_factory=dict, repr=False)
    shared: dict[str, str] = field(default_factory=dict)
    #: (seed, n_concepts) -> the structured concept floors of the evaluated images
    #: (:func:`~kmx_eval.metrics.concept_fidelity.floor_maps`), shared by the concept and keypoint rows.
    _floors: dict[tuple[int, int], dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ helpers
    def _keys(self, seed: int) -> dict[str, Any]:
        return {"dataset": self.dataset, "seed": int(seed), "combination": self.combination}

    def _summary(self, seed: int, values, reasons=None, **keys) -> dict:
        """Append the :func:`~kmx_eval.metrics.tidy.summary_row` of ``values``: a Wilson interval
        where :func:`is_proportion` says so, else the bootstrap seeded by the training seed."""
        row = tidy.summary_row(values, reasons=reasons, n_resamples=self.n_resamples,
                               confidence=self.confidence, bootstrap_seed=seed,
                               proportion=is_proportion(keys["kind"], keys["metric"]),
                               **self._keys(seed), **keys)
        self.rows.append(row)
        return row

    def _floor_maps(self, seed: int, images: np.ndarray, n_concepts: int) -> dict[str, np.ndarray]:
        """The structured concept floors of ``images`` with ``n_concepts`` labels, computed once per seed."""
        key = (int(seed), int(n_concepts))
        if key not in self._floors:
            self._floors[key] = cf.floor_maps(images, n_concepts, seed=seed)
        return self._floors[key]

    def _samples(self, seed: int, method: str, metric: str, values, reasons, sample_ids) -> None:
        reasons = list(reasons) if reasons is not None else [None] * len(values)
        self.samples.extend(tidy.sample_rows(values, reasons, sample_ids, **self._keys(seed),
                                             method=method, metric=metric))

    # ------------------------------------------------------------------ heads
    def add_heads(self, seed: int, predictions: Mapping[str, np.ndarray], *, labels: np.ndarray,
                  cnn_predictions: np.ndarray | None, sample_ids: np.ndarray) -> None:
        """Accuracy ``[yhat_i = y_i]`` of each head and its agreement ``[yhat_i = yhat_i^CNN]``.

        Both are proportions with Wilson intervals (:func:`is_proportion`). ``predictions`` maps a
        head name (``kmeans``, ``probe``, ``cnn``) to its test-split decisions; agreement is skipped
        for ``cnn`` itself or when ``cnn_predictions`` is None.
        """
        for method, pred in predictions.items():
            acc = accuracy(pred, labels)
            self._summary(seed, acc, kind="head", method=method, category="accuracy", metric="accuracy",
                          higher_is_better=True)
            self._samples(seed, method, "accuracy", acc, None, sample_ids)
            if cnn_predictions is not None and method != "cnn":
                agr = agreement(pred, cnn_predictions)
                self._summary(seed, agr, kind="head", method=method, category="agreement",
                              metric="agreement", higher_is_better=True,
                              note="agreement with the original CNN's predictions")
                self._samples(seed, method, "agreement", agr, None, sample_ids)

    # ------------------------------------------------------------------ prototypes
    def add_prototypes(self, seed: int, sets: Mapping[str, PrototypeSet], *, z_train: np.ndarray,
                       y_train: np.ndarray, z_test: np.ndarray, purity_m: int,
                       sample_ids: np.ndarray | None = None) -> None:
        """Prototype fidelity (docs/METHOD.md, sections 4 and 6) of each prototype set in z_S.

        Proximity, separation and the two diversities are bootstrapped over prototypes; purity@m, a
        share ``k_j / m`` per prototype, gets the Wilson interval at the number of prototypes
        (conservative, see :func:`~kmx_eval.metrics.tidy.summary_row`); decision agreement, 0/1 per
        test sample, the Wilson interval over test samples. Per-sample and per-prototype values go to
        ``samples.csv`` (decision agreement under ``sample_ids``, positions of ``z_test`` in the test
        split, default ``0..n_test-1``; per-prototype metrics under the prototype's index) so that the
        report can resample images, or seeds and then prototypes, across seeds. Purity is measured
        against the ground-truth labels ``y_train`` for every head, and its chance column is
        ``mean_p share_{c(p)}`` (``share_c`` = share of class c in the training split): the purity
        of prototypes whose neighbourhoods ignore the classes.

        A linear set (``PrototypeSet.linear``, the rows ``w_c`` of a linear head) is reported twice:
        under its own name as stored (``alpha = 1, v = 0``: its proximity and decision agreement depend
        on that arbitrary representative, as the note says), and as ``{name}_canonical`` at the
        canonical reading (:func:`~kmx_eval.metrics.prototype_fidelity.canonical_linear_reading`, fixed
        by the class means of its space, no search; every number of it is invariant to the head's
        ``alpha``, ``v`` and ``beta``). Its purity ranks training embeddings by the centred logit
        (:func:`~kmx_eval.metrics.prototype_fidelity.linear_class_purities`), the same in both readings.
        The separation proximity (:func:`~kmx_eval.metrics.prototype_fidelity.separation_proximities`)
        is scale-free and cannot reach 0 by shrinking a reading. The matched-capacity reference, the
        class means (:func:`class_means_set`), is one of ``sets`` where the caller builds it.

        Each set is measured in the embeddings of its own space: ``z_train``/``z_test`` (z_S),
        or ``PrototypeSet.space`` where given (the KMEx reference head, :func:`kmex_reference_set`).
        """
        m = int(min(purity_m, len(z_train)))
        ids = np.arange(len(z_test)) if sample_ids is None else np.asarray(sample_ids)
        share = np.bincount(np.asarray(y_train), minlength=1) / len(y_train)
        self.settings["purity_m"] = m
        for method, ps in sets.items():
            t0 = time.perf_counter()
            where = f" in {ps.space_note}" if ps.space_note else ""
            proto_note = (f"{ps.note}; " if ps.note else "") + f"{len(ps.prototypes)} prototypes{where}"
            zt, zs = ps.space if ps.space is not None else (z_train, z_test)
            common = dict(seed=seed, ps=ps, z_train=zt, z_test=zs, sample_ids=ids,
                          chance=float(np.mean(share[np.clip(ps.classes, 0, len(share) - 1)])))
            if not ps.linear:
                purity = pf.class_purities(ps.prototypes, ps.classes, zt, y_train, m=m)
                self._prototype_rows(method=method, prototypes=ps.prototypes, purity=purity, proto_note=proto_note,
                                     purity_note=f"m = {m} nearest training embeddings", reading="", **common)
                self.seconds[f"prototypes/{method}"] += time.perf_counter() - t0
                continue
            purity = pf.linear_class_purities(ps.prototypes, zt, y_train, m=m, classes=ps.classes)
            ranked = f"m = {m} training embeddings with the highest centred logit <w_c - wbar, z>"
            self._prototype_rows(method=method, prototypes=ps.prototypes, purity=purity, proto_note=proto_note,
                                 purity_note=ranked, reading="reading alpha = 1, v = 0 (as stored)", **common)
            self._canonical_rows(method=method, purity=purity, y_train=y_train, proto_note=proto_note,
                                 purity_note=ranked, **common)
            self.seconds[f"prototypes/{method}"] += time.perf_counter() - t0

    def _canonical_rows(self, *, seed, method, ps, purity, z_train, z_test, y_train, chance, proto_note,
                        purity_note, sample_ids) -> None:
        """The rows ``{method}_canonical`` of a linear set: its canonical reading, or rows that say why
        there is none (the class means lie opposite to the rows, or all rows are equal)."""
        if ps.bias is None:
            raise ValueError(f"linear prototype set {method!r} has no bias: the canonical reading needs b_c")
        means = pf.class_mean_prototypes(z_train, y_train, classes=ps.classes)
        reading = pf.canonical_linear_reading(ps.prototypes, ps.bias, means)
        self.settings.setdefault("canonical_readings", {})[method] = {
            "scale": reading.scale, "exact": reading.exact,
            "stored_weight_norm": float(np.linalg.norm(ps.prototypes))}
        name = f"{method}{CANONICAL}"
        if not np.isfinite(reading.prototypes).all():
            self.add_not_applicable(seed, "prototypes", name,
                                    {k: ("prototype_fidelity", h) for k, h in PROTOTYPE_METRICS.items()},
                                    "undefined: no positive scale fits the class means (they lie opposite "
                                    "to the rows, or the rows are all equal)")
            return
        exact = "" if reading.exact else ", least squares: the rows are not affinely independent"
        self._prototype_rows(seed=seed, method=name, prototypes=reading.prototypes, ps=ps, purity=purity,
                             z_train=z_train, z_test=z_test, chance=chance, proto_note=proto_note,
                             purity_note=purity_note, sample_ids=sample_ids,
                             reading=("canonical reading: the offset-free nearest-prototype rule closest to "
                                      f"the class means (scale a = {reading.scale:.4g}{exact})"))

    def _prototype_rows(self, *, seed, method, prototypes, ps, purity, z_train, z_test, chance,
                        proto_note, purity_note, reading, sample_ids) -> None:
        prefix = f"{reading}; " if reading else ""
        values = {
            "proximity": pf.proximity_ratios(prototypes, z_train, "euclidean"),
            "separation": pf.separation_proximities(prototypes, ps.classes, z_train),
            "purity": purity,
            "diversity_scaled": pf.diversity_scaled_per_prototype(prototypes),
            "diversity_kmex": pf.diversity_kmex_per_prototype(prototypes),
        }
        notes = {"proximity": prefix + proto_note,
                 "separation": (f"{prefix}{proto_note}; distance to the nearest training embedding over the "
                                "distance to the nearest prototype of another class: scale-free"),
                 "purity": f"{proto_note}; {purity_note}",
                 "diversity_scaled": (f"{proto_note}; scale-free" if len(prototypes) >= 3
                                      else "undefined for fewer than 3 prototypes"),
                 "diversity_kmex": (f"{prefix}{proto_note}; KMEx's formula (utils/evaluation.py, diversity) "
                                    "on exact distances: depends on the scale of the space")}
        if np.isnan(values["proximity"]).all():
            notes["proximity"] = "undefined: the median nearest-neighbour distance among training embeddings is 0"
        if np.isnan(values["separation"]).all():
            notes["separation"] = "undefined: no two prototypes of different classes lie apart"
        prototype_ids = np.arange(len(prototypes))
        for metric, v in values.items():
            self._summary(seed, v, kind="prototypes", method=method, category="prototype_fidelity",
                          metric=metric, higher_is_better=PROTOTYPE_METRICS[metric], note=notes[metric],
                          chance=chance if metric == "purity" else None)
            self._samples(seed, method, metric, v, None, prototype_ids)
        agree = pf.decision_agreement(z_test, prototypes, ps.classes, ps.decisions)
        self._summary(seed, agree, kind="prototypes", method=method, category="prototype_fidelity",
                      metric="decision_agreement", higher_is_better=True,
                      note=prefix + "nearest prototype without offsets versus the head's decision")
        self._samples(seed, method, "decision_agreement", agree, None, sample_ids)

    def add_not_applicable(self, seed: int, kind: str, method: str,
                           metrics: Mapping[str, tuple[str, bool]], note: str) -> None:
        """Rows with no value and ``note`` (which says why) for ``{metric: (category, higher_is_better)}``.

        For what does not exist for this model (the linear prototypes of a classifier that is not
        GAP + one linear layer, CAM there): the table shows the reason instead of a number
        computed for something else under the same name.
        """
        for metric, (category, higher) in metrics.items():
            self.rows.append(tidy.row(**self._keys(seed), kind=kind, method=method, category=category,
                                      metric=metric, value=None, higher_is_better=higher, note=note))

    # ------------------------------------------------------------------ explainers
    def add_explainer(self, seed: int, method: str, model, *, x: np.ndarray, y: np.ndarray, a: np.ndarray,
                      masks: np.ndarray | None, metrics: list[str], settings: QuantusSettings, device,
                      sample_ids: np.ndarray, explain_func: Callable | None = None,
                      n_classes: int | None = None, progress: bool = True,
                      equivalent_to: str | None = None, grid: tuple[int, int] | None = None) -> None:
        """Every Quantus metric of ``metrics`` on one explainer's maps ``a`` (n, H, W).

        ``grid``: the grid the maps live on (:func:`kmx_eval.pipeline.evaluate.map_grid`), whose cells
        SymmetricMoRFLeRF and ROAD perturb. Samples a faithfulness metric refuses (a span or a
        response too small to normalise, :mod:`kmx_eval.metrics.faithfulness`) are counted per
        metric and map in ``settings["refused"]`` (this model's ``settings.json``).

        Localisation metrics on a dataset without masks give rows with value NaN and the note
        ``"not applicable: dataset has no masks"``; the chance column holds the mean chance level
        over the scored samples (mask share, or 0.5 for AUC).

        No duplicated work: when ``a`` equals the maps of an explainer already scored on this seed
        (and so on the same model and images) up to a per-image positive affine change
        (:func:`~kmx_eval.metrics.quantus.affine_equivalent`; ``margin`` and ``margin_centred``),
        every metric invariant to ``MAP_SHIFT`` and ``MAP_SCALE`` that reads only the stored maps
        reuses that explainer's per-sample results, and the rows say so in their note. Metrics that
        re-explain inputs (``needs_explain_func``) share only with the explainer named by
        ``equivalent_to``, whose equivalence holds by construction for every model and target
        (``Explainer.affine_equivalent_to``).
        """
        twin = next((m for (s, m), b in self._maps.items() if s == seed and affine_equivalent(b, a)), None)
        self._maps[(seed, method)] = np.asarray(a)
        if twin is not None:
            self.shared[method] = twin
        for name in tqdm(list(metrics), desc=f"evaluate {method}", disable=not progress, leave=False):
            spec = QUANTUS_METRICS.get(name, where="evaluate.quantus")
            reuse = (twin is not None and (not spec.needs_explain_func or twin == equivalent_to)
                     and spec.invariant_to(Invariance.MAP_SHIFT, Invariance.MAP_SCALE)
                     and (seed, twin, name) in self._results)
            if reuse:
                scores, reasons, run = self._results[(seed, twin, name)]
                share_note = f"computed once for {twin} (maps equal up to a per-image positive affine change)"
            else:
                scores, reasons, run = run_quantus(name, model, x, y, a, masks, settings=settings, seed=seed,
                                                   device=device, explain_func=explain_func, n_classes=n_classes,
                                                   grid=grid)
                self._results[(seed, method, name)] = (scores, reasons, run)
                self.seconds[name] += run.seconds
                self.seconds[f"explainer/{method}"] += run.seconds
                share_note = ""
                settings_out = dict(run.settings)
                settings_out["invariances"] = sorted(spec.invariances_with(settings.softmax))
                self.settings.setdefault("quantus", {})[name] = settings_out
                if spec.category is Category.FAITHFULNESS:
                    self.settings.setdefault("refused", {}).setdefault(name, {})[method] = refused_count(reasons)
            self._quantus_rows(seed, method, name, (scores, reasons, run), note=share_note, sample_ids=sample_ids)

    def _quantus_rows(self, seed: int, method: str, name: str,
                      result: tuple[np.ndarray, list[str | None], QuantusRun], *, note: str,
                      sample_ids: np.ndarray) -> None:
        """The summary row, per-sample scores and mean curve of one Quantus metric on one explainer."""
        scores, reasons, run = result
        spec = QUANTUS_METRICS.get(name)
        keys = dict(kind="explainer", method=method, category=spec.category.value, metric=name,
                    higher_is_better=spec.higher_is_better)
        scored = np.isfinite(scores)
        if run.chance is not None and scored.any():
            chance_value = float(np.mean(np.asarray(run.chance)[scored]))
        else:
            chance_value = spec.chance_without_masks
        if all(r == NO_MASKS for r in reasons):
            self.rows.append(tidy.row(**self._keys(seed), value=None, n=0, n_missing=len(scores),
                                      chance=chance_value, note=NO_MASKS, **keys))
        else:
            self._summary(seed, scores, reasons, chance=chance_value, note=note, **keys)
        self._samples(seed, method, name, scores, reasons, sample_ids)
        if run.curves is not None and np.isfinite(run.curves).any():
            mean_curve = np.nanmean(run.curves, axis=0)
            self.curves.extend(tidy.curve_rows(run.fractions, mean_curve, **self._keys(seed), method=method))
        missing = int(np.isnan(scores).sum())
        if missing == len(scores) and not all(r == NO_MASKS for r in reasons):
            log.warning("%s %s seed %d: %s scored no sample (%s)", self.combination, method, seed,
                        name, tidy.missing_note(reasons))

    # ------------------------------------------------------------------ concepts
    def add_concepts(self, seed: int, concepts: Mapping[str, np.ndarray], *, parts: np.ndarray | None,
                     masks: np.ndarray | None, sample_ids: np.ndarray,
                     grid: tuple[int, int] | None = None, images: np.ndarray | None = None,
                     n_concepts: int | None = None) -> None:
        """Concept purity, ARI, NMI and AMI of each set of concept maps against part maps (or the mask).

        ``concepts`` maps a method name (``concepts_global``, ``concepts_class``) to its maps
        (n, H, W). Each metric is computed inside the object mask (``concept_{metric}_object``) and
        over the whole image (``concept_{metric}_image``), beside its chance level (the chance
        column: the mean score of the same maps with ids shuffled over the scored pixels,
        :func:`~kmx_eval.metrics.concept_fidelity.shuffled_concept_maps`). With ``grid``, the
        ``oracle`` rows hold the grid ceiling: the part map averaged onto that grid
        (:func:`~kmx_eval.metrics.concept_fidelity.grid_ceiling_maps`). With ``images`` (normalised,
        (n, 3, H, W)) and ``n_concepts`` (the study's K), the structured floors
        (:data:`~kmx_eval.metrics.concept_fidelity.CONCEPT_FLOORS`: colour k-means, SLIC, grid cells,
        each with K labels) are rows beside them. Invariance: every number is unchanged when concept
        ids are renamed (tested).
        """
        source = "parts" if parts is not None else "mask" if masks is not None else None
        maps = dict(concepts)
        if source is None:
            for method in maps:
                for metric in CONCEPT_METRICS:
                    self.rows.append(tidy.row(**self._keys(seed), kind="concepts", method=method,
                                              category="concept_fidelity", metric=metric, value=None,
                                              n=0, n_missing=len(maps[method]), note=NO_PARTS))
            return
        t0 = time.perf_counter()
        part_map = np.asarray(parts if parts is not None else cf.part_map_from_mask(masks)).astype(np.int64)
        obj = (np.asarray(masks) > 0) if masks is not None else part_map > 0
        # The ceiling inside the object ignores the background when it picks each cell's part.
        oracle = {} if grid is None else {
            "object": cf.grid_ceiling_maps(part_map, grid, ignore_background=True),
            "image": cf.grid_ceiling_maps(part_map, grid)}
        if oracle:
            maps["oracle"] = oracle["image"]
        if images is not None and n_concepts is not None:
            maps.update(self._floor_maps(seed, images, n_concepts))
        regions = {"object": (obj, "inside the object mask"), "image": (None, "over the whole image")}
        for method, method_map in maps.items():
            for region, (mask, where) in regions.items():
                cmap = oracle[region] if method == "oracle" else method_map
                values = cf.concept_scores(cmap, part_map, mask)
                # A floor is itself a reference: no shuffled chance for it (half of its cost).
                chance = None if method in FLOOR_NOTES else cf.shuffled_chance(cmap, part_map, mask, seed=seed)
                trivial = cf.trivial_part_maps(part_map, mask)
                reason = f"a single {'part' if source == 'parts' else 'label'} {where}"
                what = ("ground-truth part map averaged onto the F_S grid (ceiling); " if method == "oracle"
                        else f"{FLOOR_NOTES[method]}, K = {n_concepts} (floor); " if method in FLOOR_NOTES
                        else "")
                for score, v in values.items():
                    metric = f"concept_{score}_{region}"
                    reasons = [reason if (t and np.isnan(x)) else None for t, x in zip(trivial, v)]
                    ok = np.isfinite(chance[score]) if chance is not None else np.zeros(len(v), bool)
                    self._summary(seed, v, reasons, kind="concepts", method=method,
                                  category="concept_fidelity", metric=metric, higher_is_better=True,
                                  note=f"{what}against {source}, {where}" + ("; chance: ids shuffled" if ok.any() else ""),
                                  chance=float(np.mean(chance[score][ok])) if ok.any() else None)
                    self._samples(seed, method, metric, v, reasons, sample_ids)
        self.seconds["concepts"] += time.perf_counter() - t0

    # ------------------------------------------------------------------ sharpness
    def add_sharpness(self, seed: int, maps: Mapping[str, np.ndarray], *, grid: tuple[int, int],
                      masks: np.ndarray | None, parts: np.ndarray | None, sample_ids: np.ndarray) -> None:
        """Sharpness of each explainer's maps (n, H, W) beyond ``grid``, the study's coarsest (B4's):
        every score of :func:`~kmx_eval.metrics.sharpness.sharpness_scores` beside its coarse twin's
        (kind and category ``sharpness``, docs/METHOD.md section 6). Maps and masks only, no model
        call. Mask scores are rows of :data:`NO_MASKS` without masks; part scores need part maps."""
        t0 = time.perf_counter()
        regions = sh.part_regions(parts) if parts is not None else None
        chances = {"mass_in_mask": None if masks is None else (np.asarray(masks) > 0).mean(axis=(1, 2)),
                   "part_pointing": None if regions is None else regions.chance()}
        for method, a in maps.items():
            scores = sh.sharpness_scores(a, grid=grid, masks=masks, regions=regions)
            why = sh.missing_reasons(a, masks=masks, regions=regions)
            for metric, higher in sh.SHARPNESS_METRICS.items():
                keys = dict(kind="sharpness", method=method, category="sharpness", metric=metric,
                            higher_is_better=higher)
                needs = "parts" if metric.startswith("part_") else "map" if metric.startswith("fine_") else "mask"
                if metric not in scores:
                    note = NO_MASKS if needs == "mask" else "not applicable: dataset has no part maps"
                    self.rows.append(tidy.row(**self._keys(seed), value=None, n=0, n_missing=len(a),
                                              note=note, **keys))
                    continue
                v = scores[metric]
                chance = chances.get(metric.removesuffix("_coarse"))
                ok = np.isfinite(v)
                self._summary(seed, v, why[needs], note=f"coarse grid {grid[0]}x{grid[1]}",
                              chance=float(np.mean(chance[ok])) if chance is not None and ok.any() else None,
                              **keys)
                self._samples(seed, method, metric, v, why[needs], sample_ids)
        self.seconds["sharpness"] += time.perf_counter() - t0

    # ------------------------------------------------------------------ interventions
    def add_interventions(self, seed: int, maps: Mapping[str, np.ndarray], *, model_name: str,
                          outputs: "iv.InterventionOutputs | None", parts: np.ndarray | None,
                          targets: np.ndarray, sample_ids: np.ndarray, why_not: str = "") -> None:
        """Faithfulness on part interventions (kind and category ``interventions``, docs/METHOD.md
        section 4): per explainer the part rank correlation and the part deletion curve
        (``part_deletion_r`` for r = 1..P, ``part_deletion_1`` the top-part drop), and for the model
        (``model_name``) its background agreement, from ``outputs`` of the model on the images and
        their copies (:func:`~kmx_eval.metrics.interventions.intervention_outputs`). Without
        ``outputs`` every row says ``why_not``."""
        n_parts = 0 if outputs is None else outputs.without_part.shape[1]
        map_metrics = {**{"part_rank_correlation": True},
                       **{f"part_deletion_{r}": True for r in range(1, n_parts + 1)}}
        if outputs is None or parts is None:
            for method in maps:
                self.add_not_applicable(seed, "interventions", method,
                                        {m: ("interventions", h) for m, h in iv.MAP_METRICS.items()}, why_not)
            self.add_not_applicable(seed, "interventions", model_name,
                                    {m: ("interventions", h) for m, h in iv.MODEL_METRICS.items()}, why_not)
            return
        t0 = time.perf_counter()
        drops = iv.part_drops(outputs.scores, outputs.without_part, targets)
        for method, a in maps.items():
            scored = iv.part_scores(a, parts, drops)
            values = {"part_rank_correlation": scored.rank_correlation,
                      **{f"part_deletion_{r + 1}": scored.curve[:, r] for r in range(n_parts)}}
            for metric, v in values.items():
                keys = dict(kind="interventions", method=method, category="interventions", metric=metric,
                            higher_is_better=map_metrics[metric])
                chance = 0.0 if metric == "part_rank_correlation" else float(np.nanmean(scored.chance))
                self._summary(seed, v, scored.reasons, chance=chance, note=iv.NOTES[metric.rstrip("0123456789")],
                              **keys)
                self._samples(seed, method, metric, v, scored.reasons, sample_ids)
        agree = iv.background_agreement(outputs.scores, outputs.object_only)
        self._summary(seed, agree, kind="interventions", method=model_name, category="interventions",
                      metric="background_agreement", higher_is_better=True, note=iv.NOTES["background_agreement"])
        self._samples(seed, model_name, "background_agreement", agree, None, sample_ids)
        self.seconds["interventions"] += time.perf_counter() - t0

    # ------------------------------------------------------------------ keypoints
    def add_keypoints(self, seed: int, maps: Mapping[str, np.ndarray], *, keypoints: np.ndarray,
                      visible: np.ndarray, tolerance: float, grids: Mapping[str, tuple[int, int]],
                      sample_ids: np.ndarray, concepts: Mapping[str, np.ndarray] | None = None,
                      images: np.ndarray | None = None, n_concepts: int | None = None) -> None:
        """Part-level localisation against annotated part locations (kind ``keypoints``,
        docs/METHOD.md section 4, "Part locations"), for datasets with keypoints (CUB-200-2011).

        - ``keypoint_pointing`` (category ``localisation``) of each map of ``maps`` (n, H, W): a hit
          where a maximal pixel lies within ``tolerance`` pixels of a visible part
          (:func:`~kmx_eval.metrics.parts.part_pointing_game`), beside its chance (a uniformly drawn
          pixel); the controls among ``maps`` (``random_grid``, ``random``) are its floors, and the
          rows of ``grids`` (``ceiling`` on the explained grid, ``ceiling_pixel``:
          :func:`~kmx_eval.metrics.ceilings.ceiling_grids`) its ceilings: the pointing game is
          PointingGame against the keypoint discs, whose maximum over maps of a grid is searched there.
        - ``concept_part_ami`` (category ``concept_fidelity``) of each concept map set of ``concepts``
          and, with ``images`` and ``n_concepts``, of the structured floors: adjusted mutual
          information between the concept at each visible part and the part's name, over all images
          (chance 0, at most 1), with a bootstrap interval over images (no per-image value).

        Invariances: the pointing game reads only the order of each map's values (unchanged by a
        per-image ``s a + c``, ``s > 0``), the alignment only the partition (unchanged by renaming
        concept ids); tests/metrics/test_parts.py.
        """
        t0 = time.perf_counter()
        self.settings["keypoint_tolerance_px"] = float(tolerance)
        visible = np.asarray(visible, dtype=bool)
        n_visible = visible.sum(axis=1)
        shape = next(iter(maps.values())).shape[-2:] if maps else None
        note = f"a maximal pixel within {tolerance:.3g} px of a visible annotated part"
        if shape is not None:
            discs = kp.keypoint_masks(shape, keypoints, visible, tolerance=tolerance)
            chance = np.where(n_visible > 0, discs.mean(axis=(1, 2)), np.nan)  # a uniformly drawn pixel
            covered = discs.all(axis=(1, 2))
            for method, a in maps.items():
                v = kp.pointing_hits(a, discs, n_visible > 0)
                reasons = [None if np.isfinite(x) else "no visible part" if n == 0 else "constant or non-finite map"
                           for x, n in zip(v, n_visible)]
                ok = np.isfinite(v)
                self._summary(seed, v, reasons, kind="keypoints", method=method, category="localisation",
                              metric=kp.KEYPOINT_POINTING, higher_is_better=True, note=note,
                              chance=float(np.mean(chance[ok])) if ok.any() else None)
                self._samples(seed, method, kp.KEYPOINT_POINTING, v, reasons, sample_ids)
            for method, grid in grids.items():
                found = cached_ceilings(discs & ~covered[:, None, None], grid, ["PointingGame"], k=1)
                v = found["PointingGame"].values
                reasons = ["no visible part" if n == 0 else None for n in n_visible]
                v = np.where(covered, 1.0, v)  # the discs cover the image: every map hits
                where = "the pixels" if tuple(grid) == tuple(shape) else f"the {grid[0]} x {grid[1]} grid"
                self._summary(seed, v, reasons, kind="keypoints", method=method, category="localisation",
                              metric=kp.KEYPOINT_POINTING, higher_is_better=True,
                              note=f"ceiling: the pointing game's maximum over maps on {where}; {note}")
                self._samples(seed, method, kp.KEYPOINT_POINTING, v, reasons, sample_ids)
        sets = dict(concepts or {})
        if sets and images is not None and n_concepts is not None:
            sets.update(self._floor_maps(seed, images, n_concepts))
        for method, cmaps in sets.items():
            value, low, high = kp.concept_part_alignment_ci(cmaps, keypoints, visible, n_resamples=self.n_resamples,
                                                            confidence=self.confidence, seed=seed)
            what = (f"{FLOOR_NOTES[method]}, K = {n_concepts} (floor); " if method in FLOOR_NOTES else "")
            self.rows.append(tidy.row(
                **self._keys(seed), kind="keypoints", method=method, category="concept_fidelity",
                metric=kp.CONCEPT_PART_AMI, value=value, ci_low=low, ci_high=high, n=int(n_visible.sum()),
                n_missing=int((~visible).sum()), chance=0.0, higher_is_better=True,
                note=what + ("AMI between the concept at each visible part and the part's name, over all images; "
                             "interval: images resampled" if np.isfinite(value) else
                             "fewer than two visible parts in the evaluated images")))
        self.seconds["keypoints"] += time.perf_counter() - t0

    # ------------------------------------------------------------------ outputs
    def log_seconds(self) -> None:
        """Log where the time went, slowest first (the log only: timings are never in a file, whose
        bytes must not change between runs of the same params)."""
        for key, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            log.info("time %-28s %7.1f s", key, seconds)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """``(metrics, samples, curves)`` DataFrames, sorted and with their fixed columns."""
        return (tidy.frame(self.rows), tidy.samples_frame(self.samples), tidy.curves_frame(self.curves))

    def settings_file(self, evaluate: Any, seeds: list[int], n_images: int | None, normalisation: str,
                      head_labels: str) -> dict[str, Any]:
        """The contents of ``settings.json``: what every number of the tables was computed with.

        ``evaluate`` is ``params.evaluate`` (its softmax, bootstrap, faithfulness and top-k
        settings), ``n_images`` the evaluation subset's size, ``normalisation`` the features' as
        the caller describes it (the CNN's baselines always read the deepest block's ``z`` without
        one: :func:`kmx_eval.pipeline.evaluate.described_normalisation`), ``head_labels``
        ``params.head.labels``; then the settings the tables recorded while computing (the Quantus
        arguments each metric used, ``purity_m``...) and which explainers share another's results
        (:meth:`add_explainer`).
        """
        return {
            "n_images": n_images, "seeds": list(seeds), "softmax": evaluate.softmax,
            "bootstrap": evaluate.bootstrap.model_dump(), "faithfulness": evaluate.faithfulness.model_dump(),
            "top_k_fraction": evaluate.top_k_fraction,
            "normalisation": normalisation,
            "head_labels": head_labels, "shared_results": dict(sorted(self.shared.items())),
            **self.settings}

    def summary(self, explainer_metrics: tuple[str, ...] = ()) -> dict[str, dict[str, float]]:
        """Key numbers per seed for the DVC metrics file: ``{"seed0": {"kmeans/accuracy": ...}}``.

        Heads' accuracy and agreement, and for each explainer (its controls included) the metrics
        named in ``explainer_metrics`` (:func:`summary_metrics`); prototype and concept scores stay in
        ``metrics.csv``.
        """
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            keep = r["kind"] == "head" or (r["kind"] == "explainer" and r["metric"] in explainer_metrics)
            if keep:
                out.setdefault(f"seed{r['seed']}", {})[f"{r['method']}/{r['metric']}"] = r["value"]
        return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}
