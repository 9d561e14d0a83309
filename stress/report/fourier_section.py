"""The report section "Why it fails: frequency sensitivity" and its rules, from summary.json's fourier block.

Rules:
- fourier_sensitivity (about each trained model): the band of frequencies whose basis
  perturbations raise its error most, whether that band is distinguishably above the next one,
  and its rise over clean, each with a paired interval over images;
- fourier_shift: how the other model's error differs by band from the reference's (paired over
  images, Holm over the three bands), and whether the corruption results line up: noise is
  high-frequency, fog and contrast low-frequency. For the trained variants that is a statement
  about one trained pair (verdict "one pair only").
"""

from __future__ import annotations

from stress.report.blocks import Figure, Note, Paragraph, Section, make_table
from stress.report.figures import figure_path
from stress.report.statements import (
    EFFECT, INCONCLUSIVE, INTERVENTION, ONE_PAIR, Observation, given_models, interval_text, models_of, number, one_pair, signed,
    verdict_of,
)

TITLE = "Why it fails: frequency sensitivity"
HIGH_FREQUENCY_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
LOW_FREQUENCY_CORRUPTIONS = ("fog", "contrast")


def _band_text(entry: dict) -> str:
    return f"{number(entry['mean'])} {interval_text(entry['low'], entry['high'], sign=False)}"


def _highest(model: dict) -> str:
    margin = model.get("margin")
    if not margin:
        return model["most_sensitive_band"]
    return f"{model['most_sensitive_band']}: {signed(margin['mean'])} {interval_text(margin['low'], margin['high'])} over {margin['over']}"


def fourier_section(summary: dict) -> Section:
    record = summary.get("fourier")
    if not record:
        return Section("fourier", TITLE, (Note("stage fourier did not run (fourier not in summary.json; --fourier-images 0 or --skip-stress)"),))
    if "skipped" in record:
        return Section("fourier", TITLE, (Note(f"Fourier heat map skipped: {record['skipped']}"),))
    models = [v for v in models_of(summary) if v in record["models"]]
    low_edge, high_edge = record["band_edges"]
    blocks: list = [Paragraph(
        f"Fourier heat map (Yin et al. 2019): for each of the {record['frequencies']} frequencies (u, v) of the half-plane, the "
        f"real basis image of that frequency, with L2 norm {record['norm']:g} on the [0, 1] pixel scale and a random sign per "
        f"channel, is added to the same {record['images']} test images (a seeded subset; every model sees the very same "
        f"perturbed images, clipped to [0, 1]). Bands of radial frequency |(u, v)|: low below {low_edge:.1f}, middle below "
        f"{high_edge:.1f}, high above. Noise corruptions live at high frequencies; fog and contrast at low ones. Intervals are "
        f"95% over these {record['images']} images; an image's value is its error averaged over the band's frequencies.")]
    rows = [(v, number(m["clean_error"]), _band_text(m["mean_error"]),
             *(_band_text(m["by_band"][b]) if b in m["by_band"] else "—" for b in ("low", "middle", "high")),
             _highest(m), f"({m['worst_frequency']['u']}, {m['worst_frequency']['v']}): {number(m['worst_frequency']['error'])}")
            for v in models for m in [record["models"][v]]]
    blocks.append(make_table(("model", "clean error", "mean error, all frequencies", "low", "middle", "high",
                              "highest band, its margin over the next (paired)", "worst frequency (u, v)"), rows))
    for other, d in record.get("differences", {}).items():
        blocks.append(make_table(
            (f"{other} − {d['reference']} error", "difference", "95% CI (paired, over images; unadjusted)", "Holm threshold", "significant after Holm"),
            [(band, signed(x["mean"]), interval_text(x["low"], x["high"]), number(x["holm_level"], 4), "yes" if x["significant"] else "no")
             for band, x in d["by_band"].items()]))
    blocks.append(Figure(figure_path("fourier_heatmap"), "Error rate under each frequency's basis perturbation (centre: low "
                                                         "frequencies), and the difference between the models."))
    blocks.append(Figure(figure_path("fourier_radial"), "Error by radial frequency with 95% bands over images; dotted lines: "
                                                        "clean error."))
    return Section("fourier", TITLE, tuple(blocks))


# -- rules --------------------------------------------------------------------
def fourier_sensitivity(summary: dict) -> list[Observation]:
    """Where is each model most sensitive to Fourier-basis perturbations, and do they raise its error over clean?"""
    record = summary.get("fourier")
    if not record or "skipped" in record:
        return []
    out = []
    for v in models_of(summary):
        m = record["models"].get(v)
        if not m:
            continue
        band = m["most_sensitive_band"]
        rise, margin = m["by_band"][band]["over_clean"], m.get("margin")
        bands = ", ".join(f"{b} {number(x['mean'])}" for b, x in m["by_band"].items())
        if margin is None:
            where = f"its error is highest in the {band} band"
        elif verdict_of(margin["low"], margin["high"]) == EFFECT:
            where = (f"it is most sensitive to {band}-frequency perturbations ({signed(margin['mean'])} "
                     f"{interval_text(margin['low'], margin['high'])} over the {margin['over']} band, paired over images)")
        else:
            where = (f"its error is highest in the {band} band, but not distinguishably above the {margin['over']} band "
                     f"({signed(margin['mean'])} {interval_text(margin['low'], margin['high'])}, paired over images)")
        out.append(Observation(
            rule="fourier_sensitivity",
            text=(f"{v}: under basis images of norm {record['norm']:g} its error is {bands} by band (clean "
                  f"{number(m['clean_error'])}); {where}. In the {band} band that is {signed(rise['mean'])} over clean; its worst "
                  f"single frequency is (u, v) = ({m['worst_frequency']['u']}, {m['worst_frequency']['v']}) with error "
                  f"{number(m['worst_frequency']['error'])}."),
            verdict=verdict_of(rise["low"], rise["high"]),
            uncertainty=(f"paired 95% t-intervals over {record['images']} test images: the rise over clean "
                         f"{interval_text(rise['low'], rise['high'])}"
                         + (f", the margin over the next band {interval_text(margin['low'], margin['high'])}" if margin else "")),
            figure=figure_path("fourier_heatmap"),
            evidence={"band": band, "rise": rise["mean"], "low": rise["low"], "high": rise["high"]},
        ))
    return out


def _corruption_gain(summary: dict, names: tuple[str, ...], other: str) -> tuple[float, int] | None:
    """(mean of the other model's accuracy differences over the corruptions of `names` that ran, direction): the direction
    is +1 or -1 when every one of their 95% intervals over images excludes 0 on that side, else 0."""
    gains = summary.get("robustness", {}).get("gains", {}).get(other, {}).get("by_corruption", {})
    present = [gains[c] for c in names if c in gains]
    if not present:
        return None
    direction = 1 if all(g["low"] is not None and g["low"] > 0 for g in present) else \
        -1 if all(g["high"] is not None and g["high"] < 0 for g in present) else 0
    return sum(g["mean"] for g in present) / len(present), direction


def fourier_shift(summary: dict) -> list[Observation]:
    """Does the other model's error differ by band from the reference's, and does that line up with the corruption results?"""
    record = summary.get("fourier")
    if not record or "skipped" in record:
        return []
    out = []
    given = given_models(summary)
    for other, d in record.get("differences", {}).items():
        reference, by_band = d["reference"], d["by_band"]
        parts = [f"{b} {signed(x['mean'])} {interval_text(x['low'], x['high'])}" + (" (Holm-significant)" if x["significant"] else "")
                 for b, x in by_band.items()]
        text = f"{other} − {reference} error under Fourier-basis perturbations, by band: {'; '.join(parts)}."
        noise, low = _corruption_gain(summary, HIGH_FREQUENCY_CORRUPTIONS, other), _corruption_gain(summary, LOW_FREQUENCY_CORRUPTIONS, other)
        lined_up = []
        for band, gain, what in (("high", noise, "the noise corruptions"), ("low", low, "fog and contrast")):
            if gain is None or band not in by_band:
                continue
            mean, direction = gain
            text += f" On {what} ({band}-frequency), {other}'s accuracy differs by {signed(mean)} on average"
            if direction == 0:
                text += (f", but not every one of those corruptions' intervals excludes 0 on the same side: not compared with the "
                         f"{band}-band error.")
                continue
            if not by_band[band]["significant"]:
                text += f"; its {band}-band error difference is not significant after Holm: not compared."
                continue
            agrees = (by_band[band]["mean"] > 0) == (direction < 0)  # more error at those frequencies, less accuracy on those corruptions
            text += (f", every one of them on the same side, and its {band}-band error differs by {signed(by_band[band]['mean'])}: "
                     + ("the two agree (more Fourier error where it is less accurate under the corruptions, or the reverse)."
                        if agrees else "the two disagree (more Fourier error, yet more accurate under the corruptions, or the reverse)."))
            lined_up.append(agrees)
        significant = [x for x in by_band.values() if x["significant"]]
        if given:
            verdict = EFFECT if significant else INCONCLUSIVE
        else:
            text, verdict = one_pair(summary, text), ONE_PAIR
        out.append(Observation(
            rule="fourier_shift", text=text, verdict=verdict,
            uncertainty=f"paired 95% t-intervals over {record['images']} test images, Holm over {len(by_band)} bands"
                        + ("" if given else "; one trained pair"),
            figure=figure_path("fourier_radial"),
            evidence={**{f"{b}_difference": x["mean"] for b, x in by_band.items()}, "significant_bands": len(significant),
                      "lined_up": sum(lined_up), "compared": len(lined_up)},
            scope=INTERVENTION if not given else "model",
        ))
    return out


FOURIER_RULES = (fourier_sensitivity, fourier_shift)
