"""Sharding the study's DAG: per dataset, per dataset x combination, and refusing a coupled DAG."""

from __future__ import annotations

import pytest

from kmx_eval.launch.shards import ShardError, split, study_from_repo
from tiny_study import REPO

DATASETS = ["shapes", "digits"]
COMBINATIONS = ["B4", "B234"]


def dag(datasets=DATASETS, combinations=COMBINATIONS, extra_edges=()):
    """The DAG of dvc.yaml (with the settings stage upstream of everything): stage -> its deps."""
    deps: dict[str, set[str]] = {"resolve": set()}
    for d in datasets:
        deps[f"prepare@{d}"] = {"resolve"}
        deps[f"train@{d}"] = {f"prepare@{d}"}
        deps[f"embed@{d}"] = {f"prepare@{d}", f"train@{d}"}
        deps[f"explain_cnn@{d}"] = {f"prepare@{d}", f"train@{d}"}
        deps[f"evaluate_cnn@{d}"] = {f"explain_cnn@{d}", f"embed@{d}"}
        for c in combinations:
            deps[f"fit@{d}-{c}"] = {f"embed@{d}"}
            deps[f"explain@{d}-{c}"] = {f"fit@{d}-{c}"}
            deps[f"evaluate@{d}-{c}"] = {f"explain@{d}-{c}"}
    deps["report"] = {s for s in deps if s != "resolve"}
    for a, b in extra_edges:
        deps[a].add(b)

    def ancestors(s, seen=None):
        seen = set() if seen is None else seen
        for d in deps[s]:
            if d not in seen:
                seen.add(d)
                ancestors(d, seen)
        return seen

    order, done = [], set()
    while len(order) < len(deps):  # a topological order, upstream first
        for s in deps:
            if s not in done and deps[s] <= done:
                order.append(s)
                done.add(s)
    return order, {s: ancestors(s) for s in deps}


def test_one_shard_per_dataset_holds_all_its_stages():
    order, anc = dag()
    study = split(order, anc, DATASETS, COMBINATIONS)
    assert study.names == ["shapes", "digits"]
    assert study.upstream == ("resolve",) and study.downstream == ("report",)
    shapes = study.shard("shapes")
    assert len(shapes.stages) == 5 + 3 * len(COMBINATIONS) and shapes.after is None
    assert all("@shapes" in s for s in shapes.stages)
    # Upstream first, so that collect can restore them in this order.
    assert shapes.stages.index("prepare@shapes") < shapes.stages.index("fit@shapes-B234")
    every = [s for sh in study.shards for s in sh.stages]
    assert sorted(every + ["resolve", "report"]) == sorted(order)  # each stage in exactly one place


def test_dataset_combination_shards_run_after_their_dataset():
    order, anc = dag()
    study = split(order, anc, DATASETS, COMBINATIONS, by="dataset-combination")
    assert study.names == ["shapes", "shapes-B4", "shapes-B234", "digits", "digits-B4", "digits-B234"]
    assert study.shard("shapes").stages == ("prepare@shapes", "train@shapes", "embed@shapes",
                                            "explain_cnn@shapes", "evaluate_cnn@shapes")
    comb = study.shard("digits-B234")
    assert comb.after == "digits" and comb.combination == "B234"
    assert comb.stages == ("fit@digits-B234", "explain@digits-B234", "evaluate@digits-B234")


def test_a_stage_that_couples_two_shards_is_refused():
    # A paired comparison B4 vs B234 inside one stage would need both combinations' results.
    order, anc = dag(extra_edges=[("evaluate@shapes-B234", "evaluate@shapes-B4")])
    assert len(split(order, anc, DATASETS, COMBINATIONS).shards) == 2  # per dataset: fine
    with pytest.raises(ShardError, match=r"evaluate@shapes-B234 \(shard shapes-B234\) depends on fit@shapes-B4 .*--by dataset"):
        split(order, anc, DATASETS, COMBINATIONS, by="dataset-combination")
    with pytest.raises(ShardError, match="dataset-combination"):
        split(order, anc, DATASETS, COMBINATIONS, by="combination")


def test_the_repository_study_shards_by_its_datasets():
    """The shipped dvc.yaml and params.yaml, as DVC builds their DAG."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    study = study_from_repo(REPO)
    assert study.names == list(params["datasets"])
    assert "report" in study.downstream
    for shard in study.shards:
        assert f"prepare@{shard.name}" == shard.stages[0]
        assert {f"evaluate@{shard.name}-{c}" for c in params["combinations"]} <= set(shard.stages)
