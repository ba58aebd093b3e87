"""What each stage reads of ``params.yaml``, in one table, and the view that holds a stage to it.

DVC reruns a stage when something it depends on changes. Tracking single params keys in
``dvc.yaml`` breaks two ways: a key a user leaves out (the schema has a default) makes DVC refuse
the stage, and a key a stage reads but ``dvc.yaml`` forgot leaves results stale. So:

- :data:`STAGE_SECTIONS` lists, per stage, the params it reads (``dataset`` is the stage's own
  entry under ``datasets``, ``backbone`` that dataset's backbone with its overrides applied and
  ``backbone.image_size`` one key of it, ``combination`` the stage's own block combination;
  ``head.labels`` one key of a section);
- the ``resolve`` stage writes, for every stage, dataset and combination, those settings *with
  every default filled in* to ``resolved/<dataset>/<stage>[-<combination>].json``
  (:func:`resolved_settings`), and ``dvc.yaml`` lists that file as the stage's dependency: DVC
  reruns the stage exactly when a value it reads changes, whether or not the user wrote it;
- the stage itself receives :class:`StageParams`, a view of the validated params that raises
  :class:`UndeclaredParamsError` when the stage reads anything its row does not list. Every stage
  test and the end-to-end test run the stages through this view, so an undeclared read fails a
  test instead of leaving a result stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kmx_eval.config import Params
from kmx_eval.paths import BASELINES

#: Params of each stage (its script name in ``stages/``). ``*`` is everything (the report
#: prints every parameter).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    # numerics: the stage runner pins every stage's CPU kernels by it (kmx_eval/cli.py).
    "prepare": ("dataset", "backbone.image_size", "backbone.numerics"),
    "train": ("seeds", "dataset", "backbone"),
    "embed": ("seeds", "dataset", "backbone", "features"),
    "fit": ("seeds", "dataset", "backbone", "combination", "features", "head", "explain.concepts"),
    "explain": ("seeds", "dataset", "backbone", "combination", "features", "explain"),
    "explain_cnn": ("seeds", "dataset", "backbone", "explain"),
    "evaluate": ("seeds", "dataset", "backbone", "combination", "features", "head.labels",
                 "explain", "evaluate", "report.fidelity_metric"),
    "report": ("*",),
    "resolve": ("*",),
}

#: Stages that run once for the whole study.
STUDY_STAGES = ("report", "resolve")

#: Stages that run once per dataset and block combination (the others once per dataset, but
#: ``evaluate`` also runs for the CNN's baselines under the pseudo-combination ``cnn``).
PER_COMBINATION = ("fit", "explain", "evaluate")

#: Top-level sections a stage may name in :data:`STAGE_SECTIONS` as they are.
PLAIN_SECTIONS = ("seeds", "features", "head", "explain", "evaluate", "report")


class UndeclaredParamsError(RuntimeError):
    """A stage read params that its dependency in dvc.yaml does not cover: a bug, not bad input."""


def _sections(stage: str) -> tuple[str, ...]:
    try:
        return STAGE_SECTIONS[stage]
    except KeyError:
        raise UndeclaredParamsError(
            f"stage {stage!r} has no row in kmx_eval.stage_params.STAGE_SECTIONS "
            f"(rows: {', '.join(STAGE_SECTIONS)})") from None


class _Section:
    """A params section of which the stage may read only some keys."""

    def __init__(self, stage: str, name: str, section: Any, keys: set[str]):
        self._stage, self._name, self._section, self._keys = stage, name, section, keys

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._keys:
            raise UndeclaredParamsError(
                f"stage {self._stage!r} reads params {self._name}.{key}, which its resolved settings "
                f"(its dvc.yaml dependency) do not cover; add '{self._name}.{key}' (or "
                f"'{self._name}') to STAGE_SECTIONS[{self._stage!r}] in kmx_eval/stage_params.py")
        return getattr(self._section, key)


class StageParams:
    """The params one stage run may read (see the module docstring).

    Parameters
    ----------
    params : Params
        The validated ``params.yaml``.
    stage : str
        The stage's script name (a key of :data:`STAGE_SECTIONS`).
    dataset, combination : str, optional
        The stage's dataset and block combination (``cnn`` for the CNN's baselines).
    """

    def __init__(self, params: Params, stage: str, dataset: str | None = None,
                 combination: str | None = None):
        self._params, self._stage = params, stage
        self._dataset, self._combination = dataset, combination
        self._declared = _sections(stage)
        self._all = "*" in self._declared

    # -------------------------------------------------------------- access control
    def _need(self, what: str, attribute: str) -> None:
        if not self._all and what not in self._declared:
            raise UndeclaredParamsError(
                f"stage {self._stage!r} reads params.{attribute}, which its resolved settings (its "
                f"dvc.yaml dependency) do not cover; add '{what}' to STAGE_SECTIONS[{self._stage!r}] "
                f"in kmx_eval/stage_params.py")

    def _own_dataset(self, name: str, attribute: str) -> None:
        self._need("dataset", attribute)
        if not self._all and name != self._dataset:
            # Only this dataset's entry is in the stage's dependency.
            raise UndeclaredParamsError(
                f"stage {self._stage!r} of dataset {self._dataset!r} reads params of dataset {name!r}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        params = self._params
        if self._all:
            return getattr(params, name)
        if name in PLAIN_SECTIONS:
            if name in self._declared:
                return getattr(params, name)
            keys = {d.split(".", 1)[1] for d in self._declared if d.startswith(name + ".")}
            if keys:
                return _Section(self._stage, name, getattr(params, name), keys)
            self._need(name, name)
        if name == "datasets":
            self._need("dataset", name)
            return {self._dataset: params.datasets[self._dataset]}
        if name == "combinations":
            # A stage of one combination sees only its own: adding a combination to the study
            # does not rerun the others.
            self._need("combination", name)
            return [self._combination] if self._combination in params.combinations else []
        # Anything else (the global backbone section, model_dump...) needs the whole file.
        self._need("*", name)
        raise AssertionError("unreachable")  # pragma: no cover

    def dataset(self, name: str):
        self._own_dataset(name, f"dataset({name!r})")
        return self._params.dataset(name)

    def backbone_for(self, name: str):
        self._own_dataset(name, f"backbone_for({name!r})")
        keys = {d.split(".", 1)[1] for d in self._declared if d.startswith("backbone.")}
        if keys and "backbone" not in self._declared:  # a stage that reads some keys (prepare)
            return _Section(self._stage, "backbone", self._params.backbone_for(name), keys)
        self._need("backbone", f"backbone_for({name!r})")
        return self._params.backbone_for(name)

    def combination(self, name: str, where: str = "combination"):
        self._need("combination", f"combination({name!r})")
        self._need("features", f"combination({name!r})")  # its block weighting
        if not self._all and name != self._combination:
            raise UndeclaredParamsError(
                f"stage {self._stage!r} of combination {self._combination!r} reads combination {name!r}")
        return self._params.combination(name, where=where)

    def combination_list(self):
        self._need("combination", "combination_list()")
        return [c for c in self._params.combination_list() if self._all or c.name == self._combination]


def resolved_settings(params: Params, stage: str, dataset: str | None = None,
                      combination: str | None = None) -> dict[str, Any]:
    """Every value ``stage`` may read for ``dataset`` and ``combination``, defaults filled in.

    This is what the ``resolve`` stage writes as the stage's DVC dependency; it holds exactly the
    params :class:`StageParams` lets the stage read, so a change to anything else does not rerun it.
    """
    declared = _sections(stage)
    if "*" in declared:
        return params.to_full_dict()
    out: dict[str, Any] = {}
    for item in declared:
        section, _, key = item.partition(".")
        if section == "dataset":
            entry = params.dataset(dataset).model_dump(mode="json", exclude_none=True)
            if "backbone" not in declared:  # its overrides reach the stage as backbone.<key> only
                entry.pop("backbone", None)
            out["dataset"] = {"name": dataset, **entry}
        elif section == "backbone" and key:  # one key of the dataset's backbone, overrides applied
            out.setdefault("backbone", {})[key] = getattr(params.backbone_for(dataset), key)
        elif section == "backbone":
            out["backbone"] = params.backbone_for(dataset).model_dump(mode="json")
            if stage == "train" and out["backbone"].get("checkpoint"):
                # DVC sees the path in params, not the file: its content decides whether to retrain.
                out["checkpoint_sha256"] = _file_sha256(out["backbone"]["checkpoint"])
        elif section == "combination":
            out["combination"] = combination
        elif section == "seeds":
            out["seeds"] = list(params.seeds)
        elif key:
            value = getattr(getattr(params, section), key)
            dumped = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
            out.setdefault(section, {})[key] = dumped
        else:
            out[section] = getattr(params, section).model_dump(mode="json")
    return out


def _file_sha256(path: str) -> str:
    """The checkpoint's sha256, or ``"missing"`` (the train stage then stops with one line)."""
    # models.backbone loads torch: only a study that names a checkpoint needs its digest
    from kmx_eval.models.backbone import checkpoint_sha256

    file = Path(path).expanduser()
    return checkpoint_sha256(file) if file.is_file() else "missing"


def stage_runs(params: Params) -> list[tuple[str, str | None, str | None]]:
    """Every ``(stage, dataset, combination)`` that ``dvc.yaml`` instantiates for ``params``."""
    runs: list[tuple[str, str | None, str | None]] = []
    for dataset in params.datasets:
        for stage in STAGE_SECTIONS:
            if stage in STUDY_STAGES:
                continue
            if stage in PER_COMBINATION:
                runs += [(stage, dataset, c) for c in params.combinations]
            else:
                runs.append((stage, dataset, None))
        runs.append(("evaluate", dataset, BASELINES))
    runs.append(("report", None, None))
    return runs
