"""stress.stats against hand computations, tabulated quantiles and scipy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from stress.analyses.stats import accuracy_with_interval, bootstrap_ci, cohens_d, holm_bonferroni, paired_difference, t_interval, wilson_interval
from stress.errors import StressError
from reference_stats import accepted_ratio_bounds

# ---------------------------------------------------------------- wilson


def test_wilson_81_of_100_matches_hand_computation():
    # z = 1.96: p = 0.81, z^2/n = 0.038416
    # center = (0.81 + 0.019208) / 1.038416 = 0.798531
    # half   = 1.96 / 1.038416 * sqrt(0.81 * 0.19 / 100 + 3.8416 / 40000) = 0.076321
    low, high = wilson_interval(81, 100)
    assert low == pytest.approx(0.7222, abs=2e-4)
    assert high == pytest.approx(0.8749, abs=2e-4)
    assert isinstance(low, float) and isinstance(high, float)


def test_wilson_zero_successes_has_closed_form_upper_bound():
    # With p = 0 the interval is [0, (z^2/n) / (1 + z^2/n)].
    z = 1.959963984540054
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx((z * z / 10) / (1 + z * z / 10), rel=1e-12)
    # Symmetry: n successes mirrors 0 successes.
    low_all, high_all = wilson_interval(10, 10)
    assert high_all == 1.0
    assert low_all == pytest.approx(1.0 - high, rel=1e-12)


def test_wilson_narrows_with_more_trials_and_lower_confidence():
    low_small, high_small = wilson_interval(8, 10)
    low_large, high_large = wilson_interval(800, 1000)
    assert high_large - low_large < high_small - low_small
    low_90, high_90 = wilson_interval(8, 10, confidence=0.90)
    assert low_small < low_90 and high_90 < high_small


def test_wilson_rejects_bad_input():
    with pytest.raises(StressError):
        wilson_interval(0, 0)
    with pytest.raises(StressError):
        wilson_interval(11, 10)
    with pytest.raises(StressError):
        wilson_interval(5, 10, confidence=1.0)


def test_accuracy_with_interval_uses_wilson():
    correct = np.array([True] * 81 + [False] * 19)
    result = accuracy_with_interval(correct)
    assert result["acc"] == pytest.approx(0.81)
    assert result["n"] == 100
    assert (result["low"], result["high"]) == wilson_interval(81, 100)
    json.dumps(result)  # JSON-friendly: no numpy scalars
    assert type(result["n"]) is int and type(result["acc"]) is float
    with pytest.raises(StressError):
        accuracy_with_interval(np.array([], dtype=bool))


# ---------------------------------------------------------------- t interval


def test_t_interval_matches_tabulated_quantile():
    # mean 3, s = sqrt(2.5), se = s / sqrt(5) = 0.70711, t_{0.975,4} = 2.776 (table)
    result = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half_width = 2.776 * math.sqrt(2.5) / math.sqrt(5)
    assert result["mean"] == pytest.approx(3.0)
    assert result["std"] == pytest.approx(math.sqrt(2.5))
    assert result["low"] == pytest.approx(3.0 - half_width, abs=1e-3)
    assert result["high"] == pytest.approx(3.0 + half_width, abs=1e-3)
    assert result["n"] == 5
    json.dumps(result)


def test_t_interval_agrees_with_scipy_interval():
    values = np.array([0.71, 0.74, 0.69, 0.73, 0.72, 0.70])
    result = t_interval(values, confidence=0.9)
    low, high = scipy_stats.t.interval(0.9, df=5, loc=values.mean(), scale=scipy_stats.sem(values))
    assert result["low"] == pytest.approx(low, rel=1e-12)
    assert result["high"] == pytest.approx(high, rel=1e-12)


def test_t_interval_single_value_has_no_spread():
    result = t_interval([0.5])
    assert result == {"mean": 0.5, "std": None, "low": None, "high": None, "n": 1}
    with pytest.raises(StressError):
        t_interval([])


# ---------------------------------------------------------------- paired test


def test_paired_difference_matches_scipy_ttest_rel():
    baseline = np.array([0.61, 0.64, 0.60, 0.66, 0.63])
    augmented = np.array([0.67, 0.66, 0.65, 0.70, 0.64])
    result = paired_difference(baseline, augmented)
    reference = scipy_stats.ttest_rel(augmented, baseline)  # tests augmented - baseline
    interval = reference.confidence_interval(confidence_level=0.95)
    assert result["mean"] == pytest.approx(float(np.mean(augmented - baseline)))
    assert result["t"] == pytest.approx(float(reference.statistic), rel=1e-10)
    assert result["p"] == pytest.approx(float(reference.pvalue), rel=1e-10)
    assert result["low"] == pytest.approx(float(interval.low), rel=1e-10)
    assert result["high"] == pytest.approx(float(interval.high), rel=1e-10)
    assert result["std"] == pytest.approx(float(np.std(augmented - baseline, ddof=1)))
    assert result["n"] == 5
    json.dumps(result)


def test_paired_difference_by_hand():
    # differences 1, 2, 2: mean 5/3, s = sqrt(1/3), t = (5/3) / (s / sqrt 3) = 5
    result = paired_difference([1, 2, 3], [2, 4, 5])
    assert result["t"] == pytest.approx(5.0)
    # t_{0.975,2} = 4.303 (table)
    assert result["high"] - result["mean"] == pytest.approx(4.303 * math.sqrt(1 / 3) / math.sqrt(3), abs=1e-3)
    # two-sided p of t = 5 with 2 df: 1 - 5 / sqrt(5^2 + 2) (closed form of the t_2 CDF)
    assert result["p"] == pytest.approx(1 - 5 / math.sqrt(27), rel=1e-9)


def test_paired_difference_degenerate_cases():
    zero = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (zero["t"], zero["p"], zero["low"], zero["high"]) == (0.0, 1.0, 0.0, 0.0)
    shifted = paired_difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert shifted["t"] is None and shifted["p"] == 0.0
    assert shifted["low"] == shifted["high"] == pytest.approx(1.0)
    single = paired_difference([1.0], [3.0])
    assert single["mean"] == 2.0 and single["p"] is None and single["low"] is None
    with pytest.raises(StressError):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------- cohen's d


def test_cohens_d_by_hand():
    # means 2 and 5, both variances 1 -> pooled SD 1
    assert cohens_d([1, 2, 3], [4, 5, 6]) == pytest.approx(-3.0)
    # unequal sizes: var_a = 20/3 (n=4), var_b = 2 (n=2); pooled = (3*20/3 + 1*2) / 4 = 5.5
    assert cohens_d([2, 4, 6, 8], [1, 3]) == pytest.approx(3.0 / math.sqrt(5.5))


def test_cohens_d_constant_groups():
    assert cohens_d([2.0, 2.0], [2.0, 2.0, 2.0]) == 0.0
    assert cohens_d([3.0, 3.0], [2.0, 2.0]) == math.inf
    assert cohens_d([1.0], [2.0]) == -math.inf
    assert isinstance(cohens_d(np.array([1.0, 2.0]), np.array([0.0, 5.0])), float)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_contains_true_mean_and_is_reproducible():
    generator = np.random.default_rng(123)
    sample = generator.normal(loc=2.0, scale=1.0, size=200)
    low, high = bootstrap_ci(np.mean, sample, n_boot=500, seed=7)
    assert low < 2.0 < high
    # Width close to the normal-theory 2 * 1.96 * sigma / sqrt(n).
    assert high - low == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.25)
    assert bootstrap_ci(np.mean, sample, n_boot=500, seed=7) == (low, high)
    assert bootstrap_ci(np.mean, sample, n_boot=500, seed=8) != (low, high)


def test_bootstrap_two_samples_agrees_with_scipy_percentile_bootstrap():
    generator = np.random.default_rng(5)
    first = generator.normal(0.0, 1.0, size=60)
    second = generator.normal(0.5, 1.0, size=40)

    def mean_difference(x, y):
        return np.mean(x) - np.mean(y)

    low, high = bootstrap_ci(mean_difference, first, second, n_boot=2000, seed=0)
    reference = scipy_stats.bootstrap(
        (first, second), mean_difference, n_resamples=2000, method="percentile", random_state=1, vectorized=False
    ).confidence_interval
    # Different random streams: endpoints agree up to Monte Carlo error.
    assert low == pytest.approx(reference.low, abs=0.06)
    assert high == pytest.approx(reference.high, abs=0.06)


def test_bootstrap_of_constant_sample_is_a_point():
    assert bootstrap_ci(np.mean, np.full(10, 3.0), n_boot=50) == (3.0, 3.0)
    with pytest.raises(StressError):
        bootstrap_ci(np.mean, np.array([]))


# ---------------------------------------------------------------- holm


def test_holm_by_hand():
    # sorted: 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2 -> stop
    assert holm_bonferroni([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    # all pass their step-down thresholds 0.05/3, 0.05/2, 0.05/1 (plain Bonferroni would keep two)
    assert holm_bonferroni([0.03, 0.01, 0.02]) == [True, True, True]
    # the step-down stops at the first failure even if a later p passes its own threshold
    assert holm_bonferroni([0.03, 0.04]) == [False, False]
    assert holm_bonferroni([]) == []


def test_holm_agrees_with_adjusted_pvalues():
    generator = np.random.default_rng(0)
    for _ in range(50):
        pvalues = generator.uniform(0, 0.1, size=int(generator.integers(1, 8)))
        order = np.argsort(pvalues)
        count = len(pvalues)
        # Holm-adjusted p-values: running maximum of (m - k) * p_(k), capped at 1.
        adjusted_sorted = np.minimum(1.0, np.maximum.accumulate((count - np.arange(count)) * pvalues[order]))
        expected = np.empty(count, dtype=bool)
        expected[order] = adjusted_sorted <= 0.05
        assert holm_bonferroni(pvalues) == expected.tolist()


def test_tost_matches_two_one_sided_scipy_tests_and_the_interval_duality():
    from stress.analyses.stats import tost_paired

    rng = np.random.default_rng(3)
    for shift, spread in [(0.0, 0.002), (0.001, 0.004), (0.004, 0.003), (-0.006, 0.001)]:
        a = rng.normal(0.7, 0.01, 5)
        b = a + shift + rng.normal(0, spread, 5)
        result = tost_paired(a, b, margin=0.005)
        d = b - a
        # The reference: scipy's one-sample t-tests of d against each margin, one-sided.
        lower = scipy_stats.ttest_1samp(d, -0.005, alternative="greater").pvalue
        upper = scipy_stats.ttest_1samp(d, 0.005, alternative="less").pvalue
        assert result["p_lower"] == pytest.approx(lower, rel=1e-10) and result["p_upper"] == pytest.approx(upper, rel=1e-10)
        assert result["p"] == pytest.approx(max(lower, upper), rel=1e-10)
        # Equivalent at alpha iff the 90% t interval lies inside the margins.
        low, high = scipy_stats.t.interval(0.90, df=4, loc=d.mean(), scale=scipy_stats.sem(d))
        assert result["low"] == pytest.approx(low) and result["high"] == pytest.approx(high)
        assert result["equivalent"] == (-0.005 < low and high < 0.005) == (max(lower, upper) < 0.05)


def test_tost_can_fail_planted_cases():
    from stress.analyses.stats import tost_paired

    a = np.array([0.70, 0.71, 0.72, 0.73, 0.74])
    assert tost_paired(a, a + np.array([0.001, -0.001, 0.0005, 0.0, -0.0005]), margin=0.005)["equivalent"]
    # A real difference of 1 point is not equivalent within 0.5 points, however tight.
    shifted = tost_paired(a, a + 0.01 + np.array([0.0001, -0.0001, 0.0, 0.0002, -0.0002]), margin=0.005)
    assert not shifted["equivalent"] and shifted["p_upper"] > 0.5
    # No difference on average, but too noisy for five seeds to show equivalence.
    noisy = tost_paired(a, a + np.array([0.02, -0.02, 0.015, -0.015, 0.0]), margin=0.005)
    assert abs(noisy["mean"]) < 1e-12 and not noisy["equivalent"]
    assert tost_paired(a, a, margin=0.005)["equivalent"] and not tost_paired(a, a + 0.01, margin=0.005)["equivalent"]
    assert tost_paired(a[:1], a[:1], margin=0.005)["p"] is None
    with pytest.raises(StressError):
        tost_paired(a, a, margin=0)


def _pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 vectors a, b with these counts of (1, 1), (1, 0), (0, 1) and (0, 0) pairs."""
    a = np.repeat([1.0, 1.0, 0.0, 0.0], [both, a_only, b_only, neither])
    b = np.repeat([1.0, 0.0, 1.0, 0.0], [both, a_only, b_only, neither])
    return a, b


def test_paired_proportion_difference_matches_the_published_newcombe_interval():
    """Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8: the paired table
    [[59, 6], [16, 80]] (complete response before and after consolidation therapy, Cavo et al. 2012) has the
    Newcombe square-and-add interval -0.0621 (-0.1186 to -0.0046), first minus second proportion."""
    from stress.analyses.stats import paired_proportion_difference

    second, first = _pairs(59, 16, 6, 80)  # b = the first measurement: 59 + 6 successes; a: 59 + 16
    d = paired_proportion_difference(second, first)
    assert (round(d["mean"], 4), round(d["low"], 4), round(d["high"], 4)) == (-0.0621, -0.1186, -0.0046)
    assert (d["n"], d["a_only"], d["b_only"], d["method"]) == (161, 16, 6, "newcombe_paired")
    # McNemar's exact test: 6 of 22 discordant pairs, two-sided binomial tail against 1/2, by hand.
    assert d["p"] == pytest.approx(2 * sum(math.comb(22, k) for k in range(7)) / 2**22, rel=1e-12)
    swapped = paired_proportion_difference(first, second)  # the other direction mirrors the interval
    assert (swapped["mean"], swapped["low"], swapped["high"]) == pytest.approx((-d["mean"], -d["high"], -d["low"]), abs=1e-12)


def test_paired_proportion_difference_without_discordant_pairs_is_not_a_point():
    """Both models wrong on all 1,000 images: the difference is 0, but 1,000 images bound it only to about the Wilson
    interval of 0/1000 (upper 3.84 / (1000 + 3.84) = 0.0038), where the t-interval on the differences is [0, 0]."""
    from stress.analyses.stats import paired_proportion_difference

    a, b = _pairs(0, 0, 0, 1000)
    d = paired_proportion_difference(a, b)
    z2 = scipy_stats.norm.ppf(0.975) ** 2
    assert d["mean"] == 0.0 and d["p"] == 1.0
    assert d["high"] == pytest.approx(z2 / (1000 + z2), rel=1e-9) and d["low"] == pytest.approx(-d["high"], rel=1e-9)
    planted = paired_difference(a, b)  # the t-interval the analyses used before: a point
    assert planted["low"] == planted["high"] == 0.0
    with pytest.raises(StressError, match="0/1 values"):
        paired_proportion_difference([0.0, 0.5], [1.0, 1.0])


def test_paired_proportion_difference_covers_at_its_level_where_the_t_interval_does_not():
    """Coverage over simulated pairs against the true difference (a slow loop, independent of the formula): with
    rare discordant pairs (0 and 0.2 % of 1,000 images, as in the attack stage at 8/255) Newcombe's interval keeps
    at least 93 % coverage and the per-image t-interval (planted, the earlier method) falls below 90 %."""
    from stress.analyses.stats import paired_proportion_difference

    rng = np.random.default_rng(7)
    for n, (p_both, p_a_only, p_b_only), t_should_fail in [(1000, (0.0, 0.0, 0.002), True), (200, (0.3, 0.01, 0.03), False)]:
        truth, newcombe, t_covered = p_b_only - p_a_only, 0, 0
        for _ in range(400):
            u = rng.random(n)
            a = ((u < p_both + p_a_only)).astype(float)
            b = ((u < p_both) | ((u >= p_both + p_a_only) & (u < p_both + p_a_only + p_b_only))).astype(float)
            d, t = paired_proportion_difference(a, b), paired_difference(a, b)
            newcombe += d["low"] <= truth <= d["high"]
            t_covered += t["low"] is not None and t["low"] <= truth <= t["high"]
        assert newcombe / 400 >= 0.93, (n, newcombe)
        if t_should_fail:
            assert t_covered / 400 < 0.90, (n, t_covered)


def test_ratio_of_paired_means_is_the_set_of_ratios_a_t_test_accepts():
    """Fieller's interval against its definition (scipy's t-test inverted by bisection), on correlated pairs like the
    attack's Grad-CAM drops: the clean-class drop is most of the new-class drop, per image."""
    from stress.analyses.stats import ratio_of_paired_means

    rng = np.random.default_rng(11)
    for n, correlation in [(8, 0.9), (40, 0.5), (300, 0.95), (25, -0.3)]:
        bottom = rng.normal(0.8, 0.2, n)
        top = 0.05 + correlation * 0.1 * (bottom - 0.8) / 0.2 + rng.normal(0, 0.1 * math.sqrt(1 - correlation**2), n)
        result = ratio_of_paired_means(top, bottom)
        low, high = accepted_ratio_bounds(top, bottom)
        assert result["mean"] == pytest.approx(top.mean() / bottom.mean(), rel=1e-12)
        assert (result["low"], result["high"]) == pytest.approx((low, high), rel=1e-7, abs=1e-9)
        assert result["n"] == n and result["method"] == "fieller"
        narrower = ratio_of_paired_means(top, bottom, confidence=0.8)
        assert low < narrower["low"] < narrower["high"] < high


def test_ratio_of_paired_means_check_fails_a_planted_interval_without_the_covariance():
    """The reference search tells Fieller's interval from the delta method's that drops the pairs' covariance (planted):
    with strongly correlated pairs the two differ by far more than the check's tolerance."""
    from stress.analyses.stats import ratio_of_paired_means

    rng = np.random.default_rng(5)
    bottom = rng.normal(0.8, 0.2, 50)
    top = 0.9 * bottom + rng.normal(0, 0.01, 50)
    low, high = accepted_ratio_bounds(top, bottom)
    ratio = top.mean() / bottom.mean()
    se = ratio * math.sqrt(scipy_stats.sem(top) ** 2 / top.mean() ** 2 + scipy_stats.sem(bottom) ** 2 / bottom.mean() ** 2)
    t = scipy_stats.t.ppf(0.975, df=49)
    planted = (ratio - t * se, ratio + t * se)
    assert planted != pytest.approx((low, high), rel=1e-7, abs=1e-9)
    assert (high - low) < 0.2 * (planted[1] - planted[0])
    assert (ratio_of_paired_means(top, bottom)["low"], ratio_of_paired_means(top, bottom)["high"]) == pytest.approx((low, high), rel=1e-7)


def test_ratio_of_paired_means_is_unbounded_where_the_denominator_may_be_zero():
    from stress.analyses.stats import ratio_of_paired_means

    rng = np.random.default_rng(2)
    bottom = rng.normal(0.0, 1.0, 20) + 0.1  # mean not distinguishable from 0
    top = rng.normal(0.5, 0.1, 20)
    assert scipy_stats.ttest_1samp(bottom, 0.0).pvalue > 0.05
    result = ratio_of_paired_means(top, bottom)
    assert result["low"] is None and result["high"] is None and result["mean"] == pytest.approx(top.mean() / bottom.mean())
    # The reference agrees: ratios as far out as 1e6 on both sides are still accepted.
    assert all(scipy_stats.ttest_1samp(top - r * bottom, 0.0).pvalue >= 0.05 for r in (-1e6, 1e6))
    assert ratio_of_paired_means([1.0], [2.0]) == {"mean": 0.5, "low": None, "high": None, "n": 1, "method": "fieller"}
    assert ratio_of_paired_means([1.0, 2.0], [0.0, 0.0])["mean"] is None
    with pytest.raises(StressError, match="differ in length"):
        ratio_of_paired_means([1.0, 2.0], [1.0])


def test_ratio_of_paired_means_is_a_point_without_spread_and_mirrors_a_negative_denominator():
    """Zero spread and numerators proportional to their denominators give the ratio itself as the interval (their
    discriminant is 0 up to rounding, which once read as "no interval" in about a third of such cases); a negated
    denominator mirrors the interval; every value is a plain float for JSON."""
    from stress.analyses.stats import ratio_of_paired_means

    rng = np.random.default_rng(7)
    for _ in range(200):
        n, ratio = int(rng.integers(2, 50)), float(rng.uniform(0.1, 2.0))
        constant = ratio_of_paired_means(np.full(n, ratio * 0.37), np.full(n, 0.37))
        bottom = rng.uniform(0.5, 0.6, n)  # a denominator far from 0 (else every ratio is accepted: no bounds)
        proportional = ratio_of_paired_means(ratio * bottom, bottom)
        for result in (constant, proportional):
            assert result["low"] == pytest.approx(ratio, rel=1e-6) and result["high"] == pytest.approx(ratio, rel=1e-6)
    top, bottom = rng.normal(0.3, 0.1, 30), rng.normal(0.8, 0.1, 30)
    positive, negative = ratio_of_paired_means(top, bottom), ratio_of_paired_means(top, -bottom)
    assert (negative["low"], negative["high"]) == pytest.approx((-positive["high"], -positive["low"]), rel=1e-12)
    assert (negative["low"], negative["high"]) == pytest.approx(accepted_ratio_bounds(top, -bottom), rel=1e-7)
    assert all(type(positive[k]) is float for k in ("mean", "low", "high"))
