"""evaluate@{dataset}-{combination}: accuracy, prototype fidelity, Quantus metrics and concept fidelity."""

from __future__ import annotations

import logging

import numpy as np

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")

#: Arrays of a maps file that are not explainers (docs/ARCHITECTURE.md, "Maps").
MAP_KEYS = ("indices", "targets", "predictions", "concepts")


@stage
def main(params, dataset, combination):
    """Evaluate one block combination (or the original CNN, filed under the pseudo-combination
    kmx_eval.paths.BASELINES) for every
    seed: accuracy and agreement of its heads, fidelity of its prototypes, every Quantus metric of
    params.evaluate.quantus on every map of maps/{dataset}/{combination}/seed{s}.npz, and concept
    fidelity; write metrics/{dataset}/{combination}/evaluate/ (metrics.csv, samples.csv,
    settings.json), metrics/{dataset}/{combination}/curves.csv (DVC plots) and
    metrics/{dataset}/{combination}/evaluate.json."""
    from kmx_eval.data import load_batch, load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.errors import DataError, ParamsError
    from kmx_eval.explain import EXPLAINERS, build_explainer, quantus_explain_func
    from kmx_eval.heads import (KMeansHeadModule, LinearSEM, load_kmeans_head, load_linear_sem,
                                load_probe, read_head_meta)
    from kmx_eval.metrics.evaluation import EvaluationTables, PrototypeSet, kmeans_prototype_set
    from kmx_eval.models.backbone import load_backbone
    from kmx_eval.models.blocks import BlockExtractor, BlockStats
    from kmx_eval.models.combination import parse_combination
    from kmx_eval.models.embeddings import combination_embeddings
    from kmx_eval.seeding import seed_everything

    params.dataset(dataset)
    is_cnn = combination == paths.BASELINES
    if is_cnn:
        name = paths.BASELINES
    else:
        comb = parse_combination(combination, where="combination")
        if comb.name not in params.combinations:
            raise ParamsError(f"combination {comb.name!r} is neither {paths.BASELINES!r} nor in params "
                              f"combinations ({', '.join(params.combinations)})")
        name = comb.name
    ev = params.evaluate
    normalisation, resize = params.features.normalisation, params.features.resize
    device = resolve_device(params.backbone_for(dataset).device)
    test = load_prepared(paths.prepared(dataset))["test"]
    tables = EvaluationTables(dataset, name, ev.bootstrap.n_resamples, ev.bootstrap.confidence)
    n_images = None

    for seed in params.seeds:
        seed_everything(seed)
        maps_path = paths.maps_file(dataset, name, seed)
        maps = io.load_npz(maps_path)
        indices, targets = maps["indices"].astype(np.int64), maps["targets"].astype(np.int64)
        x, _, masks, parts = load_batch(test, indices)
        x = x.numpy()
        n_images = len(indices)
        cache = io.load_npz(paths.embeddings_file(dataset, seed))
        labels, cnn_pred = cache["test/labels"], cache["test/logits"].argmax(axis=1)
        test_ids = np.arange(len(labels))
        backbone, meta = load_backbone(paths.backbone_weights(dataset, seed).parent, device)
        n_classes = int(meta["n_classes"])

        if is_cnn:
            # The CNN's own fc rows w_c are prototypes in the space of z_4 without normalisation,
            # whatever features.normalisation the combinations use (METHOD.md section 2).
            model = backbone
            z_train, z_test = (combination_embeddings(cache, s, "B4", "none") for s in ("train", "test"))
            linear = LinearSEM.from_linear(backbone.fc)
            tables.add_heads(seed, {"cnn": cnn_pred}, labels, None, test_ids)
            sets = {"linear": PrototypeSet(linear.prototypes_, linear.classes_, linear.predict(z_test),
                                          linear=True)}
        else:
            head_dir = paths.head_dir(dataset, name, seed)
            fitted_with = read_head_meta(head_dir, "kmeans").get("normalisation")
            if fitted_with is not None and fitted_with != normalisation:
                raise DataError(f"{head_dir}: the head was fitted with normalisation {fitted_with!r} "
                                f"but features.normalisation is {normalisation!r}; rerun the fit stage")
            head, probe = load_kmeans_head(head_dir), load_probe(head_dir)
            z_train, z_test = (combination_embeddings(cache, s, comb, normalisation) for s in ("train", "test"))
            k_pred, p_pred = head.predict(z_test), probe.predict(z_test)
            tables.add_heads(seed, {"kmeans": k_pred, "probe": p_pred}, labels, cnn_pred, test_ids)
            sets = {"kmeans": kmeans_prototype_set(head.prototypes_, head.n_prototypes_per_class_, k_pred,
                                                   classes=head.classes_),
                    "probe": PrototypeSet(probe.prototypes_, probe.classes_, p_pred, linear=True)}
            if (head_dir / "linear.npz").exists():  # B4 without normalisation: the CNN's own fc
                linear = load_linear_sem(head_dir)
                sets["linear"] = PrototypeSet(linear.prototypes_, linear.classes_, linear.predict(z_test),
                                              linear=True)
            model = KMeansHeadModule(BlockExtractor(backbone, blocks=comb.blocks, logits=False), comb,
                                     normalisation, BlockStats.from_dict(cache), head.prototypes_,
                                     resize).to(device)
        tables.add_prototypes(seed, sets, z_train, cache["train/labels"], z_test, ev.purity_m)

        explainers = [k for k in maps if k not in MAP_KEYS]
        if not explainers:
            raise DataError(f"{maps_path} holds no attribution maps; rerun the explain stage")
        for method in sorted(explainers):
            explain_func = None
            if method in EXPLAINERS:  # RandomLogit re-explains other classes with the same explainer
                explain_func = quantus_explain_func(build_explainer(method, params.explain, seed))
            tables.add_explainer(seed, method, model, x, targets, maps[method], masks, ev, str(device),
                                 indices, explain_func=explain_func, n_classes=n_classes)
        if "concepts" in maps:
            tables.add_concepts(seed, maps["concepts"], parts, masks, indices)
        log.info("seed %d: %s", seed, ", ".join(f"{r['method']} {r['metric']} {r['value']:.3f}"
                                                for r in tables.rows
                                                if r["seed"] == seed and r["kind"] == "head"))

    for key, seconds in sorted(tables.seconds.items(), key=lambda kv: -kv[1]):
        log.info("time %-28s %7.1f s", key, seconds)
    metrics, samples, curves = tables.frames()
    settings = {
        "n_images": n_images, "seeds": list(params.seeds), "softmax": ev.softmax,
        "bootstrap": ev.bootstrap.model_dump(), "faithfulness": ev.faithfulness.model_dump(),
        "top_k_fraction": ev.top_k_fraction,
        "normalisation": "none (z_4, the CNN's own space)" if is_cnn else normalisation,
        "head_labels": params.head.labels, **tables.settings,
    }
    with io.atomic_path(paths.evaluation(dataset, name)) as folder:
        folder.mkdir()
        io.write_csv(folder / "metrics.csv", metrics)
        io.write_csv(folder / "samples.csv", samples)
        io.write_json(folder / "settings.json", settings)
    key_metrics = tuple(m for m in (params.report.fidelity_metric, "FaithfulnessCorrelation", "PixelFlipping")
                        if m in ev.quantus)
    io.write_csv(paths.curves(dataset, name), curves)  # beside the folder: DVC plots need its own path
    io.write_json(paths.evaluation_summary(dataset, name), tables.summary(key_metrics))


if __name__ == "__main__":
    raise SystemExit(main())
