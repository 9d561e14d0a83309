"""The sweep report's tables and rules for the texture-reliance index and robust accuracy over seeds (paired by seed, Holm)."""

from __future__ import annotations

from stress.report.blocks import Paragraph, Section, make_table
from stress.report.statements import EFFECT, INCONCLUSIVE, INTERVENTION, Observation, interval_text, number, signed

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
    return Section("probes", TITLE, tuple(blocks))


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
    return out
