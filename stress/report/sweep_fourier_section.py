"""The sweep report's Fourier table and rule: band errors over seeds, paired by seed, Holm over the bands."""

from __future__ import annotations

from stress.report.blocks import Paragraph, Section, make_table
from stress.report.statements import EFFECT, INCONCLUSIVE, INTERVENTION, Observation, interval_text, number, signed

TITLE = "Frequency sensitivity over seeds"


def fourier_over_seeds_section(summary: dict) -> Section | None:
    record = summary.get("fourier")
    if not record:
        return None
    reference, other = record["models"]
    rows = [(band, number(x["reference"]), number(x["other"]), signed(x["difference"]["mean"]),
             interval_text(x["difference"]["low"], x["difference"]["high"]), number(x["holm_level"], 4), "yes" if x["significant"] else "no")
            for band, x in record["by_band"].items()]
    most = "; ".join(f"{v}: " + ", ".join(f"{b} {n}" for b, n in counts.items() if n) for v, counts in record["most_sensitive_band"].items())
    return Section("fourier", TITLE, (
        Paragraph(f"Each seed's Fourier heat map (basis images of norm {record['norm']:g} on {record['images']} test images): the mean "
                  f"error per frequency band, then {other} − {reference} paired by seed, with a 95% t-interval over the "
                  f"{record['n_seeds']} seeds and Holm's correction over the bands. Most sensitive band, in how many seeds: {most}."),
        make_table(("band", f"{reference} error (mean over seeds)", f"{other} error", "difference", "95% CI over seeds (unadjusted)", "Holm threshold",
                    "significant after Holm"), rows),
    ))


def fourier_shift_over_seeds(summary: dict) -> list[Observation]:
    """Does augmentation move the error under Fourier-basis perturbations, band by band, over seeds?"""
    record = summary.get("fourier")
    if not record:
        return []
    reference, other = record["models"]
    moved = [(b, x) for b, x in record["by_band"].items() if x["significant"]]
    parts = "; ".join(f"{b} {signed(x['difference']['mean'])} {interval_text(x['difference']['low'], x['difference']['high'])}"
                      for b, x in record["by_band"].items())
    text = (f"Over {record['n_seeds']} seeds, {other} − {reference} error under Fourier-basis perturbations by band: {parts}. "
            + (f"Holm-significant: {', '.join(b for b, _ in moved)}." if moved else "No band's difference is Holm-significant."))
    return [Observation(rule="fourier_shift_over_seeds", text=text, verdict=EFFECT if moved else INCONCLUSIVE,
                        uncertainty=f"paired t-intervals over {record['n_seeds']} seeds; Holm over {len(record['by_band'])} bands",
                        evidence={"significant_bands": len(moved)}, scope=INTERVENTION)]
