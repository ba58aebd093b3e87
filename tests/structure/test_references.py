"""References in the repository point inside it: docstrings cite docs/METHOD.md, which exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CITATION = re.compile(r"docs/METHOD\.md, section (\d+)")


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    files = [REPO / f for f in out.stdout.split()]
    return [f for f in files if f.suffix in {".py", ".md", ".yaml", ".j2", ".toml", ".cfg"} or f.name == "Makefile"]


def test_no_file_refers_to_a_file_outside_the_repository():
    # Built from pieces so that this file does not match itself.
    outside = re.compile("|".join([r"\.\./" + "shared", "shared/" + "METHOD", "shared/" + "PITFALLS"]))
    offenders = [f"{f.relative_to(REPO)}:{n}" for f in tracked_text_files() if f.exists()
                 for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
                 if outside.search(line)]
    assert offenders == []


def test_every_method_citation_names_a_section_of_docs_method():
    sections = set(re.findall(r"^## (\d+)\.", (REPO / "docs/METHOD.md").read_text(encoding="utf-8"), re.M))
    cited = {}
    for f in tracked_text_files():
        if f.exists():
            for number in CITATION.findall(f.read_text(encoding="utf-8")):
                cited.setdefault(number, f.relative_to(REPO))
    assert cited, "no docstring cites docs/METHOD.md"
    assert {n: str(f) for n, f in cited.items() if n not in sections} == {}
