"""Split the study's DAG (the stages ``dvc.yaml`` generates from params.yaml) into shards.

A stage named ``<stage>@<key>`` belongs to a dataset when ``key`` is a dataset of params.yaml
(``prepare@shapes``: a per-dataset stage) or ``<dataset>-<combination>`` for one of the params'
block combinations (``fit@shapes-B234``: a combination stage). Every other stage is global: it is
*upstream* when some shard stage depends on it (the ``resolve`` stage, which is cheap and runs in
every job) and *downstream* otherwise (the report, run once by ``collect``).

Two ways to shard:

- ``dataset`` (default): one shard per dataset, holding its per-dataset and combination stages.
  Datasets never depend on each other, so the shards are independent jobs.
- ``dataset-combination``: one shard per dataset holding its per-dataset stages (prepare, train,
  embed, explain_cnn, evaluate_cnn), then one shard per dataset x combination holding fit, explain
  and evaluate of that combination. A combination shard depends on its dataset's shard (it needs
  the trained backbone and its embeddings), so it is submitted *after* it (a SLURM ``afterok``
  dependency, or after the local job has finished) and its job restores the dataset's stages from
  the DVC remote's run cache instead of running them again.

:func:`split` checks that the DAG allows the split: a shard stage may only depend on its own shard,
on the shard it runs after, and on upstream stages.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from kmx_eval.errors import KmxError

BY = ("dataset", "dataset-combination")


class ShardError(KmxError):
    """The study cannot be sharded as asked (unknown shard name, or the DAG couples two shards)."""


@dataclass(frozen=True)
class Shard:
    """One job's part of the study.

    Attributes
    ----------
    name : str
        ``<dataset>`` or ``<dataset>-<combination>``; also the folder of the job's checkout.
    dataset : str
    combination : str or None
        The block combination of a dataset x combination shard, else None.
    stages : tuple of str
        Its DVC stage names, upstream first (the order ``collect`` restores them in).
    after : str or None
        The shard whose results it needs (its dataset's shard), or None.
    """

    name: str
    dataset: str
    combination: str | None
    stages: tuple[str, ...]
    after: str | None = None


@dataclass(frozen=True)
class Study:
    """The shards of a study, and the global stages before (upstream) and after (downstream) them."""

    shards: tuple[Shard, ...]
    upstream: tuple[str, ...] = field(default_factory=tuple)
    downstream: tuple[str, ...] = field(default_factory=tuple)

    def shard(self, name: str) -> Shard:
        for s in self.shards:
            if s.name == name:
                return s
        raise ShardError(f"no shard named {name!r}; the shards are: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.shards]


def _owner(stage: str, datasets: Sequence[str], combinations: Sequence[str]) -> tuple[str, str | None] | None:
    """``(dataset, combination or None)`` of a matrix stage name, or None for a global stage."""
    if "@" not in stage:
        return None
    key = stage.split("@", 1)[1]
    if key in datasets:
        return key, None
    for d in datasets:
        for c in combinations:
            if key == f"{d}-{c}":
                return d, c
    return None


def split(order: Sequence[str], ancestors: Mapping[str, Iterable[str]], datasets: Sequence[str],
          combinations: Sequence[str], by: str = "dataset") -> Study:
    """Shard a DAG given as its stage names in topological order (upstream first).

    Parameters
    ----------
    order : sequence of str
        Every stage name, each after all the stages it depends on.
    ancestors : mapping of str to iterable of str
        For each stage, every stage it depends on, directly or not.
    datasets, combinations : sequence of str
        The keys of params.yaml's ``datasets`` and its ``combinations``.
    by : {"dataset", "dataset-combination"}

    Raises
    ------
    ShardError
        ``by`` is unknown, or a shard stage depends on a stage of a shard it does not run after.
    """
    if by not in BY:
        raise ShardError(f"--by {by!r} is not a way to shard; valid: {', '.join(BY)}")
    shard_of: dict[str, str] = {}
    owners: dict[str, tuple[str, str | None]] = {}
    for stage in order:
        owner = _owner(stage, datasets, combinations)
        if owner is None:
            continue
        dataset, combination = owner
        shard_of[stage] = f"{dataset}-{combination}" if (by == "dataset-combination" and combination) else dataset
        owners[shard_of[stage]] = (dataset, combination if shard_of[stage] != dataset else None)
    in_shards = set(shard_of)
    upstream = tuple(s for s in order if s not in in_shards and any(s in ancestors.get(t, ()) for t in in_shards))
    downstream = tuple(s for s in order if s not in in_shards and s not in upstream)

    shards = []
    for name in dict.fromkeys(shard_of[s] for s in order if s in shard_of):
        dataset, combination = owners[name]
        after = dataset if combination is not None else None
        stages = tuple(s for s in order if shard_of.get(s) == name)
        for stage in stages:
            deps = set(ancestors.get(stage, ()))
            for dep in (s for s in order if s in deps):
                if dep in shard_of and shard_of[dep] not in (name, after):
                    raise ShardError(
                        f"stage {stage} (shard {name}) depends on {dep} (shard {shard_of[dep]}): "
                        f"these shards cannot run as separate jobs; use --by dataset")
        shards.append(Shard(name, dataset, combination, stages, after))
    # In the order of params.yaml: datasets, then each one's combinations.
    rank = {d: i for i, d in enumerate(datasets)}
    crank = {c: i for i, c in enumerate(combinations)}
    shards.sort(key=lambda s: (rank[s.dataset], -1 if s.combination is None else crank[s.combination]))
    return Study(tuple(shards), upstream, downstream)


def study_from_repo(root: str | Path, by: str = "dataset") -> Study:
    """The shards of the study in ``root``: its params.yaml and the DAG DVC builds from dvc.yaml."""
    # here: DVC (and networkx) take seconds to import, and only these commands need them
    import networkx as nx
    import yaml
    from dvc.repo import Repo

    root = Path(root)
    params_file = root / "params.yaml"
    try:
        params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ShardError(f"cannot read {params_file}: {exc}") from None
    datasets = list((params.get("datasets") or {}).keys())
    combinations = [str(c) for c in (params.get("combinations") or [])]
    if not datasets:
        raise ShardError(f"{params_file} has no datasets: nothing to shard")
    with contextlib.chdir(root), Repo(str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        names = {node: node.addressing for node in graph.nodes}
        order = [names[n] for n in reversed(list(nx.topological_sort(graph)))]
        ancestors = {names[n]: {names[d] for d in nx.descendants(graph, n)} for n in graph.nodes}
    return split(order, ancestors, datasets, combinations, by=by)
