"""The sweep report's section "Label suspects and failure slices over seeds", and its observations."""

from __future__ import annotations

from stress.constants import VARIANTS
from stress.report.blocks import MISSING, Figure, Note, Paragraph, Section, make_table
from stress.report.figures import sweep_figure
from stress.report.statements import EFFECT, NO_EFFECT, Observation, interval_text, number, signed

TITLE = "Label suspects and failure slices over seeds"


def labels_over_seeds(summary: dict) -> Section:
    audit, slices = summary.get("labels"), summary.get("slices")
    if not audit:
        return Section("labels", TITLE, (Note("the seeds' runs have no label audit (eval/labels.npz): nothing to aggregate"),))
    blocks: list = [Paragraph(
        "A test image's suspicion is the share of seeds whose model flags its label (confident learning, per seed). Images flagged in "
        "every seed are stable suspects: the flag does not depend on one training. Intervals in this section are 95% t-intervals "
        "over seeds.")]
    rows = []
    for v in VARIANTS:
        e = audit["variants"][v]
        share = e.get("confident_failure_share")
        rows.append((v, e["stable_suspects"], e["ever_flagged"], " / ".join(str(c) for c in e["flag_count_histogram"]),
                     f"{number(share['mean'])} {interval_text(share['low'], share['high'], sign=False)}" if share else MISSING))
    blocks.append(make_table(("variant", "stable suspects (every seed)", "flagged in any seed", "images flagged in 0 / 1 / … / n seeds",
                              "share of confident failures (≥0.9) that both models flag, mean [95% CI over seeds]"), rows))
    if "stable_in_both" in audit:
        blocks.append(Paragraph(f"{audit['stable_in_both']} images are stable suspects under both variants."))
    for v in VARIANTS:
        if audit["variants"][v]["stable_suspects"]:
            blocks.append(Figure(sweep_figure("stable_suspects", v), f"{v}: test images whose label every seed's model flags "
                                                                        "(test index, given class)."))
    if not slices:
        blocks.append(Note("failure slices over seeds need two or more seeds with eval/slices.json"))
        return Section("labels", TITLE, tuple(blocks))
    blocks.append(Paragraph(
        "Failure slices over seeds: every named slice (the embedding clusters differ between trainings and are left out) is followed by "
        "its error rate minus the model's overall error rate in each seed (a class with a bin: minus the higher of its class's and its "
        "bin's error rates). A finding is worse in every seed, with a t-test over seeds "
        "that survives Holm's correction over all slices followed; a slice in only one seed's top 10 is noise."))
    for v in VARIANTS:
        s = slices["variants"][v]
        blocks.append(Paragraph(f"{v}: {s['findings']} of {s['followed']} slices are findings over {s['n_seeds']} seeds."))
        if s["top"]:
            blocks.append(make_table(("slice", "images", "error − overall (or − parent), mean [95% CI over seeds]", "worse in", "in a single run's top 10"), [
                (r["name"], r["size"], f"{signed(r['difference']['mean'])} {interval_text(r['difference']['low'], r['difference']['high'])}",
                 f"{r['worse_in']} of {s['n_seeds']}", f"{r['kept_in']} of {s['n_seeds']}") for r in s["top"]]))
        if s["kept_in_one_seed_only"]:
            blocks.append(Note(f"in one seed's top 10 only, and no finding over seeds (noise): {', '.join(s['kept_in_one_seed_only'])}"))
    return Section("labels", TITLE, tuple(blocks))


def slice_findings(summary: dict) -> list[Observation]:
    """Which failure slices are worse than overall in every seed, after Holm's correction?"""
    slices = summary.get("slices")
    if not slices:
        return []
    out = []
    for v in VARIANTS:
        s = slices["variants"][v]
        top = s["top"][:3]
        listed = "; ".join(f"{r['name']} ({signed(r['difference']['mean'])} {interval_text(r['difference']['low'], r['difference']['high'])})"
                           for r in top)
        out.append(Observation(
            rule="slice_findings",
            text=(f"{s['findings']} of {s['followed']} slices are worse than overall for {v} in all {s['n_seeds']} seeds"
                  + (f"; the strongest: {listed}." if top else ".")),
            verdict=EFFECT if top else NO_EFFECT,
            uncertainty=f"t-intervals over {s['n_seeds']} seeds; Holm over {s['followed']} slices (family-wise α = {s['alpha']})",
            evidence={"followed": s["followed"], "findings": s["findings"]},
        ))
    return out
