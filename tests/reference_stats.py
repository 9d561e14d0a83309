"""Slow references for the interval routines of stress.analyses.stats, built on scipy's tests and nothing of ours."""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats


def accepted_ratio_bounds(top: np.ndarray, bottom: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Fieller's interval by its definition: bisect, on each side of the ratio of means, for the ratio r at which scipy's
    one-sample t-test of top - r * bottom reaches p = 1 - confidence (a slow search, no quadratic)."""
    accepted = lambda r: scipy_stats.ttest_1samp(top - r * bottom, 0.0).pvalue >= 1 - confidence  # noqa: E731
    centre = top.mean() / bottom.mean()
    bounds = []
    for direction in (-1.0, 1.0):
        inside, outside = centre, centre + direction
        while accepted(outside):
            outside = centre + 2 * (outside - centre)
        for _ in range(200):
            middle = (inside + outside) / 2
            inside, outside = (middle, outside) if accepted(middle) else (inside, middle)
        bounds.append(inside)
    return bounds[0], bounds[1]
