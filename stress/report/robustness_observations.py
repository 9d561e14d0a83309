"""The single-run rules about robustness: clean and corruption gains, the worst corruptions, shift invariances, black borders.

All of them compare the two trained models on the same test images (paired, intervals over
images); about the augmentation itself they say "one pair only" (see stress.report.statements).
"""

from __future__ import annotations

from stress.analyses.stats import newcombe_interval
from stress.constants import VARIANTS
from stress.report.figures import figure_path
from stress.report.statements import (
    EFFECT, INCONCLUSIVE, INTERVENTION, NOT_TRAINED_FOR, ONE_PAIR, TRAINED_FOR, Observation, interval_text, models_of,
    number, one_pair, pair_difference, paired_method, signed, verdict_of, words,
)


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
        mean, low, high = gain["mean"], gain["low"], gain["high"]
        how = f"{paired_method([gain], one=True)} over {gain['n']} test images"
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
        verdict=ONE_PAIR, uncertainty=how + "; one trained pair", figure=figure_path("training"),
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
        figure=figure_path("severity"), evidence=evidence, scope=INTERVENTION,
    )]


def worst_corruptions(summary: dict, top: int = 3) -> list[Observation]:
    """Which corruptions hurt each model most (largest drop from clean at the highest severity)?"""
    robustness = summary.get("robustness")
    if not robustness or not robustness[models_of(summary)[0]].get("by_corruption"):
        return []
    out = []
    for v in models_of(summary):
        r = robustness[v]
        severity = r["severities"][-1]
        drops = {c: r["clean_acc"] - values[-1] for c, values in r["by_corruption"].items()}
        ranked = sorted(drops, key=lambda c: (-drops[c], c))[:top]
        worst = ranked[0]
        worst_low, worst_high = r["by_corruption_interval"][worst][-1]
        clean_low, clean_high = r["clean_acc_interval"]
        listing = ", ".join(f"{words(c)} (−{number(drops[c])})" if drops[c] >= 0 else f"{words(c)} (+{number(-drops[c])})" for c in ranked)
        separated = None not in (worst_high, clean_low) and worst_high < clean_low
        out.append(Observation(
            rule="worst_corruptions",
            text=(f"For {v}, the corruptions that hurt most at severity {severity} are {listing}; under {words(worst)} accuracy falls "
                  f"from {number(r['clean_acc'])} to {number(r['by_corruption'][worst][-1])}."),
            verdict=EFFECT if separated else INCONCLUSIVE,
            uncertainty=(f"Wilson 95% CIs over test images: clean {interval_text(clean_low, clean_high, sign=False)}, "
                         f"{words(worst)} {interval_text(worst_low, worst_high, sign=False)}"),
            figure=figure_path("severity"),
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
        return ", ".join(f"{words(c)} {signed(gains[c]['mean'])} {interval_text(gains[c]['low'], gains[c]['high'])}" for c in names) or "none"

    text = (f"Per corruption (mean over severities, augmented − baseline), the augmented model of this pair is more accurate on "
            f"{len(helped)}: {listing(helped)}; less accurate on {len(hurt)}: {listing(hurt)}; not distinguishable on {len(unclear)}"
            + (f": {', '.join(words(c) for c in unclear)}." if unclear else "."))
    n = next(iter(gains.values()))["n"]
    return [Observation(
        rule="corruption_gain_split", text=one_pair(summary, text), verdict=ONE_PAIR,
        uncertainty=(f"{paired_method(gains.values())} over {n} test images of one trained pair, per corruption; not corrected for the "
                     f"{len(gains)} comparisons (the sweep report applies Holm over seeds)"),
        figure=figure_path("gain_heatmap"),
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
            figure=figure_path("shift_families"),
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
        figure=figure_path("translation"),
        evidence={"difference": border["mean"], "low": border["low"], "high": border["high"], "share": share,
                  "gain_zero_fill": border["gain_zero_fill"], "gain_edge_fill": border["gain_edge_fill"]},
        scope=INTERVENTION,
    )]


# The rules that read model − reference as the augmentation's effect (translation and flip as trained-for
# invariances, black borders as RandomCrop's padding). For models given with --evaluate that reading does
# not hold: derive_observations leaves them out, and the report's tables compare those models.
AUGMENTATION_RULES = (clean_gain, corruption_gain, corruption_gain_split, invariances, black_borders)
