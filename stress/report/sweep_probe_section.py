"""The sweep report's tables and rules for the texture-reliance index and robust accuracy over seeds (paired by seed, Holm)."""

from __future__ import annotations

from stress.report.blocks import Paragraph, Section, make_table
from stress.report.statements import (
    EFFECT, INCONCLUSIVE, INTERVENTION, MODEL, NO_EFFECT, Observation, below_zero_verdict, interval_text, number, p_text, percent_interval,
    signed, verdict_of,
)

TITLE = "Texture reliance and adversarial robustness over seeds"


def _mean(entry: dict, digits: int = 3) -> str:
    return f"{number(entry['mean'], digits)} {interval_text(entry['low'], entry['high'], digits, sign=False)}"


def probes_over_seeds_section(summary: dict) -> Section | None:
    texture, attacks = summary.get("texture"), summary.get("adversarial")
    if not texture and not attacks:
        return None
    blocks: list = [Paragraph("Each seed's texture-reliance index and robust accuracies, then the difference between the models "
                              "paired by seed, with 95% t-intervals over the seeds and Holm's correction over the scales and over "
                              "the attacks. Every interval here is over seeds: independent trainings of both models.")]
    if texture:
        reference, other = texture["models"]
        blocks.append(make_table(
            ("scale: grid | cut-off", f"{reference} index (over seeds)", f"{other} index", "difference", "95% CI over seeds (unadjusted)", "Holm threshold", "significant after Holm"),
            [(f"{x['grid']} | {x['cutoff']:g}", _mean(x["reference"], 2), _mean(x["other"], 2), signed(x["difference"]["mean"], 2),
              interval_text(x["difference"]["low"], x["difference"]["high"], 2), number(x["holm_level"], 4), "yes" if x["significant"] else "no")
             for x in texture["by_scale"]]))
    if attacks:
        reference, other = attacks["models"]
        blocks.append(make_table(
            ("attack", f"{reference} robust accuracy (over seeds)", f"{other}", "difference", "95% CI over seeds (unadjusted)", "Holm threshold", "significant after Holm"),
            [(k, _mean(x["reference"]), _mean(x["other"]), signed(x["difference"]["mean"]),
              interval_text(x["difference"]["low"], x["difference"]["high"]), number(x["holm_level"], 4), "yes" if x["significant"] else "no")
             for k, x in attacks["by_attack"].items()]))
        if attacks.get("cam"):
            blocks += _cam_blocks(attacks["cam"], reference, other)
    return Section("probes", TITLE, tuple(blocks))


def _cam_blocks(cam: dict, reference: str, other: str) -> list:
    """The attacked images' Grad-CAM similarities over seeds: a row per model, then the gap's difference paired by seed."""
    d = cam["same_class_minus_random_difference"]
    return [
        Paragraph("Grad-CAM on the images an L∞ attack flips, each seed's mean over its flipped images, then 95% t-intervals "
                  "over the seeds. Each map is correlated with the clean image's map: the adversarial image's map of its new "
                  "class, its map of the clean class, and the clean class's map under random signs of the attack's size."),
        make_table(
            ("model", "new class", "clean class", "random signs", "clean class − random signs", "share of the drop that is the change of class"),
            [(v, _mean(m["adversarial"]), _mean(m["same_class"]), _mean(m["random"]), _mean(m["same_class_minus_random"]),
              percent_interval(m["class_change_share"])) for v, m in cam["models"].items()]),
        Paragraph(f"{other} − {reference}, clean class − random signs, paired by seed: {signed(d['mean'])} "
                  f"{interval_text(d['low'], d['high'])} (95% t-interval over {d['n']} seeds, p = {p_text(d['p'])})."),
    ]


def probes_shift_over_seeds(summary: dict) -> list[Observation]:
    """Does augmentation move the texture-reliance index, or robust accuracy, over seeds?"""
    out = []
    texture = summary.get("texture")
    if texture:
        reference, other = texture["models"]
        moved = [x for x in texture["by_scale"] if x["significant"]]
        parts = "; ".join(f"scale {x['grid']} {signed(x['difference']['mean'], 2)} {interval_text(x['difference']['low'], x['difference']['high'], 2)}"
                          for x in texture["by_scale"])
        out.append(Observation(
            rule="texture_shift_over_seeds", verdict=EFFECT if moved else INCONCLUSIVE, scope=INTERVENTION,
            text=(f"Over {texture['n_seeds']} seeds, {other} − {reference} texture-reliance index: {parts}. "
                  + (f"Holm-significant at scale {', '.join(str(x['grid']) for x in moved)}." if moved else "No scale's difference is Holm-significant.")),
            uncertainty=f"paired t-intervals over {texture['n_seeds']} seeds; Holm over {len(texture['by_scale'])} scales",
            evidence={"significant_scales": len(moved)}))
    attacks = summary.get("adversarial")
    if attacks:
        reference, other = attacks["models"]
        moved = [k for k, x in attacks["by_attack"].items() if x["significant"]]
        parts = "; ".join(f"{k} {signed(x['difference']['mean'])} {interval_text(x['difference']['low'], x['difference']['high'])}"
                          for k, x in attacks["by_attack"].items())
        out.append(Observation(
            rule="robustness_shift_over_seeds", verdict=EFFECT if moved else INCONCLUSIVE, scope=INTERVENTION,
            text=(f"Over {attacks['n_seeds']} seeds, {other} − {reference} robust accuracy: {parts}. "
                  + (f"Holm-significant: {', '.join(moved)}." if moved else "No attack's difference is Holm-significant.")),
            uncertainty=f"paired t-intervals over {attacks['n_seeds']} seeds; Holm over {len(attacks['by_attack'])} attacks",
            evidence={"significant_attacks": len(moved)}))
        if attacks.get("cam"):
            out += _cam_over_seeds(attacks["cam"], reference, other, attacks["n_seeds"])
    return out


def _cam_over_seeds(cam: dict, reference: str, other: str, seeds: int) -> list[Observation]:
    """Per model: does the attack move the clean class's own Grad-CAM more than noise, over seeds? Then: does the
    augmentation change that, paired by seed?"""
    out = []
    moved = {EFFECT: "the clean class's map moves more than under noise", NO_EFFECT: "the clean class's map moves less than under noise",
             INCONCLUSIVE: "whether the clean class's map moves more than under noise is inconclusive"}
    for v, m in cam["models"].items():
        gap = m["same_class_minus_random"]
        verdict = below_zero_verdict(gap["low"], gap["high"])
        share = m["class_change_share"]
        out.append(Observation(
            rule="explanation_moved_over_seeds", verdict=verdict, scope=MODEL,
            text=(f"{v}, over {seeds} seeds: on the images an L∞ attack flips, the clean class's own Grad-CAM on the adversarial "
                  f"image correlates {_mean(m['same_class'])} with the clean map, against {_mean(m['random'])} under random signs "
                  f"and {_mean(m['adversarial'])} for the new class's map"
                  + (f"; {percent_interval(share)} of the new class's drop is the change of class" if share else "")
                  + f"; {moved[verdict]}."),
            uncertainty=f"95% t-intervals over {seeds} seeds of each seed's value; clean class − random signs {signed(gap['mean'])} "
                        f"{interval_text(gap['low'], gap['high'])}",
            evidence={"same_class": m["same_class"]["mean"], "random": m["random"]["mean"], "difference": gap["mean"]}))
    d = cam["same_class_minus_random_difference"]
    out.append(Observation(
        rule="explanation_shift_over_seeds", verdict=verdict_of(d["low"], d["high"]), scope=INTERVENTION,
        text=(f"Over {seeds} seeds, {other} − {reference} in how far the attack moves the clean class's own Grad-CAM beyond "
              f"noise: {signed(d['mean'])} {interval_text(d['low'], d['high'])}."),
        uncertainty=f"paired 95% t-interval over {seeds} seeds, p = {p_text(d['p'])}",
        evidence={"difference": d["mean"]}))
    return out
