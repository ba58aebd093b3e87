"""evaluate@{dataset}-{combination}: accuracy, prototype fidelity, Quantus metrics and concept fidelity."""

from __future__ import annotations

from kmx_eval import io, paths
from kmx_eval.cli import stage


@stage
def main(params, dataset, combination):
    """Evaluate one block combination (or the CNN, paths.BASELINES) for every seed: heads, prototypes,
    every Quantus metric of params.evaluate.quantus on every map of maps/{dataset}/{combination}/seed{s}.npz,
    and concept fidelity; write metrics/{dataset}/{combination}/evaluate/ (metrics.csv, samples.csv,
    settings.json), metrics/{dataset}/{combination}/curves.csv and .../evaluate.json."""
    from kmx_eval.device import resolve_device
    from kmx_eval.pipeline.evaluate import evaluate_every_seed

    params.dataset(dataset)
    comb = None if combination == paths.BASELINES else params.combination(combination)
    backbone_cfg = params.backbone_for(dataset)
    device = resolve_device(backbone_cfg.device, backbone_cfg.threads)
    run = evaluate_every_seed(params, dataset=dataset, combination=comb, device=device)
    metrics, samples, curves = run.tables.frames()
    with io.atomic_path(paths.evaluation(dataset, run.name)) as folder:
        folder.mkdir()
        io.write_csv(folder / "metrics.csv", metrics)
        io.write_csv(folder / "samples.csv", samples)
        io.write_json(folder / "settings.json", run.settings)
    io.write_csv(paths.curves(dataset, run.name), curves)  # beside the folder: DVC plots need its own path
    io.write_json(paths.evaluation_summary(dataset, run.name), run.summary)


if __name__ == "__main__":
    raise SystemExit(main())
