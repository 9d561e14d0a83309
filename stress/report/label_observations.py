"""The rules about label suspects and failure slices (statements about these trained models)."""

from __future__ import annotations

from stress.report.figures import figure_path
from stress.report.statements import EFFECT, INCONCLUSIVE, NO_EFFECT, Observation, interval_text, models_of, number


def label_suspects(summary: dict) -> list[Observation]:
    """What share of each model's confident failures are label suspects, against the share among all test images?"""
    audit = summary.get("labels")
    if not audit:
        return []
    out = []
    for v in models_of(summary):
        entry = audit["models"].get(v)
        if not entry:
            continue
        overall_low, overall_high = entry["share_interval"]
        for threshold in ("0.9", "0.99"):
            c = entry["confident_failures"][threshold]
            if not c["n"]:
                out.append(Observation(
                    rule="label_suspects", text=f"{v} has no confident failures at confidence ≥ {threshold}: no label suspects to count.",
                    verdict=INCONCLUSIVE, uncertainty="not computed", figure=figure_path("suspects"), evidence={"n": 0}))
                continue
            if c["low"] > overall_high:
                verdict, answer = EFFECT, "label suspects are over-represented among them"
            elif c["high"] < overall_low:
                verdict, answer = NO_EFFECT, "label suspects are rarer among them than among all test images"
            else:
                verdict, answer = INCONCLUSIVE, "the intervals overlap: no clear over-representation"
            out.append(Observation(
                rule="label_suspects",
                text=(f"Of {v}'s {c['n']} confident failures (confidence ≥ {threshold}), {c['flagged']} ({number(c['share'])}) have a "
                      f"label that confident learning finds suspect, against {number(entry['share'])} of all {audit['n_images']} test "
                      f"images: {answer}. These failures may be the label's fault rather than the model's."),
                verdict=verdict,
                uncertainty=(f"Wilson 95% CI over the confident failures {interval_text(c['low'], c['high'], sign=False)}; over all test "
                             f"images {interval_text(overall_low, overall_high, sign=False)}"),
                figure=figure_path("suspects"),
                evidence={"threshold": float(threshold), "flagged": c["flagged"], "n": c["n"], "share": c["share"], "low": c["low"],
                          "high": c["high"], "overall_share": entry["share"], "overall_low": overall_low, "overall_high": overall_high},
            ))
    return out


def failure_slices(summary: dict) -> list[Observation]:
    """Which named groups of test images does each model fail on more often than overall, after Holm's correction?"""
    slices = summary.get("slices")
    if not slices:
        return []
    out = []
    for v in models_of(summary):
        found = slices["models"].get(v)
        if not found:
            continue
        if not found["slices"]:
            out.append(Observation(
                rule="failure_slices",
                text=(f"None of the {found['tried']} candidate slices of the test set is worse for {v} than its overall error rate "
                      f"{number(found['overall_error'])} after Holm's correction."),
                verdict=NO_EFFECT, uncertainty=f"score tests, Holm over {found['tried']} slices (family-wise α = {found['alpha']})",
                figure=figure_path("embedding_map"), evidence={"tried": found["tried"], "kept": 0}))
            continue
        top = found["slices"][:3]
        listed = "; ".join(f"{s['name']} (error {number(s['error_rate'])} {interval_text(s['low'], s['high'], sign=False)} on "
                           f"{s['size']} images, ×{number(s['lift'], 2)})" for s in top)
        out.append(Observation(
            rule="failure_slices",
            text=(f"{found['kept']} of {found['tried']} candidate slices are worse for {v} than its overall error rate "
                  f"{number(found['overall_error'])}; the worst: {listed}."),
            verdict=EFFECT,
            uncertainty=(f"Wilson intervals over each slice's test images at its Holm-adjusted level (family-wise α = {found['alpha']} "
                         f"over {found['tried']} slices); each excludes the overall rate"),
            figure=figure_path("embedding_map"),
            evidence={"tried": found["tried"], "kept": found["kept"], "top": top[0]["name"], "top_error": top[0]["error_rate"],
                      "top_low": top[0]["low"], "top_high": top[0]["high"], "overall_error": found["overall_error"]},
        ))
    return out
