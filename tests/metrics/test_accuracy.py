"""Accuracy and agreement are per-sample 0/1 vectors whose mean is the metric."""

import numpy as np
import pytest

from kmx_eval.metrics.accuracy import accuracy, agreement


def test_accuracy_per_sample_and_from_scores():
    labels = np.array([0, 1, 2, 1])
    assert accuracy([0, 1, 1, 1], labels).tolist() == [1.0, 1.0, 0.0, 1.0]
    scores = np.eye(3)[[0, 2, 2, 1]]
    assert accuracy(scores, labels).mean() == pytest.approx(0.75)


def test_agreement_and_shape_errors():
    assert agreement([1, 1, 0], [1, 0, 0]).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="samples"):
        agreement([1, 1], [1, 0, 0])
