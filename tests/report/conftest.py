"""Fixtures of the report tests (the generators live in ``report_fixtures.py``)."""

import pytest
from report_fixtures import synthetic_frames


@pytest.fixture(scope="session")
def frames():
    """(metrics, samples, curves) of 2 datasets x (B4, B34, B234, cnn) x 2 seeds."""
    return synthetic_frames()
