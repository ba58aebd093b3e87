"""What the ``evaluate`` stage evaluates, loaded from the pipeline's files for one seed.

:func:`load_explained` rebuilds the explained model (the k-means head as an nn.Module, or the
CNN) with its heads' test decisions and prototype sets; :func:`evaluate_seed` runs every part of
:class:`~kmx_eval.metrics.evaluation.EvaluationTables` on it. Both take plain settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from kmx_eval import io, paths
from kmx_eval.data import has_keypoints, load_batch, load_keypoints, load_prepared
from kmx_eval.data.interventions import load_interventions
from kmx_eval.errors import DataError
from kmx_eval.explain import (EXPLAINERS, MAP_KEYS, applicable_explainers, explainer_names,
                              quantus_explain_funcs)
from kmx_eval.explain.concepts import is_concept_key
from kmx_eval.heads import (KMeansHeadModule, LinearSEM, load_checked_kmeans_head, load_kmeans_head,
                            load_linear_sem, load_probe)
from kmx_eval.heads.kmex import KMEX_HEAD_NAME, kmex_embeddings
from kmx_eval.explain.controls import explained_grid
from kmx_eval.metrics.ceilings import add_ceilings, ceiling_grids
from kmx_eval.metrics.evaluation import (CANONICAL, CLASS_MEANS, PROTOTYPE_METRICS, EvaluationTables,
                                         PrototypeSet, class_means_set, kmeans_prototype_set,
                                         kmex_reference_set, linear_prototype_set, summary_metrics)
from kmx_eval.metrics.faithfulness import OCCLUSION, map_grid
from kmx_eval.metrics.interventions import intervention_outputs
from kmx_eval.metrics.quantus import QUANTUS_METRICS, QuantusSettings
from kmx_eval.models.architectures import architecture_of, get_architecture
from kmx_eval.models.backbone import load_backbone
from kmx_eval.models.blocks import BlockStats
from kmx_eval.models.combination import Combination
from kmx_eval.models.embeddings import combination_embeddings
from kmx_eval.seeding import seed_everything

log = logging.getLogger("kmx_eval")



@dataclass
class Explained:
    """One explained model of one seed and what the tables need about it.

    Attributes
    ----------
    model : nn.Module
        The model the maps explain: a KMeansHeadModule (images -> k-means class scores) or the CNN.
    n_classes : int
    labels, cnn_predictions : (n_test,) arrays
    predictions : dict head name -> (n_test,) test decisions (``kmeans``, ``probe`` or ``cnn``)
    prototype_sets : dict name -> PrototypeSet, in the space z_S unless a set names its own
    z_train, y_train, z_test : embeddings for prototype fidelity
    prototype_notes : dict name -> why a prototype set does not exist ("not applicable: ...")
    """

    model: Any
    n_classes: int
    labels: np.ndarray
    cnn_predictions: np.ndarray | None
    predictions: dict[str, np.ndarray]
    prototype_sets: dict[str, PrototypeSet]
    z_train: np.ndarray
    y_train: np.ndarray
    z_test: np.ndarray
    prototype_notes: dict[str, str] = field(default_factory=dict)


def described_normalisation(combination: str, normalisation: str) -> str:
    """The features' normalisation as ``settings.json`` records it: ``normalisation``
    (``features.normalisation``) for a block combination; for the CNN's baselines
    (``paths.BASELINES``), which always read the deepest block's ``z`` without one, that instead."""
    return "none (z of the deepest block, the CNN's own space)" if combination == paths.BASELINES else normalisation


def not_applicable_baselines(combination: str, explainers: list[str], architecture: str) -> dict[str, str]:
    """For the CNN's baselines (``paths.BASELINES``), each CNN explainer of ``explainers``
    (``explain.explainers``) that cannot explain a CNN of ``architecture`` (``backbone.architecture``),
    with the reason: the explain stage skipped it (:func:`kmx_eval.explain.applicable_explainers`)
    and :func:`evaluate_seed` writes the reason in place of its scores. None for a block combination.

    Raises ParamsError for an architecture that is not registered, whatever the combination.
    """
    arch = get_architecture(architecture)
    if combination != paths.BASELINES:
        return {}
    return applicable_explainers(explainer_names(explainers, "cnn"), arch)[1]


def coarsest_grid(architecture: str, image_size: int) -> tuple[int, int]:
    """The study's coarsest grid: ``(H_n, W_n)`` of the deepest block of ``architecture``
    (``backbone.architecture``; B4 for a ResNet) at ``image_size`` px, read from a meta-device
    forward (no weights, no image). Sharpness is measured beyond it (docs/METHOD.md, section 6)."""
    arch = get_architecture(architecture)
    return tuple(int(v) for v in arch.shapes(int(image_size))[arch.n_blocks][1:])


def load_explained(*, dataset: str, combination: Combination | None, seed: int, normalisation: str,
                   resize: str, device) -> Explained:
    """The explained model of ``combination`` (``Params.combination``, which carries the block
    weighting), or of the CNN itself for ``None`` (its baselines, ``paths.BASELINES``), for ``seed``.

    Where the CNN's classifier is global average pooling + one linear layer, its rows ``w_c`` are
    prototypes in the space of ``z_n`` (deepest block) without normalisation, whatever
    ``normalisation`` the combinations use (docs/METHOD.md, section 2); elsewhere (VGG's three
    linear layers) there are no such prototypes and ``prototype_notes`` says why. Beside the linear
    heads, the class means of their space (``class_means``: k-means at one prototype per class, the
    matched-capacity reference of docs/METHOD.md, section 6).
    """
    cache = io.load_npz(paths.embeddings_file(dataset, seed))
    labels, cnn_pred = cache["test/labels"], cache["test/logits"].argmax(axis=1)
    backbone, meta = load_backbone(paths.backbone_weights(dataset, seed).parent, device)
    n_classes = int(meta["n_classes"])
    if combination is None:
        arch = architecture_of(backbone)
        if not arch.gap_linear:
            why = f"not applicable: {arch.not_gap_linear_reason()}, so it has no prototypes w_c"
            none = np.zeros((0, 0), np.float32)
            return Explained(backbone, n_classes, labels, None, {"cnn": cnn_pred}, {}, none,
                             cache["train/labels"], none,
                             prototype_notes={"linear": why, f"linear{CANONICAL}": why, CLASS_MEANS: why})
        # The CNN's fc reads the deepest block's pooled z as it is: one block, no weighting (g_b = 1).
        deepest = Combination((arch.n_blocks,), "channels")
        z_train, z_test = (combination_embeddings(cache, s, deepest, "none") for s in ("train", "test"))
        linear = LinearSEM.from_linear(arch.classifier_of(backbone))
        sets = {"linear": linear_prototype_set(linear, linear.predict(z_test)),
                CLASS_MEANS: class_means_set(z_train, cache["train/labels"], z_test, linear.classes_)}
        return Explained(backbone, n_classes, labels, None, {"cnn": cnn_pred}, sets, z_train,
                         cache["train/labels"], z_test)
    comb = combination
    head_dir = paths.head_dir(dataset, comb.name, seed)
    # The explain stage's checks: the same settings as the fit, classes 0..C-1.
    head = load_checked_kmeans_head(head_dir, normalisation=normalisation, resize=resize,
                                    block_weighting=comb.weighting)
    probe = load_probe(head_dir)
    z_train, z_test = (combination_embeddings(cache, s, comb, normalisation) for s in ("train", "test"))
    k_pred, p_pred = head.predict(z_test), probe.predict(z_test)
    sets = {"kmeans": kmeans_prototype_set(head.prototypes_, head.n_prototypes_per_class_, k_pred,
                                           classes=head.classes_),
            "probe": linear_prototype_set(probe, p_pred),
            CLASS_MEANS: class_means_set(z_train, cache["train/labels"], z_test, probe.classes_)}
    if (head_dir / "linear.npz").exists():  # B_n without normalisation: the CNN's own classifier
        linear = load_linear_sem(head_dir)
        sets["linear"] = linear_prototype_set(linear, linear.predict(z_test))
    predictions = {"kmeans": k_pred, "probe": p_pred}
    if (head_dir / f"{KMEX_HEAD_NAME}.npz").exists():  # KMEx's own head (head.kmex_reference), deepest block
        kmex = load_kmeans_head(head_dir, KMEX_HEAD_NAME)
        # measured in its own space, the raw pooled embeddings it was fitted on
        sets[KMEX_HEAD_NAME] = kmex_reference_set(kmex, *kmex_embeddings(cache, comb.blocks[-1]))
        predictions[KMEX_HEAD_NAME] = sets[KMEX_HEAD_NAME].decisions
    model = KMeansHeadModule.from_backbone(head, backbone, comb, normalisation, BlockStats.from_dict(cache),
                                           resize).to(device)
    return Explained(model, n_classes, labels, cnn_pred, predictions, sets,
                     z_train, cache["train/labels"], z_test)


def evaluate_seed(tables: EvaluationTables, *, seed: int, explained: Explained, maps: Mapping[str, np.ndarray],
                  test_split, metrics: list[str], settings: QuantusSettings, purity_m: int, device: str,
                  keypoint_tolerance: float,
                  explain_func_for: Callable[[str], Callable | None], source: str = "maps",
                  not_applicable: Mapping[str, str] | None = None, n_concepts: int | None = None,
                  coarse_grid: tuple[int, int] | None = None, interventions_from=None) -> int:
    """Every metric of one seed into ``tables``: heads, prototypes, each map of ``maps``, concepts,
    and with ``coarse_grid`` (:func:`coarsest_grid`) each map's sharpness beyond that grid; with
    ``interventions_from`` (a prepared dataset's folder) the part interventions of
    :mod:`kmx_eval.metrics.interventions`, where that folder holds them (n_parts + 2 model calls per image);
    where the test split has named part locations (CUB-200-2011's keypoints), the part-level pointing
    game within ``keypoint_tolerance`` (``evaluate.keypoint_tolerance``, a share of the image side)
    and the concept-part alignment (:meth:`EvaluationTables.add_keypoints`, mask-free, no model call).

    ``n_concepts`` (``explain.concepts.n_concepts``) gives the concept floors their number of labels.
    ``explain_func_for(method)`` gives the Quantus ``explain_func`` of an explainer (None for a
    map without one). ``not_applicable`` maps an explainer that cannot explain this model (CAM on
    a classifier that is not GAP + linear) to the reason, written in place of its scores. Returns
    the number of evaluated images.
    """
    indices, targets = maps["indices"].astype(np.int64), maps["targets"].astype(np.int64)
    x, _, masks, parts = load_batch(test_split, indices)
    x = x.numpy()
    test_ids = np.arange(len(explained.labels))
    tables.add_heads(seed, explained.predictions, labels=explained.labels, cnn_predictions=explained.cnn_predictions,
                     sample_ids=test_ids)
    if explained.prototype_sets:
        tables.add_prototypes(seed, explained.prototype_sets, z_train=explained.z_train, y_train=explained.y_train,
                              z_test=explained.z_test, purity_m=purity_m)
    for name, why in explained.prototype_notes.items():
        tables.add_not_applicable(seed, "prototypes", name,
                                  {m: ("prototype_fidelity", h) for m, h in PROTOTYPE_METRICS.items()}, why)
    for method, why in sorted((not_applicable or {}).items()):
        specs = {m: QUANTUS_METRICS.get(m, where="evaluate.quantus") for m in metrics}
        tables.add_not_applicable(seed, "explainer", method,
                                  {m: (spec.category.value, spec.higher_is_better) for m, spec in specs.items()},
                                  why)
    methods = sorted(k for k in maps if k not in MAP_KEYS and not is_concept_key(k))
    if not methods and not not_applicable:
        raise DataError(f"{source} holds no attribution maps; rerun the explain stage")
    # The grid each map lives on, whose cells SymmetricMoRFLeRF and ROAD perturb (F_S's for a k-means
    # head, the CAM layer's for the CNN, a fixed patch grid for pixel maps).
    model_grid = explained_grid(explained.model, torch.from_numpy(x[:1]).to(device))
    for method in methods:
        # occlusion is the faithfulness control's informed map: only faithfulness metrics score it (its
        # re-explanation costs a forward pass per grid cell, which the sanity metrics would repeat)
        scored = ([m for m in metrics if QUANTUS_METRICS.get(m).category == "faithfulness"]
                  if method == OCCLUSION else metrics)
        tables.add_explainer(seed, method, explained.model, x=x, y=targets, a=maps[method], masks=masks,
                             metrics=scored, settings=settings, device=device, sample_ids=indices,
                             explain_func=explain_func_for(method),
                             n_classes=explained.n_classes,
                             equivalent_to=EXPLAINERS.get(method).affine_equivalent_to if method in EXPLAINERS else None,
                             grid=map_grid(method, model_grid, height=x.shape[2], pixel_cells=settings.pixel_grid))
    if coarse_grid is not None and methods:
        tables.add_sharpness(seed, {m: maps[m] for m in methods}, grid=coarse_grid, masks=masks, parts=parts,
                             sample_ids=indices)
    if interventions_from is not None and methods:
        copies = load_interventions(interventions_from, indices)
        outputs = None if copies is None or parts is None else intervention_outputs(
            explained.model, x, copies, device=device)
        tables.add_interventions(seed, {m: maps[m] for m in methods}, outputs=outputs, parts=parts,
                                 targets=targets, sample_ids=indices,
                                 model_name="cnn" if explained.cnn_predictions is None else "kmeans",
                                 why_not="not applicable: the dataset's source renders no part interventions "
                                         "(the synthetic source does)")
    concepts = {k: maps[k] for k in maps if is_concept_key(k)}
    if has_keypoints(test_split) and methods:
        xy, visible = load_keypoints(test_split, indices)
        tables.add_keypoints(seed, {m: maps[m] for m in methods}, keypoints=xy, visible=visible,
                             tolerance=keypoint_tolerance * max(x.shape[-2:]),
                             grids=ceiling_grids(explained.model, x, methods, device=device),
                             sample_ids=indices, concepts=concepts, images=x, n_concepts=n_concepts)
    # Each localisation metric's ceiling on this model's grid (and the pixels', for pixel maps): mask-only.
    add_ceilings(tables, seed, model=explained.model, x=x, masks=masks, methods=methods, metrics=metrics,
                 settings=settings, sample_ids=indices, device=device)
    tables.settings["explain_target"] = str(maps["target"]) if "target" in maps else "label"
    if concepts:
        # The ceiling of the concept maps lives on the grid of F_S (none for the CNN: no concepts).
        grid = explained.model.feature_grid(x) if hasattr(explained.model, "feature_grid") else None
        tables.add_concepts(seed, concepts, parts=parts, masks=masks, sample_ids=indices, grid=grid,
                            images=x, n_concepts=n_concepts)
    log.info("seed %d: %s", seed, ", ".join(f"{r['method']} {r['metric']} {r['value']:.3f}"
                                            for r in tables.rows if r["seed"] == seed and r["kind"] == "head"))
    return len(indices)


@dataclass
class EvaluationRun:
    """What :func:`evaluate_every_seed` hands the evaluate stage to write.

    Attributes
    ----------
    name : str, the explained model's folder name (a combination's, or ``paths.BASELINES``)
    tables : EvaluationTables, every seed's rows, samples and curves
    settings : dict, the contents of ``settings.json``
    summary : dict, the key numbers per seed (``evaluate.json``, a DVC metrics file)
    """

    name: str
    tables: EvaluationTables
    settings: dict
    summary: dict


def evaluate_every_seed(params, *, dataset: str, combination: Combination | None, device) -> EvaluationRun:
    """Evaluate ``combination`` (``Params.combination``; None for the CNN's baselines) of ``dataset``
    for every seed of ``params``: heads, prototypes, every Quantus metric of ``evaluate.quantus`` on
    every map of ``maps/{dataset}/{name}/seed{s}.npz``, and concept fidelity (:func:`evaluate_seed`)."""
    name = paths.BASELINES if combination is None else combination.name
    ev, features, backbone_cfg = params.evaluate, params.features, params.backbone_for(dataset)
    # CNN explainers that cannot explain this architecture (CAM without GAP + linear): their reason.
    not_applicable = not_applicable_baselines(name, params.explain.explainers, backbone_cfg.architecture)
    settings = QuantusSettings.from_config(ev)
    test = load_prepared(paths.prepared(dataset))["test"]
    tables = EvaluationTables(dataset, name, ev.bootstrap.n_resamples, ev.bootstrap.confidence)
    n_images = None  # the evaluation subset's size, the same for every seed
    for seed in params.seeds:
        seed_everything(seed)
        explained = load_explained(dataset=dataset, combination=combination, seed=seed,
                                   normalisation=features.normalisation, resize=features.resize, device=device)
        maps_path = paths.maps_file(dataset, name, seed)
        n_images = evaluate_seed(tables, seed=seed, explained=explained, maps=io.load_npz(maps_path),
                                 test_split=test, metrics=list(ev.quantus), settings=settings,
                                 purity_m=ev.purity_m, device=str(device),
                                 explain_func_for=quantus_explain_funcs(params.explain, seed),
                                 source=str(maps_path), not_applicable=not_applicable,
                                 n_concepts=params.explain.concepts.n_concepts,
                                 coarse_grid=coarsest_grid(backbone_cfg.architecture, backbone_cfg.image_size),
                                 interventions_from=paths.prepared(dataset),
                                 keypoint_tolerance=ev.keypoint_tolerance)
    tables.log_seconds()
    settings_file = tables.settings_file(ev, params.seeds, n_images,
                                         described_normalisation(name, features.normalisation), params.head.labels)
    key_metrics = summary_metrics(params.report.fidelity_metric, list(ev.quantus))
    return EvaluationRun(name, tables, settings_file, tables.summary(key_metrics))
