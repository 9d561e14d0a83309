"""Calibration metrics and temperature scaling.

Inputs are logits (N, C) or probabilities (N, C) with integer labels (N,), as
numpy arrays (CPU torch tensors and lists are accepted too); everything is
computed in float64 and returned as plain Python floats, lists and dicts so it
can be written to JSON as is.

Binning follows Guo et al. 2017 ("On Calibration of Modern Neural Networks"):
the top-class confidence is sorted into `n_bins` equal-width bins over (0, 1],
bin k covering (k/n_bins, (k+1)/n_bins]. A confidence exactly on an edge
therefore belongs to the lower bin, and a confidence of 1.0 to the last one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize

from stress.analyses.stats import bootstrap_ci
from stress.errors import StressError

# Search range for the temperature. NLL is convex in 1/T, so a bounded scalar
# search on log T finds the global optimum; the bounds only matter for
# degenerate data (perfectly separable logits push T towards 0).
TEMPERATURE_BOUNDS = (1e-2, 1e2)


def _to_numpy(array: Any) -> np.ndarray:
    """numpy view of an array-like; torch tensors are detached and moved to the CPU first."""
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _check_scores_and_labels(scores: Any, labels: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    values = _to_numpy(scores).astype(np.float64)  # (N, C)
    targets = _to_numpy(labels)  # (N,)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise StressError(f"{name} must have shape (N, C) with N, C > 0, got {values.shape}")
    if targets.shape != (values.shape[0],):
        raise StressError(f"labels must have shape ({values.shape[0]},), got {targets.shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise StressError(f"labels must be integers, got dtype {targets.dtype}")
    if targets.min() < 0 or targets.max() >= values.shape[1]:
        raise StressError(f"labels must lie in [0, {values.shape[1] - 1}]")
    return values, targets.astype(np.int64)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of float64 (N, C) logits; subtracting the row max avoids overflow."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: Any) -> np.ndarray:
    """Numerically stable row-wise softmax: (N, C) logits -> float64 (N, C) probabilities."""
    values = _to_numpy(logits).astype(np.float64)
    if values.ndim != 2:
        raise StressError(f"logits must have shape (N, C), got {values.shape}")
    return np.exp(_log_softmax(values))


def _bin_indices(confidences: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index in [0, n_bins) per confidence, bins (k/n, (k+1)/n]; 0 itself joins the first bin."""
    edges = np.arange(n_bins + 1) / n_bins  # k / n is correctly rounded, so 0.7 sits exactly on an edge
    # side="left" returns i with edges[i-1] < c <= edges[i], i.e. bin i - 1.
    return np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, n_bins - 1)


def _binned_statistics(probs: Any, labels: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: count, summed confidence and summed correctness, each (n_bins,)."""
    probabilities, targets = _check_scores_and_labels(probs, labels, "probs")
    return _bin_confidences(probabilities.max(axis=1), probabilities.argmax(axis=1) == targets, n_bins)


def _bin_confidences(confidences: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if n_bins < 1:
        raise StressError(f"n_bins must be positive, got {n_bins}")
    confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)  # (N,)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)  # (N,)
    bins = _bin_indices(confidences, n_bins)  # (N,)
    counts = np.bincount(bins, minlength=n_bins)
    confidence_sums = np.bincount(bins, weights=confidences, minlength=n_bins)
    correct_sums = np.bincount(bins, weights=correct, minlength=n_bins)
    return counts, confidence_sums, correct_sums


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE: sum over bins of (bin count / N) * |bin accuracy - bin mean confidence|."""
    counts, confidence_sums, correct_sums = _binned_statistics(probs, labels, n_bins)
    # count * |acc - conf| = |correct_sum - confidence_sum|, which needs no division by empty bins.
    return float(np.abs(correct_sums - confidence_sums).sum() / counts.sum())


def expected_calibration_error_from_confidences(confidences: Any, correct: Any, n_bins: int = 15) -> float:
    """ECE from top-1 confidences and correctness flags, when the full probability table is not kept."""
    counts, confidence_sums, correct_sums = _bin_confidences(_to_numpy(confidences), _to_numpy(correct), n_bins)
    return float(np.abs(correct_sums - confidence_sums).sum() / counts.sum())


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> dict:
    """Reliability-diagram data: {"edges" (n_bins + 1), "confidence", "accuracy", "count" (n_bins each)}.

    Mean confidence and accuracy of an empty bin are None.
    """
    counts, confidence_sums, correct_sums = _binned_statistics(probs, labels, n_bins)
    confidence = [float(s / c) if c else None for s, c in zip(confidence_sums, counts)]
    accuracy = [float(s / c) if c else None for s, c in zip(correct_sums, counts)]
    return {
        "edges": [float(edge) for edge in np.arange(n_bins + 1) / n_bins],
        "confidence": confidence,
        "accuracy": accuracy,
        "count": [int(c) for c in counts],
    }


def negative_log_likelihood(logits: Any, labels: Any) -> float:
    """Mean cross-entropy -log softmax(logits)[label] over the N images (natural log)."""
    values, targets = _check_scores_and_labels(logits, labels, "logits")
    log_probs = _log_softmax(values)  # (N, C)
    return float(-log_probs[np.arange(len(targets)), targets].mean())


def brier_score(probs: Any, labels: Any) -> float:
    """Multi-class Brier score (Brier 1950): mean over images of sum_c (p_c - onehot_c)^2, in [0, 2].

    Note: some libraries divide by the number of classes as well; this one does not.
    """
    probabilities, targets = _check_scores_and_labels(probs, labels, "probs")
    onehot = np.zeros_like(probabilities)  # (N, C)
    onehot[np.arange(len(targets)), targets] = 1.0
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def fit_temperature(logits: Any, labels: Any) -> float:
    """Temperature T > 0 minimising the NLL of logits / T (Guo et al. 2017); fit it on validation logits.

    Optimises log T with bounded Brent search inside TEMPERATURE_BOUNDS; the
    NLL is convex in 1/T, hence unimodal in log T, so the optimum is global.
    """
    values, targets = _check_scores_and_labels(logits, labels, "logits")
    rows = np.arange(len(targets))

    def nll_at(log_temperature: float) -> float:
        log_probs = _log_softmax(values / math.exp(log_temperature))
        return float(-log_probs[rows, targets].mean())

    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    result = optimize.minimize_scalar(nll_at, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(result.x))


def calibration_summary(logits: Any, labels: Any, temperature: float | None = None, n_bins: int = 15) -> dict:
    """{"acc", "ece", "nll", "brier"} of the logits; with a temperature also "temperature" and
    "ece_after_temperature", "nll_after_temperature", "brier_after_temperature" of logits / T.
    """
    values, targets = _check_scores_and_labels(logits, labels, "logits")
    probabilities = softmax(values)  # (N, C)
    summary = {
        "acc": float((probabilities.argmax(axis=1) == targets).mean()),
        "ece": expected_calibration_error(probabilities, targets, n_bins),
        "nll": negative_log_likelihood(values, targets),
        "brier": brier_score(probabilities, targets),
    }
    if temperature is not None:
        if not temperature > 0:
            raise StressError(f"temperature must be positive, got {temperature}")
        scaled = values / temperature
        scaled_probabilities = softmax(scaled)
        summary["temperature"] = float(temperature)
        summary["ece_after_temperature"] = expected_calibration_error(scaled_probabilities, targets, n_bins)
        summary["nll_after_temperature"] = negative_log_likelihood(scaled, targets)
        summary["brier_after_temperature"] = brier_score(scaled_probabilities, targets)
    return summary


def _ece_intervals(logits: np.ndarray, labels: np.ndarray, temperature: float, n_bins: int, n_boot: int = 1000) -> dict:
    """95% bootstrap intervals over test images for ECE, ECE after temperature, and their difference (paired)."""
    before, after = softmax(logits), softmax(np.asarray(logits) / temperature)
    correct = (before.argmax(1) == labels).astype(np.float64)  # temperature does not change the argmax
    table = np.stack([before.max(1), after.max(1), correct], axis=1)  # (n, 3): resampled together

    def ece(column: int):
        return lambda sample: expected_calibration_error_from_confidences(sample[:, column], sample[:, 2], n_bins)

    def reduction(sample: np.ndarray) -> float:
        return ece(0)(sample) - ece(1)(sample)

    return {
        "ece_interval": list(bootstrap_ci(ece(0), table, n_boot=n_boot)),
        "ece_after_temperature_interval": list(bootstrap_ci(ece(1), table, n_boot=n_boot)),
        "ece_reduction_interval": list(bootstrap_ci(reduction, table, n_boot=n_boot)),
    }


def summarise_calibration(
    test_logits: dict[str, np.ndarray], val_logits: dict[str, np.ndarray], test_labels: np.ndarray, val_labels: np.ndarray,
    merged: dict, corruptions: list[str], severities: list[int], n_bins: int,
) -> dict:
    """ECE (15 bins), NLL, Brier clean and under each corruption; temperature fitted on validation. One entry per model of `test_logits`."""
    result = {}
    for v in test_logits:
        temperature = fit_temperature(val_logits[v], val_labels)
        clean = calibration_summary(test_logits[v], test_labels, temperature=temperature, n_bins=n_bins)
        by_corruption = {}
        for c in corruptions:
            values = []
            for s in severities:
                cell = merged[f"{v}|{c}|{s}"]
                values.append(expected_calibration_error_from_confidences(cell["confidence"], cell["correct"], n_bins))
            by_corruption[c] = values
        nll = {c: [float(merged[f"{v}|{c}|{s}"]["nll"].mean()) for s in severities] for c in corruptions}
        brier = {c: [float(merged[f"{v}|{c}|{s}"]["brier"].mean()) for s in severities] for c in corruptions}
        all_ece = [e for values in by_corruption.values() for e in values]
        intervals = _ece_intervals(test_logits[v], test_labels, temperature, n_bins)
        result[v] = {
            "ece": clean["ece"],
            "ece_after_temperature": clean["ece_after_temperature"],
            **intervals,
            "temperature": temperature,
            "nll": clean["nll"],
            "nll_after_temperature": clean["nll_after_temperature"],
            "brier": clean["brier"],
            "ece_by_corruption": by_corruption,
            "mean_corrupted_ece": float(np.mean(all_ece)) if all_ece else None,
            "nll_by_corruption": nll,
            "brier_by_corruption": brier,
            "reliability": reliability_bins(softmax(test_logits[v]), test_labels, n_bins),
            "reliability_after_temperature": reliability_bins(softmax(np.asarray(test_logits[v]) / temperature), test_labels, n_bins),
        }
    return result
