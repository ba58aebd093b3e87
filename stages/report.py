"""report: assemble reports/index.html, tables, figures and metrics.json from every evaluate output."""

from __future__ import annotations

from kmx_eval.cli import stage


@stage
def main(params):
    """Build reports/index.html (self-contained), reports/tables, reports/figures and reports/metrics.json."""
    build(params)


def build(params) -> None:
    """The report stage on validated ``params``, in the current directory (the repository root)."""
    from kmx_eval.device import resolve_device
    from kmx_eval.report.build import build as build_report
    from kmx_eval.report.inputs import DatasetInfo, ReportSettings

    datasets = {}
    for ds in params.datasets:
        cfg = params.backbone_for(ds)
        datasets[ds] = DatasetInfo(source=params.datasets[ds].source, architecture=cfg.architecture,
                                   weights=cfg.weights, image_size=cfg.image_size)
    ev, report = params.evaluate, params.report
    build_report(ReportSettings(
        datasets=datasets, combinations=list(params.combinations), seeds=list(params.seeds),
        title=report.title, gallery_images=report.gallery_images, fidelity_metric=report.fidelity_metric,
        explainer=report.explainer, metrics=list(ev.quantus), explainers=list(params.explain.explainers),
        compare=[tuple(p) for p in ev.compare], n_resamples=ev.bootstrap.n_resamples,
        confidence=ev.bootstrap.confidence, device=str(resolve_device(params.backbone.device)),
        primary_faithfulness=report.primary.faithfulness, primary_concepts=report.primary.concepts,
        # serialize_as_any keeps the fields of each dataset source's own Config subclass.
        params=params.model_dump(mode="json", exclude_none=True, serialize_as_any=True)))


if __name__ == "__main__":
    raise SystemExit(main())
