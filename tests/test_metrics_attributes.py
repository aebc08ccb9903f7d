import math

import numpy as np
import pytest

from bench.metrics import ap_mean, average_precision, average_precision_per_attribute


def test_perfect_score_has_ap_one():
    labels = np.array([0, 1, 0, 1, 1, 0, 0])
    result = average_precision(labels * 2.0 + np.arange(7) * 0.01, labels)
    assert result.ap == pytest.approx(1.0)
    assert result.prior == pytest.approx(3 / 7) and result.n == 7


def test_reversed_score_gets_the_lowest_possible_ap():
    n, p = 10, 4
    labels = np.array([1] * p + [0] * (n - p))
    scores = np.arange(n, dtype=float)  # positives get the lowest scores: fully reversed
    expected = np.mean([k / (n - p + k) for k in range(1, p + 1)])
    assert average_precision(scores, labels).ap == pytest.approx(expected)


def test_reversed_score_with_one_positive_equals_the_prior():
    labels = np.array([1, 0, 0, 0, 0])
    assert average_precision(np.arange(5.0), labels).ap == pytest.approx(0.2)


def test_random_score_ap_is_near_the_positive_prior():
    rng = np.random.default_rng(0)
    labels = (rng.random(20000) < 0.3).astype(int)
    result = average_precision(rng.random(20000), labels)
    assert abs(result.ap - result.prior) < 0.02


def test_curve_is_downsampled_for_storage_and_keeps_its_ends():
    rng = np.random.default_rng(1)
    labels = (rng.random(5000) < 0.5).astype(int)
    result = average_precision(labels + rng.normal(size=5000), labels)
    assert 2 < len(result.precision) <= 101 and len(result.precision) == len(result.recall)
    assert result.recall[0] == 1.0 and result.recall[-1] == 0.0 and result.precision[-1] == 1.0


def test_single_class_labels_give_nan():
    assert math.isnan(average_precision([0.1, 0.2], [1, 1]).ap)


def test_per_attribute_and_mean():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    results = average_precision_per_attribute(labels.astype(float), labels, ["age", "pose"])
    assert set(results) == {"age", "pose"}
    assert ap_mean(results) == pytest.approx(1.0)
