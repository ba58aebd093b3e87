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
