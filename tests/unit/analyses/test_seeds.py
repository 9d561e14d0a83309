"""Sweep statistics against textbook values and hand-counted stability tables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from stress.analyses.seeds import aggregate, failure_stability


def _per_seed(values_baseline, values_augmented, corruption_baseline, corruption_augmented):
    return {
        seed: {
            "baseline": {"test_acc": b, "by_corruption": {"fog": cb, "snow": 0.5}},
            "augmented": {"test_acc": a, "by_corruption": {"fog": ca, "snow": 0.5 + 0.01 * (seed - 41)}},
        }
        for seed, b, a, cb, ca in zip((42, 43, 44), values_baseline, values_augmented, corruption_baseline, corruption_augmented)
    }


def test_aggregate_matches_textbook_t_interval_and_paired_test():
    per_seed = _per_seed([0.70, 0.72, 0.74], [0.75, 0.78, 0.77], [0.5, 0.52, 0.51], [0.60, 0.61, 0.62])
    result = aggregate(per_seed)
    block = result["variants"]["baseline"]["test_acc"]
    # mean 0.72, sd 0.02, n 3: half-width = t(0.975, 2) * 0.02 / sqrt(3) = 4.303 * 0.011547 = 0.049686
    assert block["mean"] == pytest.approx(0.72)
    assert block["std"] == pytest.approx(0.02)
    assert block["high"] - block["mean"] == pytest.approx(4.302653 * 0.02 / np.sqrt(3), rel=1e-5)
    paired = result["paired"]["test_acc"]
    # differences 0.05, 0.06, 0.03
    reference = scipy_stats.ttest_rel([0.75, 0.78, 0.77], [0.70, 0.72, 0.74])
    assert paired["mean"] == pytest.approx(0.14 / 3)
    assert paired["p"] == pytest.approx(reference.pvalue)
    fog = result["paired"]["by_corruption"]["fog"]
    assert fog["mean"] == pytest.approx(0.1)
    # fog: differences 0.10, 0.09, 0.11 -> t = 0.1 / (0.01 / sqrt 3) = 17.32, p = 0.0033; snow: 0.01,0.02,0.03 -> p = 0.074
    assert fog["significant_holm"] is True
    assert result["paired"]["by_corruption"]["snow"]["significant_holm"] is False


def test_failure_stability_on_a_fixed_table():
    wrong = {
        "baseline": np.array([[1, 1, 0, 0, 1], [1, 0, 0, 0, 1], [1, 0, 1, 0, 1]], dtype=bool),
        "augmented": np.array([[1, 0, 0, 0, 0], [1, 0, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=bool),
    }
    result = failure_stability(wrong)
    base, aug = result["variants"]["baseline"], result["variants"]["augmented"]
    assert base["fail_count_histogram"] == [1, 2, 0, 2]  # image 3 never; images 1, 2 once; images 0, 4 always
    assert base["always_wrong_indices"] == [0, 4] and base["once_wrong"] == 2 and base["ever_wrong"] == 4
    assert aug["always_wrong_indices"] == [0] and aug["once_wrong"] == 1 and aug["ever_wrong"] == 2
    assert result["overlap"]["always_wrong_both"] == 1
    assert result["overlap"]["always_wrong_jaccard"] == pytest.approx(1 / 2)
    # ever wrong: baseline {0, 1, 2, 4}, augmented {0, 3}: intersection {0}, union of 5 images
    assert result["overlap"]["ever_wrong_jaccard"] == pytest.approx(1 / 5)


def test_ever_wrong_jaccard_by_hand():
    wrong = {"baseline": np.array([[1, 1, 0, 0]], dtype=bool), "augmented": np.array([[0, 1, 1, 0]], dtype=bool)}
    assert failure_stability(wrong)["overlap"]["ever_wrong_jaccard"] == pytest.approx(1 / 3)
