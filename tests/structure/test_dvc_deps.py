"""dvc.yaml cannot go stale: every module a stage imports, and every param it reads, is a dependency.

Modules: the stage script's imports within kmx_eval, followed transitively through the source
(kmx_eval.imports), must each be covered by one of the stage's deps. Params: each stage depends
on its resolved settings file, which holds exactly what the StageParams view lets it read
(tests/core/test_stage_params.py checks the view); no stage tracks single keys, which DVC would
refuse when a user leaves a key with a default out of params.yaml.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from kmx_eval.imports import module_files, script_imports, uncovered
from kmx_eval.stage_params import PER_COMBINATION, STAGE_SECTIONS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = re.compile(r"python (stages/(\w+)\.py)")


def dvc_stages(path: Path = REPO / "dvc.yaml") -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["stages"]


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def missing_code_deps(stages: dict, repo: Path = REPO) -> dict[str, list[str]]:
    """Per stage of a dvc.yaml mapping, the kmx_eval files it imports that no dep covers."""
    gaps = {}
    for name, stage in stages.items():
        script, _ = SCRIPT.search(stage["cmd"]).groups()
        files = module_files(script_imports(repo / script, repo / "kmx_eval"), repo / "kmx_eval")
        missing = uncovered(files | {Path(script)}, _deps(stage))
        if missing:
            gaps[name] = missing
    return gaps


def expected_settings_dep(name: str, stage: dict) -> str:
    """The resolved settings file a stage of dvc.yaml must depend on (kmx_eval.paths.resolved_settings)."""
    script = SCRIPT.search(stage["cmd"]).group(2)
    if "matrix" not in stage:
        return f"resolved/{script}.json"
    args = stage["cmd"].split(f"stages/{script}.py", 1)[1].split()
    combination = args[1] if len(args) > 1 else None
    if combination == "${item.combination}":
        assert script in PER_COMBINATION, name
    suffix = f"-{combination}" if combination else ""
    return f"resolved/${{item.dataset}}/{script}{suffix}.json"


def test_every_stage_depends_on_every_module_it_imports():
    assert missing_code_deps(dvc_stages()) == {}


def test_a_stage_whose_import_is_missing_from_its_deps_is_caught():
    stages = copy.deepcopy(dvc_stages())
    stages["evaluate"]["deps"] = [d for d in stages["evaluate"]["deps"] if d != "kmx_eval/heads"]
    stages["train"]["deps"] = [d for d in stages["train"]["deps"] if d != "kmx_eval/models"]
    gaps = missing_code_deps(stages)
    assert set(gaps) == {"evaluate", "train"}
    assert "kmx_eval/heads/module.py" in gaps["evaluate"]
    assert "kmx_eval/models/backbone.py" in gaps["train"]


@pytest.mark.parametrize("name", [n for n in dvc_stages() if n != "resolve"])
def test_each_stage_depends_on_its_resolved_settings_and_tracks_no_single_key(name):
    stage = dvc_stages()[name]
    script = SCRIPT.search(stage["cmd"]).group(2)
    assert script in STAGE_SECTIONS, f"{script} has no row in STAGE_SECTIONS"
    assert expected_settings_dep(name, stage) in _deps(stage)
    assert "params" not in stage, f"{name} tracks params keys; DVC refuses them when a user omits one"


def test_the_resolve_stage_runs_when_params_or_code_change_and_tracks_the_whole_file():
    """Not always_changed: a no-op dvc repro starts no Python (issue 21's 2 s); make repro runs it first."""
    stage = dvc_stages()["resolve"]
    assert "always_changed" not in stage
    assert {"stages/resolve.py", "kmx_eval"} <= set(_deps(stage))
    assert stage["params"] == [{"params.yaml": None}]
    assert stage["outs"] == [{"resolved": {"cache": False, "persist": True}}]  # kept when resolve refuses
