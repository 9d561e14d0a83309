"""Label suspects and failure slices over seeds: stable suspects by a slow loop, a slice worse in every seed is a
finding, one worse in a single seed is not."""

from __future__ import annotations

import numpy as np

from stress.analyses.seed_slices import slices_over_seeds, suspicion_over_seeds


def test_stable_suspects_and_the_histogram_match_a_slow_loop():
    rng = np.random.default_rng(0)
    flags = {"baseline": rng.random((4, 300)) < 0.3, "augmented": rng.random((4, 300)) < 0.3}
    flags["baseline"][:, :5] = True  # planted: five images every seed flags
    result = suspicion_over_seeds(flags, {"baseline": [0.2, 0.3, 0.25, 0.35], "augmented": [0.1, None, 0.2, 0.15]})
    for v, table in flags.items():
        entry = result["variants"][v]
        stable = [i for i in range(300) if all(table[s, i] for s in range(4))]
        assert entry["stable_suspects"] == len(stable) and entry["stable_suspect_indices"] == stable
        assert entry["flag_count_histogram"] == [sum(1 for i in range(300) if table[:, i].sum() == k) for k in range(5)]
    assert result["variants"]["baseline"]["stable_suspects"] >= 5
    assert result["variants"]["augmented"]["confident_failure_share"]["n"] == 3  # the seed without confident failures is left out


def record(overall: float, slices: dict[str, tuple[int, int]], kept: list[str]) -> dict:
    tested = [{"kind": "class", "name": name, "size": size, "errors": errors} for name, (size, errors) in slices.items()]
    tested.append({"kind": "cluster", "name": "embedding cluster 0", "size": 100, "errors": 90})
    return {"models": {"baseline": {"overall_error": overall, "tested": tested, "slices": [{"name": n} for n in kept]}}}


def test_a_slice_worse_in_every_seed_is_a_finding_and_one_worse_in_a_single_seed_is_noise():
    records = [
        record(0.20, {"cat": (1000, 400), "dog": (1000, 300), "ship": (1000, 200)}, ["cat", "dog"]),
        record(0.21, {"cat": (1000, 415), "dog": (1000, 190), "ship": (1000, 205)}, ["cat"]),
        record(0.19, {"cat": (1000, 395), "dog": (1000, 180), "ship": (1000, 195)}, ["cat"]),
        record(0.20, {"cat": (1000, 405), "dog": (1000, 195), "ship": (1000, 190)}, ["cat"]),
    ]
    result = slices_over_seeds(records, "baseline")
    assert result["followed"] == 3  # the clusters are left out: they differ between trainings
    assert [r["name"] for r in result["top"]] == ["cat"] and result["findings"] == 1
    cat = result["top"][0]
    assert cat["worse_in"] == 4 and cat["kept_in"] == 4 and cat["difference"]["low"] > 0.15
    assert result["kept_in_one_seed_only"] == ["dog"]


def test_a_slice_worse_in_every_seed_by_a_hair_is_no_finding_after_holm():
    """Planted: 'cat' is worse in every seed, by amounts that a t-test over four seeds finds only before Holm's correction
    over the 41 slices followed."""
    rng = np.random.default_rng(1)
    records = [record(0.2, {**{f"c{i}": (1000, 200 + int(rng.normal(0, 5))) for i in range(40)}, "cat": (1000, 201 + s)}, [])
               for s in range(4)]
    result = slices_over_seeds(records, "baseline")
    assert result["followed"] == 41 and result["findings"] == 0
    from scipy import stats

    assert stats.ttest_1samp([0.001, 0.002, 0.003, 0.004], 0.0).pvalue < 0.05  # uncorrected, cat would count


def test_a_class_with_a_bin_is_measured_against_its_parents():
    """Planted: 'cat, dark' is worse than overall in every seed only because 'cat' is; against its parent it is no finding."""
    def seed(s: int) -> dict:
        cat = 400 + 10 * s
        tested = [{"kind": "class", "name": "true class cat", "size": 1000, "errors": cat},
                  {"kind": "characteristic", "name": "dark", "size": 2500, "errors": 500 + s},
                  {"kind": "class+characteristic", "name": "cat, dark", "size": 250, "errors": cat // 4 + (s % 2),
                   "parents": ["true class cat", "dark"]}]
        return {"models": {"baseline": {"overall_error": 0.2, "tested": tested, "slices": []}}}
    result = slices_over_seeds([seed(s) for s in range(5)], "baseline", listed=10)
    assert [r["name"] for r in result["top"]] == ["true class cat"]


def test_a_difference_equal_in_every_seed_up_to_float_rounding_has_no_spread():
    """Planted: 'cat' is 0.1 worse than overall in both seeds, but 0.3 - 0.2 and 0.4 - 0.3 differ in their last bit, which
    scipy's t-test reads as a spread near zero (a RuntimeWarning in the sweep's log). The constant difference is a finding
    with p = 0, as for a difference without spread, and no warning is raised."""
    import warnings

    assert (0.3 - 0.2) != (0.4 - 0.3)
    records = [record(0.2, {"cat": (10, 3)}, ["cat"]), record(0.3, {"cat": (10, 4)}, ["cat"])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = slices_over_seeds(records, "baseline")
    (cat,) = result["top"]
    assert cat["p"] == 0.0 and cat["difference"]["std"] == 0.0 and cat["difference"]["mean"] == 0.1
