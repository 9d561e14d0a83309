"""The single-run rules about failures, explanations and calibration, and RULES, every rule of a run's report in order.

The robustness rules are in stress.report.robustness_observations; what a rule returns and
what its verdicts mean is in stress.report.statements.
"""

from __future__ import annotations

from stress.analyses.stats import wilson_interval
from stress.report.figures import figure_path
from stress.report.fourier_section import fourier_sensitivity, fourier_shift
from stress.report.probe_sections import PROBE_RULES
from stress.report.label_observations import failure_slices, label_suspects
from stress.report.robustness_observations import (
    AUGMENTATION_RULES, black_borders, clean_gain, corruption_gain, corruption_gain_split, invariances, worst_corruptions,
)
from stress.report.statements import (
    EFFECT, INCONCLUSIVE, NO_EFFECT, SANITY_THRESHOLD, Observation, Rule, given_models, interval_text, models_of, number, p_text, signed, verdict_of,
)


# -- rules --------------------------------------------------------------------
def confident_failures(summary: dict) -> list[Observation]:
    """Confident wrong predictions exist? Counts at confidence >= 0.9 and >= 0.99 per variant."""
    failures = summary.get("failures")
    if not failures:
        return []
    out = []
    for v in models_of(summary):
        f = failures[v]
        at_90, at_99, n = f["confident_errors"]["0.9"], f["confident_errors"]["0.99"], f["n_images"]
        low, high = wilson_interval(at_90, n)
        out.append(Observation(
            rule="confident_failures",
            text=(f"{v} is wrong with confidence ≥ 0.9 on {at_90} of {n} test images "
                  f"(≥ 0.99: {at_99}); it makes {f['n_errors']} errors in all."),
            verdict=EFFECT if at_90 > 0 else NO_EFFECT,
            uncertainty=f"rate of confident errors {number(at_90 / n)}, Wilson 95% CI {interval_text(low, high, sign=False)}",
            figure=figure_path("gallery", v),
            evidence={"count_0.9": at_90, "count_0.99": at_99, "n_images": n, "n_errors": f["n_errors"], "rate_low": low, "rate_high": high},
        ))
    return out


def border_attention(summary: dict) -> list[Observation]:
    """Do failures attend more to the border than successes? (centre share of the Grad-CAM mass)"""
    explanations = summary.get("explanations")
    if not explanations or "skipped" in explanations:
        return []
    out = []
    for v in models_of(summary):
        share = explanations[v]["centre_share"]
        interval = share.get("difference_interval") or [None, None]
        low, high = interval
        failures, successes = share["failures"]["mean"], share["successes"]["mean"]
        if failures is None or successes is None:
            group = "failures" if failures is None else "successes"
            out.append(Observation(
                rule="border_attention", text=f"For {v}, there are no {group} among the test images: centre and border attention "
                                              "of failures and successes are not compared.",
                verdict=INCONCLUSIVE, uncertainty="not computed", figure=figure_path("centre_attention"), evidence={group: None}))
            continue
        if verdict_of(low, high) == INCONCLUSIVE:
            verdict, answer = INCONCLUSIVE, "the interval includes 0: inconclusive."
        elif high < 0:
            verdict, answer = EFFECT, "failures put less of their attention on the centre, more on the border."
        else:
            verdict, answer = NO_EFFECT, "failures put more of their attention on the centre, not the border."
        out.append(Observation(
            rule="border_attention",
            text=(f"For {v}, the central window holds {number(failures)} of the Grad-CAM mass on failures and {number(successes)} "
                  f"on successes (uniform attention: {number(share['area_share'], 2)}); difference {signed(failures - successes)} "
                  f"(95% CI {interval_text(low, high)}): {answer}"),
            verdict=verdict, uncertainty="bootstrap 95% interval of the difference of means",
            figure=figure_path("centre_attention"),
            evidence={"failures": failures, "successes": successes, "low": low, "high": high, "cohens_d": share.get("cohens_d")},
        ))
    return out


def sanity_check(summary: dict) -> list[Observation]:
    """Do the maps pass the model-randomisation sanity check (low rank correlation with a random model)?"""
    explanations = summary.get("explanations")
    if not explanations or "skipped" in explanations:
        return []
    out = []
    for v in models_of(summary):
        check = explanations[v].get("sanity_check")
        if not check or check.get("mean_rank_correlation") is None:
            continue
        mean, interval = check["mean_rank_correlation"], check["interval"]
        high = interval.get("high")
        if mean >= SANITY_THRESHOLD:
            verdict, answer = NO_EFFECT, "fail: the maps barely change when the weights are randomised."
        elif high is not None and high < SANITY_THRESHOLD:
            verdict, answer = EFFECT, "pass: the maps depend on the learned weights."
        else:
            verdict, answer = INCONCLUSIVE, f"inconclusive: the interval reaches {number(SANITY_THRESHOLD, 1)}."
        out.append(Observation(
            rule="sanity_check",
            text=(f"For {v}, the mean rank correlation between maps of the trained and of a randomised model is {number(mean)} "
                  f"(95% CI {interval_text(interval.get('low'), high, sign=False)}, {interval['n']} images, threshold "
                  f"{number(SANITY_THRESHOLD, 1)}): {answer}"),
            verdict=verdict, uncertainty=(f"95% t-interval over images; {check['undefined']} of {check['n_images']} correlations undefined "
                                          "(a map that is constant, usually all zero after Grad-CAM's ReLU, has no ranks)"),
            figure=figure_path("faithfulness"),
            evidence={"mean_rank_correlation": mean, "low": interval.get("low"), "high": high},
        ))
    return out


def road_verdict(road: dict) -> str:
    """ROAD's combined score (LeRF − MoRF) / 2, map minus structure-matched random order, paired over
    images: EFFECT (faithful) when its interval lies above 0, NO_EFFECT when below, else INCONCLUSIVE.
    Deletion (MoRF) and insertion-like (LeRF) evidence thus enter with equal weight."""
    combined = road["combined_gain"]
    verdict = verdict_of(combined["low"], combined["high"])
    if verdict == EFFECT and combined["high"] < 0:
        return NO_EFFECT
    return verdict


def faithfulness(summary: dict) -> list[Observation]:
    """Are the maps faithful? ROAD (noisy linear imputation) most- and least-relevant-first against a
    structure-matched random order; the constant-fill deletion against i.i.d. random order is quoted beside it."""
    explanations = summary.get("explanations")
    if not explanations or "skipped" in explanations:
        return []
    out = []
    for v in models_of(summary):
        road, legacy = explanations[v].get("road"), explanations[v].get("faithfulness")
        if not road:
            continue
        verdict = road_verdict(road)
        morf, lerf, combined = road["morf_gain"], road["lerf_gain"], road["combined_gain"]
        answer = {EFFECT: "faithful: taken together, the map's order removes the evidence faster from the top and more slowly "
                          "from the bottom than the random order does.",
                  NO_EFFECT: "not faithful: taken together, the map does worse than the structure-matched random order.",
                  INCONCLUSIVE: "inconclusive: the interval of the combined gain includes 0."}[verdict]
        text = (f"For {v}, ROAD (noisy linear imputation, {road['n_images']} images) gives a most-relevant-first AUC of "
                f"{number(road['road_morf_auc']['mean'])} against {number(road['road_random_morf_auc']['mean'])} for a "
                f"structure-matched random order (gain {signed(morf['mean'])}, 95% CI {interval_text(morf['low'], morf['high'])}) "
                f"and a least-relevant-first AUC of {number(road['road_lerf_auc']['mean'])} against "
                f"{number(road['road_random_lerf_auc']['mean'])} (gain {signed(lerf['mean'])}, {interval_text(lerf['low'], lerf['high'])}); "
                f"combined gain (ROAD's (LeRF − MoRF) / 2, map − random) {signed(combined['mean'])} "
                f"{interval_text(combined['low'], combined['high'])}: {answer}")
        if legacy:
            g = legacy["deletion_gain"]
            text += (f" With a constant fill and i.i.d. random pixels instead, the deletion gain is {signed(g['mean'])} "
                     f"{interval_text(g['low'], g['high'])}"
                     + (": by that protocol the random order destroys the prediction faster than the map's. Scattered "
                        "constant-filled holes are far from any training image, the confound ROAD's imputation and "
                        "structured random order are built to remove (Rong et al. 2022), so the verdict rests on ROAD; this "
                        "run does not test that explanation." if g["high"] is not None and g["high"] < 0 else "."))
        out.append(Observation(
            rule="faithfulness", text=text, verdict=verdict,
            uncertainty="paired 95% t-intervals over images (this trained model)",
            figure=figure_path("faithfulness"),
            evidence={"combined_gain": combined["mean"], "combined_low": combined["low"], "combined_high": combined["high"],
                      "morf_gain": morf["mean"], "morf_low": morf["low"], "morf_high": morf["high"],
                      "lerf_gain": lerf["mean"], "lerf_low": lerf["low"], "lerf_high": lerf["high"]},
        ))
    return out


def calibration(summary: dict) -> list[Observation]:
    """Calibration: ECE before and after temperature scaling (no interval is recorded for ECE)."""
    results = summary.get("calibration")
    if not results:
        return []
    out = []
    for v in models_of(summary):
        c = results[v]
        n = sum(c["reliability"]["count"])
        if c.get("ece") is None or c.get("ece_after_temperature") is None:
            out.append(Observation(
                rule="calibration", text=f"For {v}, the expected calibration error could not be computed: its confidences are not "
                                         "finite (a diverged model gives non-finite logits).",
                verdict=INCONCLUSIVE, uncertainty="not computed", figure=figure_path("reliability"), evidence={"ece": None}))
            continue
        change = "lowered" if c["ece_after_temperature"] < c["ece"] else "raised"
        reduction = c.get("ece_reduction_interval")
        if reduction and None not in reduction:
            verdict = verdict_of(reduction[0], reduction[1])
            uncertainty = (f"ECE 95% bootstrap CI {interval_text(*c['ece_interval'], sign=False)} before, "
                           f"{interval_text(*c['ece_after_temperature_interval'], sign=False)} after; reduction {interval_text(*reduction)} "
                           f"(paired over {n} test images, {len(c['reliability']['count'])} bins)")
            if verdict == INCONCLUSIVE:
                change += " (not significantly)"
        else:
            verdict = INCONCLUSIVE
            uncertainty = f"no interval is recorded for ECE ({n} test images, {len(c['reliability']['count'])} bins): the change is not tested"
        out.append(Observation(
            rule="calibration",
            text=(f"For {v}, the expected calibration error is {number(c['ece'])}; temperature scaling (T = {number(c['temperature'], 2)}, "
                  f"fitted on the validation split) {change} it to {number(c['ece_after_temperature'])}."),
            verdict=verdict,
            uncertainty=uncertainty,
            figure=figure_path("reliability"),
            evidence={"ece": c["ece"], "ece_after_temperature": c["ece_after_temperature"], "temperature": c["temperature"]},
        ))
    return out


def characteristics(summary: dict) -> list[Observation]:
    """Which image characteristics separate confident failures from confident successes?"""
    failures = summary.get("failures")
    if not failures:
        return []
    out = []
    for v in models_of(summary):
        comparison = failures[v]["characteristics"]["comparison"]
        n_failures = min((entry["n_a"] for entry in comparison.values()), default=0)
        separating = [name for name, entry in comparison.items() if entry.get("separates")]
        if n_failures < 2:
            text = f"For {v}, only {n_failures} confident failure(s): too few to compare characteristics."
            verdict = INCONCLUSIVE
        elif separating:
            parts = [f"{name} (d = {signed(comparison[name].get('cohens_d'), 2)}, 95% CI "
                     f"{interval_text(comparison[name].get('d_low'), comparison[name].get('d_high'), 2)})" for name in separating]
            text = f"For {v}, confident failures ({n_failures} images) differ from confident successes in " + "; ".join(parts) + "."
            verdict = EFFECT
        else:
            text = f"For {v}, no characteristic separates confident failures ({n_failures} images) from confident successes: every interval of d includes 0."
            verdict = INCONCLUSIVE
        out.append(Observation(
            rule="characteristics", text=text, verdict=verdict,
            uncertainty=(f"Cohen's d (failures − successes) with a bootstrap 95% interval over images; 'differ' needs Welch's test "
                         f"to survive Holm's correction over the {len(comparison)} characteristics (α = 0.05) and the interval to exclude 0"),
            figure=figure_path("characteristics"),
            evidence={f"{name}_d": comparison[name].get("cohens_d") for name in comparison} | {"n_failures": n_failures},
        ))
    return out


def shared_failures(summary: dict) -> list[Observation]:
    """Do the two variants fail on different images? (discordant pairs, McNemar's exact test)"""
    view = summary.get("failures", {}).get("cross_model")
    if not view:
        return []
    counts, p = view["counts"], view["mcnemar_p"]
    return [Observation(
        rule="shared_failures",
        text=(f"Only {view.get('names', {}).get('a', 'baseline')} is wrong on {counts['a_wrong_b_right']} images, only "
              f"{view.get('names', {}).get('b', 'augmented')} on {counts['a_right_b_wrong']}, "
              f"both on {counts['both_wrong']} ({counts['both_confidently_wrong']} of them confidently); McNemar p = {p_text(p)}."),
        verdict=EFFECT if p < 0.05 else INCONCLUSIVE,
        uncertainty="exact two-sided McNemar test on the discordant images (5% level)",
        figure=figure_path("confusion_pairs"),
        evidence={**counts, "mcnemar_p": p},
    )]


RULES: tuple[Rule, ...] = (
    confident_failures, label_suspects, failure_slices, clean_gain, corruption_gain, worst_corruptions, corruption_gain_split, invariances, black_borders,
    border_attention, sanity_check, faithfulness, calibration, characteristics, shared_failures, fourier_sensitivity, fourier_shift,
    *PROBE_RULES,
)


def derive_observations(summary: dict, rules: tuple[Rule, ...] = RULES) -> list[Observation]:
    """Every observation the rules can make from `summary`, in rule order; missing sections are skipped,
    and so are the augmentation's rules for models given with --evaluate (AUGMENTATION_RULES)."""
    if given_models(summary):
        rules = tuple(rule for rule in rules if rule not in AUGMENTATION_RULES)
    return [observation for rule in rules for observation in rule(summary)]
