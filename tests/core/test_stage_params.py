"""The StageParams view and the resolved settings: a stage reads exactly what its DVC dependency holds."""

from __future__ import annotations

import copy

import pytest

from kmx_eval.errors import KmxError
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


def _leaves(tree: dict, prefix: tuple = ()):
    """Every (path, value) of a nested dict, lists kept whole."""
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _another(value):
    """A different value of the same type (for a key whose schema accepts it)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [v + 1 for v in value]
    if isinstance(value, list) and len(value) > 1:
        return value[:-1]
    return None


def _reads(stage: str, dataset: str | None, path: tuple) -> bool:
    """Whether STAGE_SECTIONS lets a run of ``stage`` for ``dataset`` read the key at ``path``."""
    declared = STAGE_SECTIONS[stage]
    if "*" in declared:
        return True
    if path[0] == "datasets":  # its own entry ('dataset'), or the backbone overrides in it
        if path[1] != dataset:
            return False
        if path[2] == "backbone":
            return "backbone" in declared or f"backbone.{path[3]}" in declared
        return "dataset" in declared
    dotted = ".".join(path)
    return any(dotted == d or dotted.startswith(d + ".") for d in declared)


def test_changing_each_key_reruns_exactly_the_stage_runs_that_read_it():
    """For every key of the study (defaults written out), each stage run whose resolved settings
    (its DVC dependency) change is one whose STAGE_SECTIONS row covers the key, and vice versa:
    backbone.lr reruns train but not prepare, backbone.image_size reruns prepare too."""
    raw = {**RAW, "datasets": {**RAW["datasets"], "shapes": {
        **RAW["datasets"]["shapes"], "backbone": {"image_size": 64, "epochs": 3}}}}
    before = parse_params(raw)
    full = before.to_full_dict()
    runs = [r for r in stage_runs(before)]
    checked = []
    for path, value in _leaves(full):
        new = _another(value)
        if new is None:
            continue
        changed = copy.deepcopy(full)
        node = changed
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = new
        try:
            after = parse_params(changed)
        except KmxError:  # no such simple change is valid for this key (a name, a bounded value)
            continue
        differs = {r for r in runs if resolved_settings(before, *r) != resolved_settings(after, *r)}
        expected = {r for r in runs if _reads(r[0], r[1], path)}
        if path[0] == "backbone" and path[1] in ("image_size", "epochs"):
            expected -= {r for r in runs if r[1] == "shapes"}  # overridden for shapes: unchanged
        if path == ("combinations",):  # the removed combination's runs leave the study
            expected = {r for r in expected if r[2] != "B34"}
        assert differs == expected, ".".join(path)
        checked.append(".".join(path))
    assert {"backbone.lr", "backbone.image_size", "features.batch_size", "head.n_init",
            "explain.ig_steps", "evaluate.purity_m", "report.gallery_images",
            "datasets.shapes.backbone.image_size", "datasets.shapes.clutter"} <= set(checked)
    assert len(checked) >= 50


def test_prepare_reruns_for_the_image_size_and_not_for_the_learning_rate(params):
    view = StageParams(params, "prepare", "shapes")
    assert view.backbone_for("shapes").image_size == 64
    with pytest.raises(UndeclaredParamsError, match=r"backbone\.lr"):
        view.backbone_for("shapes").lr
    settings = resolved_settings(params, "prepare", "shapes")
    assert settings["backbone"] == {"image_size": 64, "numerics": params.backbone.numerics}
    other = "native" if params.backbone.numerics == "portable" else "portable"
    native = parse_params({**RAW, "backbone": {"numerics": other}})
    assert resolved_settings(native, "prepare", "shapes") != settings  # the kernels it runs on
