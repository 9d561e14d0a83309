"""Observation rules on hand-built summaries where the answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stress.analyses.stats import newcombe_interval, wilson_interval
from stress.report import observations as obs
from stress.report import robustness_observations as robs
from stress.report import statements as st

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "run_small"


def gain(mean, low, high, n=200):
    return {"mean": mean, "low": low, "high": high, "n": n}


def base_summary() -> dict:
    return {"dataset": {"test": 400}, "variants": {"baseline": {"test_acc": 0.75}, "augmented": {"test_acc": 0.80}}}


def robustness_summary(clean, corruption, by_corruption=None, families=None) -> dict:
    per_variant = {
        "clean_acc": 0.8, "mean_corruption_acc": 0.6, "severities": [1, 2, 3, 4, 5],
        "by_corruption": {"fog": [0.7, 0.6, 0.5, 0.4, 0.3], "snow": [0.8, 0.7, 0.6, 0.5, 0.45], "blur": [0.79] * 5},
    }
    return {**base_summary(), "robustness": {
        "baseline": per_variant, "augmented": {**per_variant, "mean_corruption_acc": 0.65},
        "gain": {"clean": clean, "mean_corruption": corruption, "by_corruption": by_corruption or {}, "shift_families": families or {}},
    }}


def test_single_pair_intervention_rules_report_the_pair_and_claim_no_effect():
    [found] = robs.clean_gain(robustness_summary(gain(0.031, 0.012, 0.050), gain(0, -1, 1)))
    assert found.scope == st.INTERVENTION and found.verdict == st.ONE_PAIR  # although the image-level interval excludes 0
    assert "+0.031" in found.text and "[+0.012, +0.050]" in found.text and "these two models differ" in found.text
    assert "the variation between trainings" in found.text and "was not measured" in found.text
    assert "python jobs/seed_sweep.py" in found.text and "one trained pair" in found.uncertainty
    [found] = robs.corruption_gain(robustness_summary(gain(0, -1, 1), gain(-0.04, -0.07, -0.01)))
    assert found.verdict == st.ONE_PAIR and "more robust" not in found.text and "less robust" not in found.text
    assert "0.600" in found.text and "0.650" in found.text and "-0.040" in found.text


def test_corruption_gain_reads_absolute_accuracy_and_the_drop_together():
    summary = robustness_summary(gain(0.042, 0.033, 0.050), gain(0.023, 0.018, 0.028))
    summary["robustness"]["baseline"]["corruption_drop"] = 0.116
    summary["robustness"]["augmented"] = {**summary["robustness"]["augmented"], "corruption_drop": 0.135}
    summary["robustness"]["gain"]["corruption_drop"] = gain(0.019, 0.012, 0.026)
    [found] = robs.corruption_gain(summary)
    assert "higher accuracy under corruption, but a larger drop from clean" in found.text
    assert "0.116" in found.text and "0.135" in found.text and "+0.019 [+0.012, +0.026]" in found.text
    summary["robustness"]["gain"]["corruption_drop"] = gain(-0.01, -0.02, 0.0)
    [found] = robs.corruption_gain(summary)
    assert "higher accuracy under corruption and a smaller drop from clean" in found.text


def test_interval_straddling_zero_does_not_tell_the_models_apart():
    [found] = robs.clean_gain(robustness_summary(gain(0.005, -0.05, 0.06), gain(0, -1, 1)))
    assert found.verdict == st.ONE_PAIR and "not distinguishable" in found.text
    assert st.verdict_of(None, None) == st.INCONCLUSIVE
    assert st.verdict_of(0.0, 0.1) == st.INCONCLUSIVE  # touching 0 is not excluding it


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example 56/70 vs 48/80: method 10 gives 0.0524 to 0.3339.
    difference, low, high = newcombe_interval(48, 80, 56, 70)
    assert difference == pytest.approx(0.2)
    assert low == pytest.approx(0.0524, abs=1e-4) and high == pytest.approx(0.3339, abs=1e-4)


def test_clean_gain_without_stress_uses_wilson_intervals():
    [found] = robs.clean_gain(base_summary())  # 300/400 vs 320/400
    difference, low, high = newcombe_interval(300, 400, 320, 400)
    assert found.evidence == {"gain": pytest.approx(difference), "low": pytest.approx(low), "high": pytest.approx(high)}
    assert f"{difference:+.3f}" in found.text and "Newcombe" in found.uncertainty
    assert found.verdict == st.ONE_PAIR and found.scope == st.INTERVENTION


def test_missing_sections_skip_their_rules():
    found = obs.derive_observations(base_summary())
    assert [o.rule for o in found] == ["clean_gain"]
    for rule in obs.RULES:
        if rule is not robs.clean_gain:
            assert rule(base_summary()) == []


def test_confident_failure_counts():
    failures = {v: {"confident_errors": {"0.9": n, "0.99": m}, "n_images": 500, "n_errors": 90} for v, n, m in (("baseline", 7, 2), ("augmented", 0, 0))}
    first, second = obs.confident_failures({"failures": failures})
    assert first.verdict == st.EFFECT and "on 7 of 500" in first.text and "(≥ 0.99: 2)" in first.text
    low, high = wilson_interval(7, 500)
    assert f"[{low:.3f}, {high:.3f}]" in first.uncertainty
    assert second.verdict == st.NO_EFFECT and "on 0 of 500" in second.text


def test_worst_corruptions_describe_each_model():
    summary = robustness_summary(gain(0, -1, 1), gain(0, -1, 1))
    for v in ("baseline", "augmented"):
        summary["robustness"][v] = {**summary["robustness"][v], "clean_acc_interval": [0.76, 0.84],
                                    "by_corruption_interval": {"fog": [[0, 1]] * 4 + [[0.25, 0.35]], "snow": [[0, 1]] * 5, "blur": [[0, 1]] * 5}}
    first, _ = robs.worst_corruptions(summary)
    # clean 0.8; severity 5: fog 0.3 (drop 0.5), snow 0.45 (0.35), blur 0.79 (0.01)
    assert first.evidence["corruption"] == "fog" and first.evidence["drop"] == pytest.approx(0.5)
    assert "fog (−0.500), snow (−0.350), blur (−0.010)" in first.text
    assert first.verdict == st.EFFECT and first.scope == st.MODEL  # [0.25, 0.35] lies below [0.76, 0.84]
    summary["robustness"]["baseline"]["by_corruption_interval"]["fog"][-1] = [0.2, 0.8]
    assert robs.worst_corruptions(summary)[0].verdict == st.INCONCLUSIVE


def test_invariances_split_trained_and_transfer():
    families = {"translation": gain(0.05, 0.01, 0.09), "flip": gain(0.0, -0.02, 0.02), "rotation": gain(0.0, -0.03, 0.03), "scale": gain(0.01, -0.02, 0.04)}
    trained, transfer = robs.invariances(robustness_summary(gain(0, -1, 1), gain(-0.01, -0.03, 0.01), families=families))
    assert trained.rule == "trained_invariances" and trained.verdict == st.ONE_PAIR and "excludes 0 for translation." in trained.text
    assert transfer.verdict == st.ONE_PAIR and "mean corruption -0.010 [-0.030, +0.010]" in transfer.text
    assert "every interval includes 0" in transfer.text


def test_black_borders_quote_both_fills_and_the_share():
    summary = robustness_summary(gain(0, -1, 1), gain(0, -1, 1))
    summary["robustness"]["gain"]["border_effect"] = {**gain(0.06, 0.05, 0.07), "gain_zero_fill": 0.24, "gain_edge_fill": 0.18,
                                                      "share_of_zero_fill_gain": 0.25}
    [found] = robs.black_borders(summary)
    assert found.verdict == st.ONE_PAIR and "+0.240" in found.text and "+0.180" in found.text and "25%" in found.text
    assert robs.black_borders(robustness_summary(gain(0, -1, 1), gain(0, -1, 1))) == []


def explanations(difference, sanity_mean, sanity_high, deletion_gain, combined=None):
    combined = combined or gain(0.1, 0.05, 0.15)
    entry = {
        "road": {"road_morf_auc": {"mean": 0.3}, "road_random_morf_auc": {"mean": 0.5}, "road_lerf_auc": {"mean": 0.9},
                 "road_random_lerf_auc": {"mean": 0.7}, "morf_gain": gain(0.2, 0.1, 0.3), "lerf_gain": gain(0.2, 0.1, 0.3),
                 "combined_gain": combined, "n_images": 40},
        "centre_share": {"failures": {"mean": 0.40}, "successes": {"mean": 0.50}, "difference_interval": difference, "area_share": 0.25, "cohens_d": -0.5},
        "sanity_check": {"mean_rank_correlation": sanity_mean, "interval": {"low": sanity_mean - 0.1, "high": sanity_high, "n": 40}, "undefined": 0, "n_images": 40},
        "faithfulness": {"deletion_auc": {"mean": 0.2}, "random_deletion_auc": {"mean": 0.6}, "insertion_auc": {"mean": 0.8},
                         "random_insertion_auc": {"mean": 0.7}, "deletion_gain": deletion_gain, "n_images": 40},
    }
    return {"explanations": {"baseline": entry, "augmented": entry}}


def test_border_attention_direction():
    [border, _] = obs.border_attention(explanations([-0.15, -0.05], 0.2, 0.3, gain(0.4, 0.3, 0.5)))
    assert border.verdict == st.EFFECT and "0.400" in border.text and "0.500" in border.text and "-0.100" in border.text
    [border, _] = obs.border_attention(explanations([0.05, 0.15], 0.2, 0.3, gain(0.4, 0.3, 0.5)))
    assert border.verdict == st.NO_EFFECT
    [border, _] = obs.border_attention(explanations([-0.05, 0.05], 0.2, 0.3, gain(0.4, 0.3, 0.5)))
    assert border.verdict == st.INCONCLUSIVE


@pytest.mark.parametrize(("mean", "high", "verdict", "word"), [(0.2, 0.35, st.EFFECT, "pass"), (0.4, 0.55, st.INCONCLUSIVE, "inconclusive"), (0.7, 0.8, st.NO_EFFECT, "fail")])
def test_sanity_check_threshold(mean, high, verdict, word):
    [check, _] = obs.sanity_check(explanations([-0.1, -0.05], mean, high, gain(0.4, 0.3, 0.5)))
    assert check.verdict == verdict and word in check.text and f"{mean:.3f}" in check.text


def test_faithfulness_verdict_follows_the_road_combined_gain():
    [f, _] = obs.faithfulness(explanations([-0.1, -0.05], 0.2, 0.3, gain(-0.2, -0.3, -0.1), combined=gain(0.1, 0.05, 0.15)))
    assert f.verdict == st.EFFECT and "faithful:" in f.text and "+0.100 [+0.050, +0.150]" in f.text
    assert "0.300" in f.text and "0.500" in f.text and "-0.200 [-0.300, -0.100]" in f.text  # the constant-fill result, quoted beside
    [f, _] = obs.faithfulness(explanations([-0.1, -0.05], 0.2, 0.3, gain(0.4, 0.3, 0.5), combined=gain(-0.1, -0.15, -0.05)))
    assert f.verdict == st.NO_EFFECT and "not faithful" in f.text
    [f, _] = obs.faithfulness(explanations([-0.1, -0.05], 0.2, 0.3, gain(0.4, 0.3, 0.5), combined=gain(0.01, -0.1, 0.12)))
    assert f.verdict == st.INCONCLUSIVE
    no_road = explanations([-0.1, -0.05], 0.2, 0.3, gain(0.4, 0.3, 0.5))
    for entry in no_road["explanations"].values():
        entry.pop("road", None)  # both variants share one dict here
    assert obs.faithfulness(no_road) == []  # a run folder from before ROAD: no verdict from the biased protocol


def test_characteristics_separation():
    def entry(n_a, separates, d=None, low=None, high=None):
        return {"n_a": n_a, "n_b": 100, "cohens_d": d, "d_low": low, "d_high": high, "separates": separates, "mean_a": 0, "mean_b": 0}

    failures = {
        "baseline": {"characteristics": {"comparison": {"contrast": entry(9, True, -0.8, -1.1, -0.5), "brightness": entry(9, False, 0.1, -0.4, 0.6)}}},
        "augmented": {"characteristics": {"comparison": {"contrast": entry(1, False), "brightness": entry(1, False)}}},
    }
    first, second = obs.characteristics({"failures": failures})
    assert first.verdict == st.EFFECT and "contrast (d = -0.80, 95% CI [-1.10, -0.50])" in first.text and "brightness" not in first.text
    assert second.verdict == st.INCONCLUSIVE and "only 1 confident failure" in second.text


def test_fixture_observations_quote_the_summary():
    summary = json.loads((FIXTURE / "summary.json").read_text())
    found = {(o.rule, i): o for i, o in enumerate(obs.derive_observations(summary))}
    rules = {rule for rule, _ in found}
    # The fixture predates the label audit, the failure slices and the Fourier heat map (their rules are tested on planted summaries).
    later = {"invariances", "label_suspects", "failure_slices", "fourier_sensitivity", "fourier_shift", "texture_reliance", "texture_shift",
             "adversarial_robustness", "adversarial_shift", "explanation_moved"}  # tests/unit/report/test_probe_observations.py
    assert {r.__name__ for r in obs.RULES} - later <= rules | {"invariances"}
    assert {"trained_invariances", "transfer"} <= rules
    for o in found.values():
        assert o.verdict in (st.EFFECT, st.NO_EFFECT, st.INCONCLUSIVE, st.ONE_PAIR) and o.text and o.uncertainty
    g = summary["robustness"]["gain"]["clean"]
    [clean] = [o for (rule, _), o in found.items() if rule == "clean_gain"]
    assert f"{g['mean']:+.3f}" in clean.text and f"[{g['low']:+.3f}, {g['high']:+.3f}]" in clean.text
    [calibration, _] = [o for (rule, _), o in found.items() if rule == "calibration"]
    c = summary["calibration"]["baseline"]
    assert f"{c['ece']:.3f}" in calibration.text and f"{c['ece_after_temperature']:.3f}" in calibration.text


def _calibration_summary(reduction):
    entry = {
        "ece": 0.10, "ece_after_temperature": 0.02, "temperature": 1.8,
        "ece_interval": [0.09, 0.11], "ece_after_temperature_interval": [0.015, 0.025], "ece_reduction_interval": reduction,
        "reliability": {"count": [10] * 15},
    }
    return {"calibration": {"baseline": entry, "augmented": dict(entry)}}


def test_calibration_rule_uses_the_bootstrap_interval_of_the_reduction():
    from stress.report.observations import calibration
    from stress.report.statements import EFFECT, INCONCLUSIVE

    significant = calibration(_calibration_summary([0.07, 0.09]))
    assert [o.verdict for o in significant] == [EFFECT, EFFECT]
    assert "0.100" in significant[0].text and "0.020" in significant[0].text and "[0.090, 0.110]" in significant[0].uncertainty
    straddling = calibration(_calibration_summary([-0.01, 0.05]))
    assert [o.verdict for o in straddling] == [INCONCLUSIVE, INCONCLUSIVE]
    assert "not significantly" in straddling[0].text


def test_corruption_gain_split_sorts_corruptions_by_their_own_interval():
    from stress.report.robustness_observations import corruption_gain_split

    gains = {
        "fog": {"mean": 0.06, "low": 0.05, "high": 0.07, "n": 100},
        "gaussian_noise": {"mean": -0.04, "low": -0.05, "high": -0.03, "n": 100},
        "snow": {"mean": 0.01, "low": -0.01, "high": 0.03, "n": 100},
    }
    [observation] = corruption_gain_split({"robustness": {"gain": {"by_corruption": gains}}})
    assert observation.verdict == st.ONE_PAIR and observation.scope == st.INTERVENTION
    assert observation.evidence == {"helped": ["fog"], "hurt": ["gaussian_noise"], "inconclusive": ["snow"]}
    assert "more accurate on 1: fog +0.060 [+0.050, +0.070]" in observation.text
    assert "less accurate on 1: gaussian noise -0.040" in observation.text and "Holm" in observation.uncertainty
    assert corruption_gain_split({"robustness": {"gain": {}}}) == []


def test_no_augmentation_effect_is_claimed_from_one_trained_pair():
    """On the fixture run, and on a copy whose image-level intervals all exclude 0, no rule about
    the augmentation's effect says "effect" (or "no effect"); the model-level rules still do."""
    summary = json.loads((FIXTURE / "summary.json").read_text())
    planted = json.loads(json.dumps(summary))
    gains = planted["robustness"]["gain"]
    for block in [gains["clean"], gains["mean_corruption"], *gains["by_corruption"].values(), *gains["shift_families"].values()]:
        block.update(mean=0.05, low=0.03, high=0.07)  # what image-level intervals alone would call an effect
    for case in (summary, planted):
        found = obs.derive_observations(case)
        about_augmentation = [o for o in found if o.scope == st.INTERVENTION]
        assert {o.rule for o in about_augmentation} >= {"clean_gain", "corruption_gain", "corruption_gain_split", "trained_invariances"}
        assert all(o.verdict == st.ONE_PAIR for o in about_augmentation), [(o.rule, o.verdict) for o in about_augmentation]
        assert all("not measured" in o.text for o in about_augmentation)
        assert any(o.verdict == st.EFFECT for o in found if o.scope == st.MODEL)  # the check can see effects at all
    # The same interval-based verdict that the model-level rules use would have called every planted gain an effect.
    assert all(st.verdict_of(b["low"], b["high"]) == st.EFFECT for b in gains["by_corruption"].values())


def test_the_clean_gain_names_the_interval_its_record_holds():
    """Since STRESS_VERSION 3 the clean gain is Newcombe's paired interval (method recorded); older records hold t-intervals."""
    newcombe = {**gain(0.031, 0.012, 0.050), "method": "newcombe_paired"}
    [found] = robs.clean_gain(robustness_summary(newcombe, gain(0, -1, 1)))
    assert found.uncertainty.startswith("Newcombe's paired 95% interval for 0/1 outcomes over ")
    [older] = robs.clean_gain(robustness_summary(gain(0.031, 0.012, 0.050), gain(0, -1, 1)))
    assert older.uncertainty.startswith("paired 95% t-interval over ")
    mixed = {"fog": {**gain(0.01, -0.01, 0.03), "method": "t"}, "snow": {**gain(0.02, 0.0, 0.04), "method": "newcombe_paired"}}
    assert st.paired_method(mixed.values()) == "paired 95% intervals (Newcombe's for 0/1 outcomes, else t)"


def test_p_values_below_a_thousandth_are_printed_in_scientific_notation_not_as_zero():
    from stress.analyses.stats import mcnemar_exact_p

    p = mcnemar_exact_p(400, 100)  # 500 discordant images, split 4:1: p is far below 0.001
    assert 0 < p < 1e-30 and st.number(p) == "0.000"  # what the report used to print
    assert st.p_text(p) == f"{p:.1e}" and float(st.p_text(p)) > 0
    assert st.p_text(0.0421) == "0.042" and st.p_text(0.001) == "0.001" and st.p_text(0.000999) == "1.0e-03"
    assert st.p_text(None) == "n/a" and st.p_text(float("nan")) == "n/a" and st.p_text(0.0) == "< 1e-300"  # underflowed
