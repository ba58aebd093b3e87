"""The README's examples are the tested ones: every params snippet it shows validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from readme_blocks import README, code_blocks, unactivated_stage_runs

from kmx_eval.validation import parse_params

REPO = Path(__file__).resolve().parents[2]


def shipped_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("snippet", code_blocks("yaml"))
def test_each_params_snippet_of_the_readme_validates_in_the_shipped_params(snippet):
    entry = yaml.safe_load(snippet)
    params = shipped_params()
    for section, value in entry.items():
        if isinstance(value, dict) and isinstance(params.get(section), dict):
            params[section] = {**params[section], **value}
        else:
            params[section] = value
    parsed = parse_params(params, source="README snippet")
    for name in entry.get("datasets", {}):
        assert name in parsed.datasets


def test_the_readme_shows_a_two_line_dataset_entry():
    minimal = [yaml.safe_load(s)["datasets"] for s in code_blocks("yaml")
               if len(yaml.safe_load(s).get("datasets", {})) == 1]
    assert any(set(next(iter(d.values()))) == {"source", "path"} for d in minimal)


def test_the_readme_shell_commands_activate_the_environment_before_dvc():
    for block in code_blocks("sh"):
        lines = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
        dvc_lines = [i for i, line in enumerate(lines) if line.startswith("dvc ")]
        if dvc_lines:
            assert lines[0] == "source .venv/bin/activate", block


def test_no_readme_command_runs_the_stages_outside_the_environment():
    # `.venv/bin/dvc repro` in a new shell runs the stages with the system python, which has no
    # kmx_eval: every stage-running dvc command is `make repro` or follows an activation.
    assert unactivated_stage_runs(README.read_text(encoding="utf-8")) == []


def test_a_stage_running_dvc_command_without_activation_is_caught():
    text = ("then `.venv/bin/dvc repro`.\n"
            "```\ndvc exp run -S seeds=[1]\n```\n"
            "```sh\nsource .venv/bin/activate\ndvc repro   # fine\n```\n"
            "```\n.venv/bin/dvc remote add -d shared /x   # runs no stage\n```\n")
    assert unactivated_stage_runs(text) == [".venv/bin/dvc repro", "dvc exp run -S seeds=[1]"]
