"""evaluate@{dataset}-{combination}: accuracy, prototype fidelity, Quantus metrics and concept fidelity."""

from __future__ import annotations

import logging

from kmx_eval import io, paths
from kmx_eval.cli import stage

log = logging.getLogger("kmx_eval")


@stage
def main(params, dataset, combination):
    """Evaluate one block combination (or the CNN, paths.BASELINES) for every seed: heads, prototypes,
    every Quantus metric of params.evaluate.quantus on every map of maps/{dataset}/{combination}/seed{s}.npz,
    and concept fidelity; write metrics/{dataset}/{combination}/evaluate/ (metrics.csv, samples.csv,
    settings.json), metrics/{dataset}/{combination}/curves.csv and .../evaluate.json."""
    from kmx_eval.data import load_prepared
    from kmx_eval.device import resolve_device
    from kmx_eval.explain import EXPLAINERS, build_explainer, explainer_names, quantus_explain_func
    from kmx_eval.metrics.evaluation import EvaluationTables
    from kmx_eval.metrics.inputs import evaluate_seed, explained_name, load_explained
    from kmx_eval.metrics.quantus import QuantusSettings
    from kmx_eval.models.architectures import get_architecture
    from kmx_eval.seeding import seed_everything

    params.dataset(dataset)
    name = explained_name(combination, list(params.combinations))
    ev, features = params.evaluate, params.features
    backbone_cfg = params.backbone_for(dataset)
    device = resolve_device(backbone_cfg.device, backbone_cfg.threads)
    # CNN explainers that cannot explain this architecture (CAM without GAP + linear): their reason.
    arch = get_architecture(backbone_cfg.architecture)
    not_applicable = {m: why for m in explainer_names(params.explain.explainers, "cnn")
                      if (why := EXPLAINERS.get(m).not_applicable(arch)) is not None
                      } if name == paths.BASELINES else {}
    settings = QuantusSettings(softmax=ev.softmax, top_k_fraction=ev.top_k_fraction, **ev.faithfulness.model_dump(),
                               sanity_images=ev.sanity.n_images, stability_samples=ev.sanity.nr_samples)
    test = load_prepared(paths.prepared(dataset))["test"]
    tables = EvaluationTables(dataset, name, ev.bootstrap.n_resamples, ev.bootstrap.confidence)
    n_images = None
    for seed in params.seeds:
        seed_everything(seed)
        explained = load_explained(dataset, name, seed, features.normalisation, features.resize, device,
                                   features.block_weighting)

        def explain_func(method, seed=seed):  # RandomLogit re-explains other classes with the explainer
            return (quantus_explain_func(build_explainer(method, params.explain, seed))
                    if method in EXPLAINERS else None)

        maps_path = paths.maps_file(dataset, name, seed)
        n_images = evaluate_seed(tables, seed, explained, io.load_npz(maps_path), test, list(ev.quantus),
                                 settings, ev.purity_m, str(device), explain_func, source=str(maps_path),
                                 not_applicable=not_applicable)
    for key, seconds in sorted(tables.seconds.items(), key=lambda kv: -kv[1]):
        log.info("time %-28s %7.1f s", key, seconds)
    metrics, samples, curves = tables.frames()
    settings_out = {
        "n_images": n_images, "seeds": list(params.seeds), "softmax": ev.softmax,
        "bootstrap": ev.bootstrap.model_dump(), "faithfulness": ev.faithfulness.model_dump(),
        "top_k_fraction": ev.top_k_fraction,
        "normalisation": "none (z of the deepest block, the CNN's own space)" if name == paths.BASELINES else features.normalisation,
        "head_labels": params.head.labels, "shared_results": dict(sorted(tables.shared.items())),
        **tables.settings}
    with io.atomic_path(paths.evaluation(dataset, name)) as folder:
        folder.mkdir()
        io.write_csv(folder / "metrics.csv", metrics)
        io.write_csv(folder / "samples.csv", samples)
        io.write_json(folder / "settings.json", settings_out)
    key_metrics = tuple(m for m in (params.report.fidelity_metric, "FaithfulnessCorrelation", "PixelFlipping")
                        if m in ev.quantus)
    io.write_csv(paths.curves(dataset, name), curves)  # beside the folder: DVC plots need its own path
    io.write_json(paths.evaluation_summary(dataset, name), tables.summary(key_metrics))


if __name__ == "__main__":
    raise SystemExit(main())
