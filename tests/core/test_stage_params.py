"""The StageParams view and the resolved settings: a stage reads exactly what its DVC dependency holds."""

from __future__ import annotations

import pytest

from kmx_eval.stage_params import (STAGE_SECTIONS, StageParams, UndeclaredParamsError,
                                   resolved_settings, stage_runs)
from kmx_eval.validation import parse_params

RAW = {
    "datasets": {
        "shapes": {"source": "synthetic", "n_classes": 3, "backbone": {"image_size": 64}},
        "digits": {"source": "digits"},
    },
    "combinations": ["B4", "B34"],
    "evaluate": {"compare": [["B4", "B34"]]},
}


@pytest.fixture()
def params():
    return parse_params(RAW)


def test_a_declared_section_reads_through(params):
    view = StageParams(params, "fit", "shapes", "B4")
    assert view.head == params.head
    assert view.explain.concepts == params.explain.concepts
    assert view.backbone_for("shapes").image_size == 64
    assert view.combinations == ["B4"]  # only its own combination
    assert list(view.datasets) == ["shapes"]


@pytest.mark.parametrize("read, message", [
    (lambda v: v.evaluate, "reads params.evaluate"),
    (lambda v: v.explain.explainers, "reads params explain.explainers"),
    (lambda v: v.backbone, "reads params.backbone"),
    (lambda v: v.report, "reads params.report"),
    (lambda v: v.dataset("digits"), "reads params of dataset 'digits'"),
    (lambda v: v.model_dump(), "reads params.model_dump"),
])
def test_an_undeclared_read_fails_and_says_where_to_declare_it(params, read, message):
    view = StageParams(params, "fit", "shapes", "B4")
    with pytest.raises(UndeclaredParamsError, match=message):
        read(view)


def test_train_may_not_read_the_features_section(params):
    with pytest.raises(UndeclaredParamsError, match=r"STAGE_SECTIONS\['train'\]"):
        StageParams(params, "train", "shapes").features


def test_the_report_and_resolve_stages_read_everything(params):
    view = StageParams(params, "report")
    assert view.model_dump() == params.model_dump()
    assert view.backbone == params.backbone


def test_resolved_settings_hold_each_declared_section_with_defaults_filled_in(params):
    for stage, dataset, combination in stage_runs(params):
        settings = resolved_settings(params, stage, dataset, combination)
        if STAGE_SECTIONS[stage] == ("*",):
            assert settings == params.to_full_dict()
            continue
        assert set(settings) == {s.split(".")[0] for s in STAGE_SECTIONS[stage]}
    fit = resolved_settings(params, "fit", "shapes", "B34")
    assert fit["combination"] == "B34"
    assert fit["backbone"]["image_size"] == 64 and fit["backbone"]["epochs"] == params.backbone.epochs
    assert fit["dataset"]["name"] == "shapes" and fit["dataset"]["seed"] == 0  # a default, written out
    assert set(fit["explain"]) == {"concepts"}
    assert resolved_settings(params, "evaluate", "digits", "cnn")["report"] == {
        "fidelity_metric": params.report.fidelity_metric}


def test_a_change_reaches_exactly_the_stage_runs_that_read_it():
    before = parse_params(RAW)
    changed = {**RAW, "datasets": {**RAW["datasets"],
                                   "shapes": {**RAW["datasets"]["shapes"], "clutter": 1}},
               "report": {"title": "another title"}}
    after = parse_params(changed)
    differs = {run for run in stage_runs(before)
               if resolved_settings(before, *run) != resolved_settings(after, *run)}
    assert differs == {run for run in stage_runs(before) if run[1] == "shapes"} | {("report", None, None)}


def test_stage_runs_match_the_dvc_matrix(params):
    runs = stage_runs(params)
    assert ("evaluate", "digits", "cnn") in runs and ("fit", "digits", "B34") in runs
    assert ("resolve", None, None) not in runs
    # per dataset: prepare, train, embed, explain_cnn, evaluate-cnn + 3 per combination
    assert len(runs) == 2 * (5 + 3 * 2) + 1
