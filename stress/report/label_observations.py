"""The rules about label suspects and failure slices (statements about these trained models)."""

from __future__ import annotations

from stress.analyses.stats import wilson_interval
from stress.report.figures import figure_path
from stress.report.statements import EFFECT, INCONCLUSIVE, NO_EFFECT, Observation, interval_text, models_of, number


def label_suspects(summary: dict) -> list[Observation]:
    """What share of each model's confident failures are label suspects (flagged by every model), against all test images?

    When a model's own flags cover most of its errors (labels.json `flags_mirror_errors`), the audit
    cannot tell label errors from that model's confident errors, and the rule says so (inconclusive).
    """
    audit = summary.get("labels")
    if not audit or "skipped" in audit:
        return []
    out = []
    n = audit["n_images"]
    suspects = audit["flagged_by_every_model"]
    overall_low, overall_high = wilson_interval(suspects, n) if n else (None, None)
    for v in models_of(summary):
        entry = audit["models"].get(v)
        if not entry:
            continue
        errors = entry["errors"]
        if entry.get("flags_mirror_errors"):
            c = entry["suspects_among_confident_failures"]["0.9"]
            among = (f" Of its {c['n']} confident failures (≥ 0.9), {c['flagged']} ({number(c['share'])}) are among the {suspects} "
                     "images every model flags: candidates to look at, not established label errors." if c["n"] else "")
            out.append(Observation(
                rule="label_suspects",
                text=(f"Confident learning flags {entry['flagged']} test labels for {v} ({number(entry['share'])} of the test set): "
                      f"{errors['flagged']} of its {errors['n']} errors ({number(errors['share'])}) and {entry['correct']['flagged']} of "
                      f"its correct predictions. Flags that cover most of a model's errors restate its confident errors: with a model "
                      f"this far from its labels, the audit cannot say which failures are the label's fault.{among}"),
                verdict=INCONCLUSIVE,
                uncertainty=(f"Wilson 95% CI over {v}'s errors {interval_text(errors['low'], errors['high'], sign=False)}"
                             + (f"; over its confident failures {interval_text(c['low'], c['high'], sign=False)}" if c["n"] else "")),
                figure=figure_path("suspects"),
                evidence={"flagged": entry["flagged"], "errors_flagged": errors["flagged"], "errors": errors["n"],
                          "suspects": suspects, "mirrors_errors": True},
            ))
            continue
        for threshold in ("0.9", "0.99"):
            c = entry["suspects_among_confident_failures"][threshold]
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
                text=(f"Of {v}'s {c['n']} confident failures (confidence ≥ {threshold}), {c['flagged']} ({number(c['share'])}) are label "
                      f"suspects (flagged by every model), against {number(suspects / n)} of all {n} test images: {answer}."
                      + (" These failures may be the label's fault rather than the model's." if verdict == EFFECT else "")),
                verdict=verdict,
                uncertainty=(f"Wilson 95% CI over the confident failures {interval_text(c['low'], c['high'], sign=False)}; over all test "
                             f"images {interval_text(overall_low, overall_high, sign=False)}"),
                figure=figure_path("suspects"),
                evidence={"threshold": float(threshold), "flagged": c["flagged"], "n": c["n"], "share": c["share"], "low": c["low"],
                          "high": c["high"], "overall_share": suspects / n, "overall_low": overall_low, "overall_high": overall_high},
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
        if not found["tried"] or found["overall_error"] in (0.0, 1.0):
            why = (f"no candidate slice has {found['min_size']} images" if not found["tried"] else
                   f"{v} is {'never' if found['overall_error'] == 0.0 else 'always'} wrong, so no slice can be worse than overall")
            out.append(Observation(rule="failure_slices", text=f"Failure slices of {v} were not tested: {why}.", verdict=INCONCLUSIVE,
                                   uncertainty="not computed", evidence={"tried": found["tried"], "kept": 0}))
            continue
        if not found["slices"]:
            out.append(Observation(
                rule="failure_slices",
                text=(f"No candidate slice of the test set ({found['tried']} tried) is worse for {v} than its overall error rate "
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
