"""Load a stage script of ``stages/`` as a module, so tests call its ``main(argv)`` in process.

``stages/`` holds entry points, not a package; every stage test loads them the same way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

STAGES = Path(__file__).resolve().parents[1] / "stages"


def load_stage_module(name: str) -> ModuleType:
    """The module of ``stages/<name>.py``."""
    spec = importlib.util.spec_from_file_location(f"kmx_stage_{name}", STAGES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_stage(name: str):
    """The stage's command: ``load_stage("fit")(["shapes", "B4"])`` returns its exit status."""
    return load_stage_module(name).main
