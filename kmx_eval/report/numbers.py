"""The report's one number format, and the small tests of a value every part of the report shares.

Every number shown in the report (tables, HTML, headline sentences) goes through :func:`fmt`
(``SIGNIFICANT_DIGITS`` significant digits); the aggregated frame, the CSV tables and
``reports/metrics.json`` keep :func:`round_significant` of it (``STORED_DIGITS``), so the three hold
identical floats and format to identical strings.
"""

from __future__ import annotations

import math

import numpy as np

#: Significant digits of every number shown in the report (tables, HTML, headline sentences).
SIGNIFICANT_DIGITS = 4
#: Significant digits kept in the aggregated frame, the CSV tables and metrics.json, so that the
#: three hold identical floats and format to identical strings.
STORED_DIGITS = 10
MISSING = "n/a"
#: Cell of a table position that no row fills (e.g. agreement of the CNN with itself).
NOT_MEASURED = "–"


def fmt(x: float | None) -> str:
    """The report's number format: ``SIGNIFICANT_DIGITS`` significant digits, ``n/a`` if missing.

    Examples
    --------
    >>> fmt(0.412345), fmt(97.123), fmt(float("nan"))
    ('0.4123', '97.12', 'n/a')
    """
    if x is None:
        return MISSING
    x = float(x)
    if not math.isfinite(x):
        return MISSING
    text = f"{x:.{SIGNIFICANT_DIGITS}g}"
    return "0" if text == "-0" else text


def round_significant(x: float, digits: int = STORED_DIGITS) -> float:
    """Round ``x`` to ``digits`` significant digits (NaN and inf unchanged)."""
    x = float(x)
    if not math.isfinite(x) or x == 0.0:
        return x
    return float(f"{x:.{digits}g}")


def format_cell(value: float, low: float = np.nan, high: float = np.nan, *, seed_sd: float = np.nan) -> str:
    """``"value [low, high]"``, with ``" ± sd"`` when a spread across seeds exists."""
    if not finite(value):
        return MISSING
    text = fmt(value)
    if finite(low) and finite(high):
        text += f" [{fmt(low)}, {fmt(high)}]"
    if finite(seed_sd):
        text += f" ± {fmt(seed_sd)}"
    return text


def finite(x) -> bool:
    """True for a value that converts to a finite float (None, NaN, text: False)."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def direction(x) -> bool | None:
    """Parse a ``higher_is_better`` entry (bool, ``"True"``/``"False"``, 1/0, empty) to True/False/None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer, float, np.floating)):
        return bool(x)
    text = str(x).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None



def finite_bounds(low, high) -> bool:
    """True when both bounds of an interval are finite."""
    return finite(low) and finite(high)
