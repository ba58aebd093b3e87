"""The base models of the params schema that dataset sources build on.

Kept apart from :mod:`kmx_eval.config` so that a dataset source (``kmx_eval/data/*``) can declare
its ``Config`` without importing the whole schema, and the schema can look up the ``SOURCES``
registry without the two importing each other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kmx_eval.errors import ParamsError

#: The largest seed: numpy's and scikit-learn's random states take 32-bit unsigned seeds.
MAX_SEED = 2**32 - 1


def check_seed(seed: int, where: str) -> int:
    """``seed`` when numpy and scikit-learn accept it; else one line naming ``where``."""
    if not 0 <= seed <= MAX_SEED:
        raise ParamsError(f"{where}: {seed} is not a valid seed; seeds are integers from 0 to "
                          f"{MAX_SEED} (2**32 - 1, what numpy and scikit-learn accept)")
    return seed


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
    seed: int = Field(0, ge=0, le=MAX_SEED)  # what numpy and scikit-learn accept
    backbone: BackboneOverride = BackboneOverride()
