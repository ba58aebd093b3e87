"""The report's number format (kmx_eval/report/numbers.py)."""

from __future__ import annotations

import numpy as np

from kmx_eval.report import numbers
from kmx_eval.report.numbers import fmt


def test_fmt_is_four_significant_digits_and_marks_missing():
    assert fmt(0.412345) == "0.4123"
    assert fmt(97.126) == "97.13"
    assert fmt(1.0) == "1"
    assert fmt(-0.0) == "0"
    assert fmt(float("nan")) == fmt(None) == "n/a"
    assert numbers.format_cell(0.5, 0.4, 0.6) == "0.5 [0.4, 0.6]"
    assert numbers.format_cell(0.5, 0.4, 0.6, seed_sd=0.01) == "0.5 [0.4, 0.6] ± 0.01"
    assert numbers.format_cell(np.nan, 0.4, 0.6) == "n/a"

