"""Predictive performance as per-sample 0/1 vectors (docs/METHOD.md, section 4).

Top-1 accuracy of a head is ``1/n sum_i [yhat_i = y_i]`` and its agreement with the original CNN
(post-hoc fidelity) is ``1/n sum_i [yhat_i = yhat_i^CNN]``. Both are returned per sample, so that
the mean is the metric, a proportion with a Wilson interval
(:func:`~kmx_eval.metrics.bootstrap.wilson_interval`; across seeds
:func:`~kmx_eval.metrics.bootstrap.proportion_ci`, docs/METHOD.md, section 6).
"""

from __future__ import annotations

import numpy as np


def _labels(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2:  # scores (n, n_classes): the decision is the arg-max
        arr = arr.argmax(axis=1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be labels (n,) or class scores (n, n_classes), got shape {arr.shape}")
    return arr


def _compare(a_name: str, a, b_name: str, b) -> np.ndarray:
    x, y = _labels(a_name, a), _labels(b_name, b)
    if x.shape != y.shape:
        raise ValueError(f"{a_name} has {x.size} samples but {b_name} has {y.size}")
    return (x == y).astype(np.float64)


def accuracy(predictions, labels) -> np.ndarray:
    """Per-sample correctness ``[yhat_i = y_i]`` as float 0/1, shape (n,).

    ``predictions`` may be labels (n,) or class scores (n, n_classes), whose arg-max is taken.
    """
    return _compare("predictions", predictions, "labels", labels)


def agreement(predictions, reference) -> np.ndarray:
    """Per-sample agreement ``[yhat_i = yhat_i^ref]`` with a reference model's decisions (n,).

    With ``reference`` the original CNN's predictions this is the head's post-hoc fidelity.
    """
    return _compare("predictions", predictions, "reference", reference)
