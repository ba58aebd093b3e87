"""Small prepared datasets shared by the data tests (built once per session, in memory)."""

from __future__ import annotations

import pytest

SIZE = 48  # side of the tiny synthetic images (tests read it through the `size` fixture)


def _tiny_synthetic_config(**overrides):
    from kmx_eval.data import SOURCES

    spec = {"source": "synthetic", "n_classes": 3, "train_per_class": 6, "test_per_class": 3,
            "clutter": 4, "n_parts": 3, "seed": 0}
    spec.update(overrides)
    return SOURCES.get("synthetic").Config.model_validate(spec)


@pytest.fixture(scope="session")
def size():
    return SIZE


@pytest.fixture(scope="session")
def tiny_config():
    """Factory of tiny synthetic configs: ``tiny_config(seed=1)``."""
    return _tiny_synthetic_config


@pytest.fixture(scope="session")
def synthetic_dd():
    """3 classes x (6 + 3) synthetic images at 48 px, with masks and part maps."""
    from kmx_eval.data import prepare_dataset

    return prepare_dataset(_tiny_synthetic_config(), SIZE)
