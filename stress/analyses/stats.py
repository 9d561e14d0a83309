"""Small-sample statistics for comparing the two variants.

Every function takes numpy arrays (or lists) and returns plain Python floats,
ints, bools, tuples or dicts, so results go straight into JSON. Quantities
that are undefined for the given input (a spread from one value, a t statistic
from differences with zero spread) are returned as `None` rather than NaN,
because NaN is not valid JSON and would break a browser reading the results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from stress.errors import StressError


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise StressError(f"confidence must be in (0, 1), got {confidence}")


def _as_1d_floats(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise StressError(f"{name} is empty")
    return array


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion successes/total.

    Unlike the normal (Wald) interval it stays inside [0, 1] and keeps a
    sensible width at accuracies near 0 or 1, which matters for per-class
    accuracies on few images.
    """
    _check_confidence(confidence)
    if total <= 0:
        raise StressError("wilson_interval needs at least one trial")
    if not 0 <= successes <= total:
        raise StressError(f"successes must be in [0, {total}], got {successes}")
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2.0))
    proportion = successes / total
    z2_over_n = z * z / total
    center = (proportion + z2_over_n / 2.0) / (1.0 + z2_over_n)
    half_width = (z / (1.0 + z2_over_n)) * math.sqrt(
        proportion * (1.0 - proportion) / total + z * z / (4.0 * total * total)
    )
    # At proportion 0 (or 1) the lower (upper) bound is exactly 0 (1); set it so rounding cannot move it.
    low = 0.0 if successes == 0 else max(0.0, center - half_width)
    high = 1.0 if successes == total else min(1.0, center + half_width)
    return low, high


def accuracy_with_interval(correct: np.ndarray, confidence: float = 0.95) -> dict:
    """{"acc", "low", "high", "n"} for a boolean (N,) vector of per-image correctness (Wilson interval)."""
    flags = np.asarray(correct).reshape(-1)
    if flags.size == 0:
        raise StressError("accuracy_with_interval needs at least one prediction")
    successes = int(np.count_nonzero(flags))
    low, high = wilson_interval(successes, int(flags.size), confidence)
    return {"acc": successes / flags.size, "low": low, "high": high, "n": int(flags.size)}


def t_interval(values: Any, confidence: float = 0.95) -> dict:
    """Student-t confidence interval for the mean: {"mean", "std", "low", "high", "n"}.

    `std` uses ddof=1. With a single value the spread is undefined, so "std",
    "low" and "high" are None (the mean is still reported).
    """
    _check_confidence(confidence)
    array = _as_1d_floats(values, "t_interval values")
    n = int(array.size)
    mean = float(array.mean())
    if n < 2:
        return {"mean": mean, "std": None, "low": None, "high": None, "n": n}
    std = float(array.std(ddof=1))
    half_width = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "low": mean - half_width, "high": mean + half_width, "n": n}


def paired_difference(a: Any, b: Any, confidence: float = 0.95) -> dict:
    """Two-sided paired t-test on the per-pair differences b - a.

    Returns {"mean", "std", "low", "high", "t", "p", "n"} where mean/low/high
    describe the mean difference and its t interval. Degenerate cases:
    n == 1 gives None for std/low/high/t/p; differences with zero spread give
    low == high == mean and either t = 0, p = 1 (all differences zero) or
    t = None, p = 0 (a constant non-zero difference: the t statistic is
    infinite, which JSON cannot hold).
    """
    _check_confidence(confidence)
    first = _as_1d_floats(a, "paired_difference a")
    second = _as_1d_floats(b, "paired_difference b")
    if first.shape != second.shape:
        raise StressError(f"paired samples differ in length: {first.size} vs {second.size}")
    differences = second - first  # (n,)
    n = int(differences.size)
    mean = float(differences.mean())
    if n < 2:
        return {"mean": mean, "std": None, "low": None, "high": None, "t": None, "p": None, "n": n}
    std = float(differences.std(ddof=1))
    standard_error = std / math.sqrt(n)
    degrees_of_freedom = n - 1
    half_width = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, df=degrees_of_freedom)) * standard_error
    if standard_error == 0.0:
        t_statistic, p_value = (0.0, 1.0) if mean == 0.0 else (None, 0.0)
    else:
        t_statistic = mean / standard_error
        # Two-sided: probability of a |T| at least this large under H0 (mean difference 0).
        p_value = float(2.0 * scipy_stats.t.sf(abs(t_statistic), df=degrees_of_freedom))
    return {
        "mean": mean,
        "std": std,
        "low": mean - half_width,
        "high": mean + half_width,
        "t": t_statistic,
        "p": p_value,
        "n": n,
    }


def ratio_of_paired_means(numerator: Any, denominator: Any, confidence: float = 0.95) -> dict:
    """mean(numerator) / mean(denominator) over the same items, with Fieller's interval.

    The interval holds every ratio r for which a two-sided one-sample t-test of numerator - r * denominator
    does not reject at 1 - confidence: the roots of a quadratic in r, the covariance of the pairs included.
    It is bounded only where the denominator's mean is itself distinguishable from 0; otherwise "low" and
    "high" are None. Returns {"mean", "low", "high", "n", "method"}; "mean" is None where the denominator's
    mean is 0.
    """
    _check_confidence(confidence)
    top = _as_1d_floats(numerator, "ratio_of_paired_means numerator")
    bottom = _as_1d_floats(denominator, "ratio_of_paired_means denominator")
    if top.shape != bottom.shape:
        raise StressError(f"paired samples differ in length: {top.size} vs {bottom.size}")
    n = int(top.size)
    mean_top, mean_bottom = float(top.mean()), float(bottom.mean())
    result = {"mean": mean_top / mean_bottom if mean_bottom != 0.0 else None, "low": None, "high": None, "n": n,
              "method": "fieller"}
    if n < 2:
        return result
    covariance = np.cov(np.stack([top, bottom]), ddof=1) / n  # (2, 2): the means' variances and covariance
    quantile = float(scipy_stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) ** 2
    # (mean_top - r mean_bottom)^2 <= quantile (v_tt - 2 r v_tb + r^2 v_bb)  <=>  a r^2 - 2 b r + c <= 0
    a = mean_bottom ** 2 - quantile * covariance[1, 1]
    b = mean_top * mean_bottom - quantile * covariance[0, 1]
    c = mean_top ** 2 - quantile * covariance[0, 0]
    if a <= 0.0:  # the denominator's mean is not distinguishable from 0: no bounded set
        return result
    # With a > 0 the quadratic is <= 0 at the ratio of the means, so the discriminant is >= 0; a negative one is rounding
    # (zero spread, or numerators proportional to their denominators).
    root = math.sqrt(max(b * b - a * c, 0.0))
    result.update(low=float((b - root) / a), high=float((b + root) / a))
    return result


def mcnemar_exact_p(only_first: int, only_second: int) -> float:
    """McNemar's exact test from the discordant pairs: two-sided binomial test of only_first of the discordant against 1/2
    (1 without any discordant pair)."""
    discordant = only_first + only_second
    return float(scipy_stats.binomtest(only_first, discordant, 0.5).pvalue) if discordant else 1.0


def paired_proportion_difference(a: Any, b: Any, confidence: float = 0.95) -> dict:
    """Difference p_b - p_a of two proportions measured on the same items (a, b: 0/1 per item), for correct/wrong flags.

    The interval is Newcombe's (1998, paired data, method 10): the square-and-add combination of the two
    Wilson intervals, with the correlation of the pairs taken into account. Unlike the t-interval on the
    per-item differences, it does not shrink to a point when few or no items are discordant (both models
    wrong on all 1,000 images leave a difference of 0 that 1,000 images bound only to about +/-0.004).
    p is McNemar's exact test: a two-sided binomial test of the discordant items against 1/2 (1 without
    any). Returns {"mean", "low", "high", "p", "n", "a_only", "b_only", "std", "t", "method"}; a_only counts
    items where only a is 1; std is the per-item differences' spread, t is None (no t statistic), method "newcombe_paired".
    """
    _check_confidence(confidence)
    first = _as_1d_floats(a, "paired_proportion_difference a")
    second = _as_1d_floats(b, "paired_proportion_difference b")
    if first.shape != second.shape:
        raise StressError(f"paired samples differ in length: {first.size} vs {second.size}")
    if not (np.isin(first, (0.0, 1.0)).all() and np.isin(second, (0.0, 1.0)).all()):
        raise StressError("paired_proportion_difference needs 0/1 values")
    n = int(first.size)
    both = int(((first == 1) & (second == 1)).sum())
    a_only = int(((first == 1) & (second == 0)).sum())
    b_only = int(((first == 0) & (second == 1)).sum())
    neither = n - both - a_only - b_only
    p_a, p_b = (both + a_only) / n, (both + b_only) / n
    low_a, high_a = wilson_interval(both + a_only, n, confidence)
    low_b, high_b = wilson_interval(both + b_only, n, confidence)
    # Newcombe's correlation estimate: the phi coefficient of the 2x2 table, 0 where a margin is empty,
    # and a positive cross-product difference reduced by n/2 (to no less than 0).
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    cross = both * neither - a_only * b_only
    corrected = max(cross - n / 2.0, 0.0) if cross > 0 else float(cross)
    phi = corrected / math.sqrt(margins) if margins > 0 else 0.0
    difference = (b_only - a_only) / n  # p_b - p_a, without the rounding of the subtraction
    below = (p_b - low_b) ** 2 - 2.0 * phi * (p_b - low_b) * (high_a - p_a) + (high_a - p_a) ** 2
    above = (high_b - p_b) ** 2 - 2.0 * phi * (high_b - p_b) * (p_a - low_a) + (p_a - low_a) ** 2
    return {
        "mean": difference,
        "low": max(-1.0, difference - math.sqrt(max(below, 0.0))),
        "high": min(1.0, difference + math.sqrt(max(above, 0.0))),
        "p": mcnemar_exact_p(a_only, b_only),
        "n": n,
        "a_only": a_only,
        "b_only": b_only,
        "std": float((second - first).std(ddof=1)) if n > 1 else None,
        "t": None,
        "method": "newcombe_paired",
    }


def tost_paired(a: Any, b: Any, margin: float, alpha: float = 0.05) -> dict:
    """Two one-sided paired t-tests (TOST) for equivalence of b and a within +-margin.

    H0: |mean(b - a)| >= margin; equivalence is concluded when both one-sided tests reject at
    `alpha`, which is the same as the (1 - 2 alpha) t interval of the mean difference lying
    inside (-margin, +margin). Returns {"mean", "low", "high" (that interval), "p_lower",
    "p_upper", "p" (the larger), "margin", "equivalent", "n"}; n < 2 or zero spread gives
    p None unless the constant difference decides it.
    """
    if not margin > 0:
        raise StressError(f"tost_paired: margin must be > 0, got {margin}")
    _check_confidence(1 - 2 * alpha)
    first = _as_1d_floats(a, "tost_paired a")
    second = _as_1d_floats(b, "tost_paired b")
    if first.shape != second.shape:
        raise StressError(f"paired samples differ in length: {first.size} vs {second.size}")
    differences = second - first
    n = int(differences.size)
    mean = float(differences.mean())
    result = {"mean": mean, "low": None, "high": None, "p_lower": None, "p_upper": None, "p": None,
              "margin": float(margin), "equivalent": False, "n": n}
    if n < 2:
        return result
    standard_error = float(differences.std(ddof=1)) / math.sqrt(n)
    df = n - 1
    if standard_error == 0.0:
        inside = -margin < mean < margin
        result.update(low=mean, high=mean, p_lower=0.0 if inside else 1.0, p_upper=0.0 if inside else 1.0,
                      p=0.0 if inside else 1.0, equivalent=inside)
        return result
    half_width = float(scipy_stats.t.ppf(1 - alpha, df=df)) * standard_error
    p_lower = float(scipy_stats.t.sf((mean + margin) / standard_error, df=df))  # H0: mean <= -margin
    p_upper = float(scipy_stats.t.cdf((mean - margin) / standard_error, df=df))  # H0: mean >= +margin
    p = max(p_lower, p_upper)
    result.update(low=mean - half_width, high=mean + half_width, p_lower=p_lower, p_upper=p_upper, p=p, equivalent=p < alpha)
    return result


def cohens_d(a: Any, b: Any) -> float:
    """Effect size (mean(a) - mean(b)) / pooled standard deviation (ddof=1 per group).

    Returns 0.0 when the pooled SD is zero and the means agree (e.g. both
    groups constant and equal); if the means differ with zero pooled SD the
    groups are perfectly separated and the result is +/- inf.
    """
    first = _as_1d_floats(a, "cohens_d a")
    second = _as_1d_floats(b, "cohens_d b")
    n_first, n_second = first.size, second.size
    mean_difference = float(first.mean() - second.mean())
    degrees_of_freedom = n_first + n_second - 2
    # A single-value group contributes no spread (its variance term has weight n - 1 = 0).
    sum_squares = float(((first - first.mean()) ** 2).sum() + ((second - second.mean()) ** 2).sum())
    pooled_sd = math.sqrt(sum_squares / degrees_of_freedom) if degrees_of_freedom > 0 else 0.0
    if pooled_sd == 0.0:
        return 0.0 if mean_difference == 0.0 else math.copysign(math.inf, mean_difference)
    return mean_difference / pooled_sd


def bootstrap_ci(
    statistic: Callable[..., float],
    *samples: Any,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(*samples).

    Each sample is resampled with replacement along its first axis,
    independently of the others (so it suits two-group statistics such as
    cohens_d, not paired data; pass pairs as one (n, 2) sample for that).
    The generator is seeded, so the same call gives the same interval.
    """
    _check_confidence(confidence)
    if not samples:
        raise StressError("bootstrap_ci needs at least one sample")
    if n_boot < 1:
        raise StressError(f"n_boot must be positive, got {n_boot}")
    arrays = [np.asarray(sample) for sample in samples]
    for array in arrays:
        if array.ndim == 0 or array.shape[0] == 0:
            raise StressError("bootstrap_ci samples must be non-empty arrays")
    generator = np.random.default_rng(seed)
    replicates = np.empty(n_boot, dtype=np.float64)  # (n_boot,)
    for index in range(n_boot):
        resampled = [array[generator.integers(0, array.shape[0], size=array.shape[0])] for array in arrays]
        replicates[index] = float(statistic(*resampled))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return float(low), float(high)


def holm_bonferroni(pvalues: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm step-down correction: for each p-value (input order), whether its hypothesis is rejected.

    Sorted ascending, the k-th smallest (k = 0, 1, ...) is rejected while
    p <= alpha / (m - k); the first failure stops the procedure and every
    larger p-value is kept. Controls the family-wise error rate at alpha.
    """
    if not 0.0 < alpha < 1.0:
        raise StressError(f"alpha must be in (0, 1), got {alpha}")
    values = [float(p) for p in pvalues]
    count = len(values)
    rejected = [False] * count
    # Stable sort so ties keep their input order (they are tested at successive thresholds).
    for rank, index in enumerate(sorted(range(count), key=lambda i: values[i])):
        if values[index] > alpha / (count - rank):
            break
        rejected[index] = True
    return rejected


def holm_levels(pvalues: Sequence[float], alpha: float = 0.05) -> list[float]:
    """Each hypothesis' Holm threshold alpha / (m - k), k its position among the p-values sorted ascending (ties in input order).

    A rejected hypothesis was rejected at its threshold, so an interval at confidence 1 - threshold
    that is the inversion of the same test excludes the null value exactly when it is rejected.
    """
    values = [float(p) for p in pvalues]
    count = len(values)
    levels = [0.0] * count
    for rank, index in enumerate(sorted(range(count), key=lambda i: values[i])):
        levels[index] = alpha / (count - rank)
    return levels


def newcombe_interval(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float, float]:
    """Difference p_b - p_a of two independent proportions with Newcombe's hybrid Wilson 95% interval."""
    p_a, p_b = successes_a / n_a, successes_b / n_b
    low_a, high_a = wilson_interval(successes_a, n_a)
    low_b, high_b = wilson_interval(successes_b, n_b)
    difference = p_b - p_a
    low = difference - math.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2)
    high = difference + math.sqrt((high_b - p_b) ** 2 + (p_a - low_a) ** 2)
    return difference, low, high
