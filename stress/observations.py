"""Observations: sentences generated from the run's results, each with its evidence and verdict.

Every rule is a function summary -> list[Observation]; a rule whose section is missing
from the summary (its stage did not run) returns an empty list. Nothing here is written
by hand as a result: each number in a sentence is a formatted field of the summary.

Two kinds of statement are kept apart (`scope`):
- "model": about these trained models ("this model is wrong on these images", "its ECE is
  0.19"). Intervals over the test images are the right uncertainty for them.
- "intervention": about the augmentation's effect ("augmentation makes the network more
  robust to fog"). That needs the variation between trainings, i.e. seeds. A single run
  holds one trained pair, so these rules never give an "effect" verdict here: they say what
  this pair shows, that training-to-training variation was not measured, and which sweep
  command measures it (verdict "one pair only"). The sweep report (stress.sweep_report)
  gives intervention verdicts from seed-level intervals.

Verdicts:
- "effect": an interval excludes 0 in the direction the rule asks about, or a count is > 0
  (or, for a check, the check passes with its interval on the right side of the threshold);
- "no effect": the data show the opposite (a zero count, an interval on the other side,
  a failed check);
- "inconclusive": the interval includes 0, or no interval exists;
- "one pair only": an intervention statement from a single trained pair, not tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from stress.config import VARIANTS
from stress.stats import wilson_interval

EFFECT, NO_EFFECT, INCONCLUSIVE = "effect", "no effect", "inconclusive"
ONE_PAIR = "one pair only"  # an intervention statement from one trained pair: not a verdict on the augmentation
MODEL, INTERVENTION = "model", "intervention"  # Observation.scope
SANITY_THRESHOLD = 0.5  # mean rank correlation with a randomised model below this: maps depend on the weights
TRAINED_FOR = ("translation", "flip")  # what RandomCrop + RandomHorizontalFlip shows the model (edge-filled shifts)
NOT_TRAINED_FOR = ("rotation", "scale")


@dataclass(frozen=True)
class Observation:
    """One generated finding: `text` states it, `evidence` holds the numbers it quotes."""

    rule: str
    text: str
    verdict: str  # EFFECT | NO_EFFECT | INCONCLUSIVE
    uncertainty: str
    figure: str | None = None  # path relative to the run folder, e.g. figures/gain_heatmap.png
    evidence: dict[str, float | int | None] = field(default_factory=dict)
    scope: str = MODEL  # MODEL: about these trained models; INTERVENTION: about the augmentation's effect


Rule = Callable[[dict], list[Observation]]


# -- formatting and interval logic ------------------------------------------------
def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def number(value: float | None, digits: int = 3) -> str:
    """A value as the report prints it (fixed decimals; "n/a" for missing or not finite)."""
    return "n/a" if _missing(value) else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 3) -> str:
    return "n/a" if _missing(value) else f"{value:+.{digits}f}"


def interval_text(low: float | None, high: float | None, digits: int = 3, sign: bool = True) -> str:
    form = signed if sign else number
    return "no interval" if low is None or high is None else f"[{form(low, digits)}, {form(high, digits)}]"


def verdict_of(low: float | None, high: float | None) -> str:
    """EFFECT when the interval excludes 0, else INCONCLUSIVE (also without an interval)."""
    if low is None or high is None:
        return INCONCLUSIVE
    return EFFECT if low > 0 or high < 0 else INCONCLUSIVE


def direction(low: float | None, high: float | None, up: str, down: str) -> str:
    """Words for an interval: `up` above 0, `down` below 0, else that it is inconclusive."""
    if verdict_of(low, high) == INCONCLUSIVE:
        return "the 95% interval includes 0, so the direction is inconclusive."
    return up if low > 0 else down


def newcombe_interval(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float, float]:
    """Difference p_b - p_a of two independent proportions with Newcombe's hybrid Wilson 95% interval."""
    p_a, p_b = successes_a / n_a, successes_b / n_b
    low_a, high_a = wilson_interval(successes_a, n_a)
    low_b, high_b = wilson_interval(successes_b, n_b)
    difference = p_b - p_a
    low = difference - math.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2)
    high = difference + math.sqrt((high_b - p_b) ** 2 + (p_a - low_a) ** 2)
    return difference, low, high


def sweep_command(summary: dict) -> str:
    """The command that measures training-to-training variation for this run's data."""
    source = summary.get("dataset", {}).get("source") or "SOURCE"
    return f"python jobs/seed_sweep.py --data {source} --num-seeds 5"


def one_pair(summary: dict, finding: str) -> str:
    """`finding` (what this pair of models shows) plus the sentence that scopes it."""
    return (f"{finding} One trained pair: the variation between trainings (initialisation, data order, augmentation "
            f"draws) was not measured, so this is not evidence about the augmentation itself; `{sweep_command(summary)}` "
            "measures that.")


def pair_difference(mean: float | None, low: float | None, high: float | None) -> str:
    """How an image-level interval of a difference between the two models reads: about these models only."""
    if verdict_of(low, high) == INCONCLUSIVE:
        return "on these test images the two models are not distinguishable"
    return f"these two models differ ({'augmented higher' if low > 0 else 'augmented lower'})"


# -- rules --------------------------------------------------------------------
def confident_failures(summary: dict) -> list[Observation]:
    """Confident wrong predictions exist? Counts at confidence >= 0.9 and >= 0.99 per variant."""
    failures = summary.get("failures")
    if not failures:
        return []
    out = []
    for v in VARIANTS:
        f = failures[v]
        at_90, at_99, n = f["confident_errors"]["0.9"], f["confident_errors"]["0.99"], f["n_images"]
        low, high = wilson_interval(at_90, n)
        out.append(Observation(
            rule="confident_failures",
            text=(f"{v} is wrong with confidence ≥ 0.9 on {at_90} of {n} test images "
                  f"(≥ 0.99: {at_99}); it makes {f['n_errors']} errors in all."),
            verdict=EFFECT if at_90 > 0 else NO_EFFECT,
            uncertainty=f"rate of confident errors {number(at_90 / n)}, Wilson 95% CI {interval_text(low, high, sign=False)}",
            figure=f"figures/failure_gallery_{v}.png",
            evidence={"count_0.9": at_90, "count_0.99": at_99, "n_images": n, "n_errors": f["n_errors"], "rate_low": low, "rate_high": high},
        ))
    return out


def _test_accuracy(summary: dict, variant: str) -> tuple[int, int]:
    """(correct, total) on the test set: from the failure analysis, else from the training record."""
    failures = summary.get("failures", {}).get(variant)
    if failures:
        n = int(failures["accuracy"]["n"])
        return round(failures["accuracy"]["acc"] * n), n
    n = int(summary["dataset"]["test"])
    return round(summary["variants"][variant]["test_acc"] * n), n


def clean_gain(summary: dict) -> list[Observation]:
    """Did augmentation improve clean accuracy? Paired gain if the stress stage ran, else Newcombe/Wilson."""
    gain = summary.get("robustness", {}).get("gain", {}).get("clean")
    if gain:
        mean, low, high, how = gain["mean"], gain["low"], gain["high"], f"paired 95% t-interval over {gain['n']} test images"
    elif "variants" in summary and all(v in summary["variants"] for v in VARIANTS):
        (s_a, n_a), (s_b, n_b) = _test_accuracy(summary, "baseline"), _test_accuracy(summary, "augmented")
        mean, low, high = newcombe_interval(s_a, n_a, s_b, n_b)
        how = f"95% interval from the two Wilson intervals (Newcombe), {n_a} and {n_b} test images, unpaired"
    else:
        return []
    return [Observation(
        rule="clean_gain",
        text=one_pair(summary, f"Clean accuracy of augmented − baseline is {signed(mean)} (95% CI over test images "
                               f"{interval_text(low, high)}): {pair_difference(mean, low, high)}."),
        verdict=ONE_PAIR, uncertainty=how + "; one trained pair", figure="figures/training_curves.png",
        evidence={"gain": mean, "low": low, "high": high}, scope=INTERVENTION,
    )]


def corruption_gain(summary: dict) -> list[Observation]:
    """Absolute accuracy under corruption and the drop from clean, read together, for this pair."""
    robustness = summary.get("robustness")
    gain = (robustness or {}).get("gain", {}).get("mean_corruption")
    if not gain:
        return []
    accuracy = {v: robustness[v]["mean_corruption_acc"] for v in VARIANTS}
    drop = {v: robustness[v].get("corruption_drop") for v in VARIANTS}
    drop_gain = robustness["gain"].get("corruption_drop")
    finding = (f"Mean corruption accuracy is {number(accuracy['baseline'])} (baseline) and {number(accuracy['augmented'])} "
               f"(augmented), a paired difference of {signed(gain['mean'])} (95% CI over test images {interval_text(gain['low'], gain['high'])})")
    evidence = {"baseline": accuracy["baseline"], "augmented": accuracy["augmented"], "gain": gain["mean"], "low": gain["low"], "high": gain["high"]}
    if drop_gain and None not in drop.values():
        finding += (f"; the drop from clean is {number(drop['baseline'])} and {number(drop['augmented'])}, a difference of "
                    f"{signed(drop_gain['mean'])} {interval_text(drop_gain['low'], drop_gain['high'])}")
        higher, larger = gain["mean"] > 0, drop_gain["mean"] > 0
        finding += (": " + ("higher" if higher else "lower") + " accuracy under corruption, but a " if higher == larger else
                    ": " + ("higher" if higher else "lower") + " accuracy under corruption and a ")
        finding += ("larger" if larger else "smaller") + " drop from clean for the augmented model."
        evidence |= {"drop_baseline": drop["baseline"], "drop_augmented": drop["augmented"], "drop_gain": drop_gain["mean"],
                     "drop_low": drop_gain["low"], "drop_high": drop_gain["high"]}
    else:
        finding += "."
    return [Observation(
        rule="corruption_gain", text=one_pair(summary, finding), verdict=ONE_PAIR,
        uncertainty=f"paired 95% t-intervals over {gain['n']} test images of one trained pair (each image's accuracy over all corruption cells)",
        figure="figures/severity_curves.png", evidence=evidence, scope=INTERVENTION,
    )]


def worst_corruptions(summary: dict, top: int = 3) -> list[Observation]:
    """Which corruptions hurt each model most (largest drop from clean at the highest severity)?"""
    robustness = summary.get("robustness")
    if not robustness or not robustness[VARIANTS[0]].get("by_corruption"):
        return []
    out = []
    for v in VARIANTS:
        r = robustness[v]
        severity = r["severities"][-1]
        drops = {c: r["clean_acc"] - values[-1] for c, values in r["by_corruption"].items()}
        ranked = sorted(drops, key=lambda c: (-drops[c], c))[:top]
        worst = ranked[0]
        worst_low, worst_high = r["by_corruption_interval"][worst][-1]
        clean_low, clean_high = r["clean_acc_interval"]
        listing = ", ".join(f"{c} (−{number(drops[c])})" for c in ranked)
        separated = None not in (worst_high, clean_low) and worst_high < clean_low
        out.append(Observation(
            rule="worst_corruptions",
            text=(f"For {v}, the corruptions that hurt most at severity {severity} are {listing}; under {worst} accuracy falls "
                  f"from {number(r['clean_acc'])} to {number(r['by_corruption'][worst][-1])}."),
            verdict=EFFECT if separated else INCONCLUSIVE,
            uncertainty=(f"Wilson 95% CIs over test images: clean {interval_text(clean_low, clean_high, sign=False)}, "
                         f"{worst} {interval_text(worst_low, worst_high, sign=False)}"),
            figure="figures/severity_curves.png",
            evidence={"corruption": worst, "drop": drops[worst], "clean": r["clean_acc"], "worst_accuracy": r["by_corruption"][worst][-1]},
        ))
    return out


def corruption_gain_split(summary: dict) -> list[Observation]:
    """Which corruptions augmentation helped and which it hurt, each judged by its own paired interval."""
    gains = summary.get("robustness", {}).get("gain", {}).get("by_corruption")
    if not gains:
        return []
    helped = sorted((c for c, g in gains.items() if g["low"] is not None and g["low"] > 0), key=lambda c: -gains[c]["mean"])
    hurt = sorted((c for c, g in gains.items() if g["high"] is not None and g["high"] < 0), key=lambda c: gains[c]["mean"])
    unclear = sorted(c for c in gains if c not in helped and c not in hurt)

    def listing(names: list[str]) -> str:
        return ", ".join(f"{c} {signed(gains[c]['mean'])} {interval_text(gains[c]['low'], gains[c]['high'])}" for c in names) or "none"

    text = (f"Per corruption (mean over severities, augmented − baseline), the augmented model of this pair is more accurate on "
            f"{len(helped)}: {listing(helped)}; less accurate on {len(hurt)}: {listing(hurt)}; not distinguishable on {len(unclear)}"
            + (f": {', '.join(unclear)}." if unclear else "."))
    n = next(iter(gains.values()))["n"]
    return [Observation(
        rule="corruption_gain_split", text=one_pair(summary, text), verdict=ONE_PAIR,
        uncertainty=(f"paired 95% t-intervals over {n} test images of one trained pair, per corruption; not corrected for the "
                     f"{len(gains)} comparisons (the sweep report applies Holm over seeds)"),
        figure="figures/gain_heatmap.png",
        evidence={"helped": helped, "hurt": hurt, "inconclusive": unclear}, scope=INTERVENTION,
    )]


def _family_sentence(name: str, gain: dict) -> str:
    return f"{name} {signed(gain['mean'])} {interval_text(gain['low'], gain['high'])}"


def invariances(summary: dict) -> list[Observation]:
    """Trained-for invariances (translation, flip) versus transfer (rotation, scale, corruptions)."""
    gain = summary.get("robustness", {}).get("gain", {})
    families = gain.get("shift_families")
    if not families:
        return []
    out = []
    groups = (("trained_invariances", "shifts the augmentation shows (trained for)", TRAINED_FOR, {}),
              ("transfer", "shifts and corruptions it does not show (transfer)", NOT_TRAINED_FOR,
               {"mean corruption": gain["mean_corruption"]} if "mean_corruption" in gain else {}))
    for rule, label, names, extra in groups:
        entries = {f: families[f] for f in names if f in families} | extra
        if not entries:
            continue
        clear = [f for f, g in entries.items() if verdict_of(g["low"], g["high"]) == EFFECT]
        conclusion = (f"the image-level interval excludes 0 for {', '.join(clear)}." if clear else "every interval includes 0.")
        out.append(Observation(
            rule=rule,
            text=one_pair(summary, f"Accuracy of augmented − baseline on {label}: "
                                   + "; ".join(_family_sentence(f, g) for f, g in entries.items()) + f"; {conclusion}"),
            verdict=ONE_PAIR,
            uncertainty="paired 95% t-intervals over the stress images of one trained pair; shifts fill uncovered pixels from the edge",
            figure="figures/shift_families.png",
            evidence={f"{f}_{k}": g[k] for f, g in entries.items() for k in ("mean", "low", "high")}, scope=INTERVENTION,
        ))
    return out


def black_borders(summary: dict) -> list[Observation]:
    """How much of the translation gain under zero fill is familiarity with black borders?"""
    border = summary.get("robustness", {}).get("gain", {}).get("border_effect")
    if not border:
        return []
    share = border.get("share_of_zero_fill_gain")
    finding = (f"Under translations, augmented − baseline accuracy is {signed(border['gain_zero_fill'])} with black (zero) borders and "
               f"{signed(border['gain_edge_fill'])} with edge-replicated borders; the difference, {signed(border['mean'])} "
               f"(95% CI over test images {interval_text(border['low'], border['high'])}), measures what the black borders "
               "it saw in zero-padded RandomCrop training are worth to the augmented model"
               + (f": {100 * share:.0f}% of its zero-fill translation gain." if share is not None and border["gain_zero_fill"] > 0 else "."))
    return [Observation(
        rule="black_borders", text=one_pair(summary, finding), verdict=ONE_PAIR,
        uncertainty="paired 95% t-interval over the stress images of one trained pair",
        figure="figures/translation_grid.png",
        evidence={"difference": border["mean"], "low": border["low"], "high": border["high"], "share": share,
                  "gain_zero_fill": border["gain_zero_fill"], "gain_edge_fill": border["gain_edge_fill"]},
        scope=INTERVENTION,
    )]


def border_attention(summary: dict) -> list[Observation]:
    """Do failures attend more to the border than successes? (centre share of the Grad-CAM mass)"""
    explanations = summary.get("explanations")
    if not explanations:
        return []
    out = []
    for v in VARIANTS:
        share = explanations[v]["centre_share"]
        interval = share.get("difference_interval") or [None, None]
        low, high = interval
        failures, successes = share["failures"]["mean"], share["successes"]["mean"]
        if failures is None or successes is None:
            group = "failures" if failures is None else "successes"
            out.append(Observation(
                rule="border_attention", text=f"For {v}, there are no {group} among the test images: centre and border attention "
                                              "of failures and successes are not compared.",
                verdict=INCONCLUSIVE, uncertainty="not computed", figure="figures/centre_attention.png", evidence={group: None}))
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
            figure="figures/centre_attention.png",
            evidence={"failures": failures, "successes": successes, "low": low, "high": high, "cohens_d": share.get("cohens_d")},
        ))
    return out


def sanity_check(summary: dict) -> list[Observation]:
    """Do the maps pass the model-randomisation sanity check (low rank correlation with a random model)?"""
    explanations = summary.get("explanations")
    if not explanations:
        return []
    out = []
    for v in VARIANTS:
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
            verdict=verdict, uncertainty=f"95% t-interval over images; {check['undefined']} of {check['n_images']} correlations undefined",
            figure="figures/faithfulness.png",
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
    if not explanations:
        return []
    out = []
    for v in VARIANTS:
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
                     f"{interval_text(g['low'], g['high'])}: scattered constant holes are out of distribution, which makes "
                     "that random baseline unusually destructive.")
        out.append(Observation(
            rule="faithfulness", text=text, verdict=verdict,
            uncertainty="paired 95% t-intervals over images (this trained model)",
            figure="figures/faithfulness.png",
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
    for v in VARIANTS:
        c = results[v]
        n = sum(c["reliability"]["count"])
        if c.get("ece") is None or c.get("ece_after_temperature") is None:
            out.append(Observation(
                rule="calibration", text=f"For {v}, the expected calibration error could not be computed: its confidences are not "
                                         "finite (a diverged model gives non-finite logits).",
                verdict=INCONCLUSIVE, uncertainty="not computed", figure="figures/reliability.png", evidence={"ece": None}))
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
            figure="figures/reliability.png",
            evidence={"ece": c["ece"], "ece_after_temperature": c["ece_after_temperature"], "temperature": c["temperature"]},
        ))
    return out


def characteristics(summary: dict) -> list[Observation]:
    """Which image characteristics separate confident failures from confident successes?"""
    failures = summary.get("failures")
    if not failures:
        return []
    out = []
    for v in VARIANTS:
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
            figure="figures/characteristics.png",
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
        text=(f"Only baseline is wrong on {counts['a_wrong_b_right']} images, only augmented on {counts['a_right_b_wrong']}, "
              f"both on {counts['both_wrong']} ({counts['both_confidently_wrong']} of them confidently); McNemar p = {number(p)}."),
        verdict=EFFECT if p < 0.05 else INCONCLUSIVE,
        uncertainty="exact two-sided McNemar test on the discordant images (5% level)",
        figure="figures/confusion_pairs.png",
        evidence={**counts, "mcnemar_p": p},
    )]


RULES: tuple[Rule, ...] = (
    confident_failures, clean_gain, corruption_gain, worst_corruptions, corruption_gain_split, invariances, black_borders,
    border_attention, sanity_check, faithfulness, calibration, characteristics, shared_failures,
)


def derive_observations(summary: dict, rules: tuple[Rule, ...] = RULES) -> list[Observation]:
    """Every observation the rules can make from `summary`, in rule order; missing sections are skipped."""
    return [observation for rule in rules for observation in rule(summary)]
