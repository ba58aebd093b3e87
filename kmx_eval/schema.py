"""The base models of the params schema that dataset sources build on.

Kept apart from :mod:`kmx_eval.config` so that a dataset source (``kmx_eval/data/*``) can declare
its ``Config`` without importing the whole schema, and the schema can look up the ``SOURCES``
registry without the two importing each other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneOverride(Strict):
    """Per-dataset overrides of :class:`kmx_eval.config.BackboneConfig` (only the keys given are replaced)."""

    architecture: str | None = None
    weights: Literal["none", "imagenet"] | None = None
    checkpoint: str | None = None
    image_size: int | None = None
    epochs: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    augment: bool | None = None


class DatasetConfig(Strict):
    """Fields every dataset entry has; each source subclasses it with its own fields."""

    source: str
    seed: int = 0
    backbone: BackboneOverride = BackboneOverride()
