"""Whole-file validation of ``params.yaml`` against every registry.

:mod:`kmx_eval.config` is the schema alone; the names a params file gives (dataset sources,
architectures, explainers, Quantus metrics) are checked against registries that live with their
implementations. This module gathers all of them, for the ``resolve`` stage (which runs first in
every ``dvc repro``, so a wrong name stops the study before any work), for tests and for scripts.
A stage checks only the names it uses, so it does not import (and depend on) the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kmx_eval import config
from kmx_eval.data import SOURCES
from kmx_eval.explain import EXPLAINERS
from kmx_eval.metrics.quantus import QUANTUS_METRICS
from kmx_eval.models.backbone import ARCHITECTURES


def all_registries() -> dict[str, Any]:
    """Every registry a params name refers to, keyed as :func:`kmx_eval.config.parse_params` expects."""
    return {"sources": SOURCES, "architectures": ARCHITECTURES, "explainers": EXPLAINERS,
            "quantus_metrics": QUANTUS_METRICS}


def parse_params(raw: Any, source: str = "params.yaml") -> config.Params:
    """:func:`kmx_eval.config.parse_params` with every name checked."""
    return config.parse_params(raw, source=source, registries=all_registries())


def load_params(path: str | Path = "params.yaml") -> config.Params:
    """:func:`kmx_eval.config.load_params` with every name checked."""
    return config.load_params(path, registries=all_registries())
