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
    from kmx_eval.explain import quantus_explain_funcs
    from kmx_eval.metrics.evaluation import EvaluationTables, summary_metrics
    from kmx_eval.pipeline.evaluate import (described_normalisation, evaluate_seed, explained_name, load_explained,
                                            not_applicable_baselines)
    from kmx_eval.metrics.quantus import QuantusSettings
    from kmx_eval.seeding import seed_everything

    params.dataset(dataset)
    name = explained_name(combination, list(params.combinations))
    ev, features, backbone_cfg = params.evaluate, params.features, params.backbone_for(dataset)
    device = resolve_device(backbone_cfg.device, backbone_cfg.threads)
    # CNN explainers that cannot explain this architecture (CAM without GAP + linear): their reason.
    not_applicable = not_applicable_baselines(name, params.explain.explainers, backbone_cfg.architecture)
    settings = QuantusSettings.from_config(ev)
    test = load_prepared(paths.prepared(dataset))["test"]
    tables = EvaluationTables(dataset, name, ev.bootstrap.n_resamples, ev.bootstrap.confidence)
    n_images = None  # the evaluation subset's size, the same for every seed
    for seed in params.seeds:
        seed_everything(seed)
        explained = load_explained(dataset, name, seed, features.normalisation, features.resize, device,
                                   features.block_weighting)
        maps_path = paths.maps_file(dataset, name, seed)
        n_images = evaluate_seed(tables, seed, explained, io.load_npz(maps_path), test, list(ev.quantus),
                                 settings, ev.purity_m, str(device), quantus_explain_funcs(params.explain, seed),
                                 source=str(maps_path), not_applicable=not_applicable)
    tables.log_seconds()
    metrics, samples, curves = tables.frames()
    with io.atomic_path(paths.evaluation(dataset, name)) as folder:
        folder.mkdir()
        io.write_csv(folder / "metrics.csv", metrics)
        io.write_csv(folder / "samples.csv", samples)
        normalisation = described_normalisation(name, features.normalisation)
        io.write_json(folder / "settings.json", tables.settings_file(ev, params.seeds, n_images, normalisation,
                                                                     params.head.labels))
    io.write_csv(paths.curves(dataset, name), curves)  # beside the folder: DVC plots need its own path
    key_metrics = summary_metrics(params.report.fidelity_metric, list(ev.quantus))
    io.write_json(paths.evaluation_summary(dataset, name), tables.summary(key_metrics))


if __name__ == "__main__":
    raise SystemExit(main())
