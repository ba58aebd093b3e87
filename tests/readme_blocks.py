"""The README's fenced code blocks, for the tests that run or load them as a user would."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(language: str) -> list[str]:
    """The README's fenced code blocks of one language (```sh, ```yaml), indentation removed."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"^( *)```" + language + r"\n(.*?)^\1```", text, re.M | re.S)
    return ["\n".join(line[len(indent):] for line in body.splitlines()) for indent, body in blocks]


# A dvc command that runs stages: the stages call `python`, which must be the .venv's.
STAGE_RUNNING = r"dvc (?:repro|exp run|queue start)\b"


def unactivated_stage_runs(text: str) -> list[str]:
    """The places in a README ``text`` where a stage-running dvc command (``dvc repro``, ``dvc exp run``, ``dvc queue start``)
    would run the stages with whatever ``python`` the shell has: ``.venv/bin/dvc repro`` anywhere
    (prose or code: the stages' ``python`` is still the system one), and in any fenced block a
    ``dvc repro`` line with no ``source .venv/bin/activate`` before it in the block."""
    found = [m.group(0) for m in re.finditer(r"\.venv/bin/" + STAGE_RUNNING, text)]
    for indent, body in re.findall(r"^( *)```[\w-]*\n(.*?)^\1```", text, re.M | re.S):
        activated = False
        for line in body.splitlines():
            command = line.split("#")[0].strip()
            activated = activated or command in ("source .venv/bin/activate", ". .venv/bin/activate")
            if re.match(STAGE_RUNNING, command) and not activated:
                found.append(command)
    return found
