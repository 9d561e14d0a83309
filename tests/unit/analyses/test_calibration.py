"""stress.calibration against slow loops, hand computations and torch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stress.analyses.calibration import brier_score, calibration_summary, expected_calibration_error, fit_temperature, negative_log_likelihood, reliability_bins, softmax
from stress.errors import StressError


def slow_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Reference ECE: per-sample Python loop, bins (k/n, (k+1)/n] as in Guo et al. 2017."""
    bin_counts = [0] * n_bins
    bin_confidence = [0.0] * n_bins
    bin_correct = [0.0] * n_bins
    for row, label in zip(probs.tolist(), labels.tolist()):
        confidence = max(row)
        prediction = row.index(confidence)
        for k in range(n_bins):
            if k / n_bins < confidence <= (k + 1) / n_bins:
                bin_counts[k] += 1
                bin_confidence[k] += confidence
                bin_correct[k] += float(prediction == label)
                break
    total = sum(bin_counts)
    error = 0.0
    for count, confidence_sum, correct_sum in zip(bin_counts, bin_confidence, bin_correct):
        if count:
            error += count / total * abs(correct_sum / count - confidence_sum / count)
    return error


def sample_labels(probs: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of (N, C) probabilities."""
    cumulative = probs.cumsum(axis=1)
    draws = generator.random((probs.shape[0], 1))
    return np.minimum((cumulative < draws).sum(axis=1), probs.shape[1] - 1)


def three_class(confidence: float, predicted: int) -> list[float]:
    """A 3-class probability row whose top class `predicted` has probability `confidence`."""
    rest = (1.0 - confidence) / 2.0
    row = [rest, rest, rest]
    row[predicted] = confidence
    return row


# ---------------------------------------------------------------- softmax


def test_softmax_matches_torch_and_is_stable():
    generator = np.random.default_rng(0)
    logits = generator.normal(size=(6, 4)) * 5
    expected = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(softmax(logits), expected, rtol=1e-12)
    huge = np.array([[1000.0, 0.0, -1000.0], [1e4, 1e4, 0.0]])
    probs = softmax(huge)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], atol=1e-12)
    # accepts torch tensors too
    np.testing.assert_allclose(softmax(torch.from_numpy(logits)), expected, rtol=1e-12)


# ---------------------------------------------------------------- ECE and bins


def test_ece_hand_example():
    # n_bins = 10: two images at 0.95, both correct -> bin (0.9, 1]: acc 1, conf 0.95, weight 1/2
    # 0.55 correct -> bin (0.5, 0.6]: |1 - 0.55| = 0.45, weight 1/4
    # 0.65 wrong   -> bin (0.6, 0.7]: |0 - 0.65| = 0.65, weight 1/4
    probs = np.array([three_class(0.95, 0), three_class(0.95, 1), three_class(0.55, 2), three_class(0.65, 0)])
    labels = np.array([0, 1, 2, 1])
    expected = 0.5 * 0.05 + 0.25 * 0.45 + 0.25 * 0.65
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected, abs=1e-12)
    assert slow_ece(probs, labels, 10) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n_bins", [1, 5, 15])
def test_ece_matches_slow_loop(n_bins):
    generator = np.random.default_rng(n_bins)
    probs = generator.dirichlet(np.full(10, 0.3), size=300)
    labels = generator.integers(0, 10, size=300)
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(slow_ece(probs, labels, n_bins), abs=1e-12)


def test_perfectly_calibrated_bins_give_zero_ece():
    # Within one bin: confidence 0.8 on five images, four correct.
    probs = np.array([three_class(0.8, 0)] * 5)
    labels = np.array([0, 0, 0, 0, 1])
    assert expected_calibration_error(probs, labels, n_bins=15) == pytest.approx(0.0, abs=1e-12)


def test_bin_edges_belong_to_lower_bin_and_one_to_last():
    # Confidences exactly on edges 0.5 and 0.7 (n_bins = 10), plus 1.0 and a value just above 0.5.
    probs = np.array(
        [three_class(0.5, 0), three_class(0.7, 0), [1.0, 0.0, 0.0], three_class(0.5000001, 0)]
    )
    labels = np.zeros(4, dtype=np.int64)
    bins = reliability_bins(probs, labels, n_bins=10)
    assert bins["edges"][5] == 0.5 and bins["edges"][7] == 0.7
    expected_counts = [0] * 10
    expected_counts[4] += 1  # 0.5 -> (0.4, 0.5]
    expected_counts[6] += 1  # 0.7 -> (0.6, 0.7]
    expected_counts[9] += 1  # 1.0 -> (0.9, 1.0]
    expected_counts[5] += 1  # 0.5000001 -> (0.5, 0.6]
    assert bins["count"] == expected_counts
    # and the slow reference puts them in the same bins, so the ECEs agree
    assert expected_calibration_error(probs, labels, 10) == pytest.approx(slow_ece(probs, labels, 10), abs=1e-12)


def test_reliability_bins_content_and_json():
    probs = np.array([three_class(0.95, 0), three_class(0.95, 1), three_class(0.55, 2), three_class(0.65, 0)])
    labels = np.array([0, 2, 2, 1])
    bins = reliability_bins(probs, labels, n_bins=5)
    assert bins["edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"] == [0, 0, 1, 1, 2]
    assert bins["confidence"][:2] == [None, None]
    assert bins["accuracy"][:2] == [None, None]
    assert bins["confidence"][2:] == pytest.approx([0.55, 0.65, 0.95])
    assert bins["accuracy"][2:] == pytest.approx([1.0, 0.0, 0.5])
    json.dumps(bins)
    # ECE recomputed from the diagram data
    total = sum(bins["count"])
    from_bins = sum(
        count / total * abs(acc - conf)
        for count, acc, conf in zip(bins["count"], bins["accuracy"], bins["confidence"])
        if count
    )
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(from_bins, abs=1e-12)


def test_input_validation():
    probs = np.array([three_class(0.9, 0)])
    with pytest.raises(StressError):
        expected_calibration_error(probs, np.array([0, 1]))
    with pytest.raises(StressError):
        expected_calibration_error(probs, np.array([3]))
    with pytest.raises(StressError):
        expected_calibration_error(probs, np.array([0.0]))
    with pytest.raises(StressError):
        reliability_bins(probs, np.array([0]), n_bins=0)


# ---------------------------------------------------------------- NLL and Brier


def test_nll_matches_torch_cross_entropy():
    generator = np.random.default_rng(1)
    logits = generator.normal(size=(50, 10)) * 4
    labels = generator.integers(0, 10, size=50)
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert negative_log_likelihood(logits, labels) == pytest.approx(expected, rel=1e-12)
    # extreme logits stay finite: -log softmax = 2000 exactly for a label 2000 below the max
    assert negative_log_likelihood(np.array([[1000.0, -1000.0]]), np.array([1])) == pytest.approx(2000.0)


def test_brier_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]])
    # label 0: 0.3^2 + 0.2^2 + 0.1^2 = 0.14; label 1: 0.7^2 + 0.8^2 + 0.1^2 = 1.14
    assert brier_score(probs, np.array([0, 1])) == pytest.approx((0.14 + 1.14) / 2)
    assert brier_score(np.array([[0.0, 1.0]]), np.array([1])) == 0.0
    assert brier_score(np.array([[0.0, 1.0]]), np.array([0])) == pytest.approx(2.0)


# ---------------------------------------------------------------- temperature scaling


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_recovers_known_temperature(true_temperature):
    generator = np.random.default_rng(42)
    logits = generator.normal(scale=3.0, size=(20000, 10))
    labels = sample_labels(softmax(logits / true_temperature), generator)
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.04)
    # the fitted T is the NLL minimum: nudging it either way does not help
    best = negative_log_likelihood(logits / fitted, labels)
    assert best <= negative_log_likelihood(logits / (fitted * 1.02), labels)
    assert best <= negative_log_likelihood(logits / (fitted / 1.02), labels)


def test_temperature_scaling_reduces_ece_of_overconfident_logits():
    generator = np.random.default_rng(3)
    base = generator.normal(scale=2.0, size=(5000, 10))
    labels = sample_labels(softmax(base), generator)
    overconfident = base * 3.0  # calibrated at T = 3
    temperature = fit_temperature(overconfident, labels)
    assert temperature > 2.0
    summary = calibration_summary(overconfident, labels, temperature=temperature)
    assert summary["ece_after_temperature"] < summary["ece"] / 2
    assert summary["nll_after_temperature"] < summary["nll"]
    assert summary["brier_after_temperature"] < summary["brier"]
    assert summary["temperature"] == temperature
    json.dumps(summary)


def test_calibration_summary_matches_parts():
    generator = np.random.default_rng(4)
    logits = generator.normal(size=(40, 5)) * 3
    labels = generator.integers(0, 5, size=40)
    summary = calibration_summary(logits, labels, n_bins=10)
    assert set(summary) == {"acc", "ece", "nll", "brier"}
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    assert summary["acc"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    assert summary["ece"] == pytest.approx(slow_ece(probs, labels, 10), abs=1e-12)
    assert summary["nll"] == pytest.approx(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())
    assert summary["brier"] == pytest.approx(float(((probs - np.eye(5)[labels]) ** 2).sum(1).mean()))
    assert all(type(value) is float for value in summary.values())
    with pytest.raises(StressError):
        calibration_summary(logits, labels, temperature=0.0)
    # T = 1 changes nothing
    same = calibration_summary(logits, labels, temperature=1.0, n_bins=10)
    assert same["ece_after_temperature"] == pytest.approx(summary["ece"], abs=1e-12)
    assert math.isclose(same["nll_after_temperature"], summary["nll"], rel_tol=1e-12)


def test_ece_from_confidences_matches_the_probability_table_version():
    from stress.analyses.calibration import expected_calibration_error, expected_calibration_error_from_confidences

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(400, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 10, size=400)
    confidences, correct = probs.max(1), probs.argmax(1) == labels
    assert expected_calibration_error_from_confidences(confidences, correct, 15) == pytest.approx(
        expected_calibration_error(probs, labels, 15), abs=1e-12
    )
