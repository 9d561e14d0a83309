"""The report section "Label errors and failure slices", from summary.json's labels and slices blocks."""

from __future__ import annotations

from stress.analyses.labels import unaudited_text
from stress.report.blocks import MISSING, Figure, Note, Paragraph, Section, make_table
from stress.report.figures import figure_path
from stress.report.statements import interval_text, models_of, number

TITLE = "Label errors and failure slices"


def _share(entry: dict | None) -> str:
    if not entry or not entry.get("n"):
        return MISSING
    return f"{entry['flagged']} / {entry['n']} = {number(entry['share'])} {interval_text(entry['low'], entry['high'], sign=False)}"


def label_blocks(summary: dict) -> list:
    audit = summary.get("labels")
    if not audit:
        return [Note("the label audit did not run (labels not in summary.json)")]
    if "skipped" in audit:
        return [Note(f"label audit skipped: {audit['skipped']}")]
    models = [v for v in models_of(summary) if v in audit["models"]]
    blocks: list = [Paragraph(
        f"Label audit: {audit['method']}. The test images are out-of-sample for every model trained on the training split, which "
        "confident learning needs. A label suspect is an image every model under test flags: a wrong label is wrong for any model, "
        "while a model's confident error is often its own. A suspect is a candidate, not a proven label error: look at the gallery. "
        "Intervals are Wilson 95% intervals over the images counted (all test images, a model's errors, or its confident failures).")]
    rows = [(v, f"{e['flagged']} = {number(e['share'])} {interval_text(*e['share_interval'], sign=False)}", _share(e["errors"]),
             _share(e["correct"]), _share(e["confident_failures"].get("0.9")),
             _share(e.get("suspects_among_confident_failures", {}).get("0.9")), _share(e.get("suspects_among_confident_failures", {}).get("0.99")))
            for v in models for e in [audit["models"][v]]]
    blocks.append(make_table(("model", f"flagged test labels (of {audit['n_images']})", "flagged among its errors",
                              "flagged among its correct predictions", "flagged among confident failures ≥0.9",
                              "label suspects among confident failures ≥0.9", "≥0.99"), rows))
    if audit.get("unaudited_classes"):
        blocks.append(Note(unaudited_text(audit["unaudited_classes"], "test image")))
    mirrors = [v for v in models if audit["models"][v].get("flags_mirror_errors")]
    if mirrors:
        blocks.append(Note(
            f"{' and '.join(mirrors)}: the flags cover at least {100 * audit.get('mirrors_errors_at', 0.5):.0f}% of "
            f"{'its' if len(mirrors) == 1 else 'each model’s'} errors. Confident learning trusts a model where it is confident, so "
            "its flags mostly restate its own confident errors, and one model alone cannot tell them from wrong labels. Only the images every model flags are "
            "treated as suspects, and even they are candidates to look at."))
    if audit.get("agreement"):
        blocks.append(make_table(("models (reference / other)", "flagged by both", "only the reference", "only the other", "Jaccard",
                                  "Cohen's κ (over test images)"),
                                 [(" / ".join(a["models"]), a["both"], a["only_reference"], a["only_other"], number(a["jaccard"]),
                                   number(a["kappa"])) for a in audit["agreement"].values()]))
    blocks.append(Paragraph(f"{audit['flagged_by_every_model']} test images are label suspects (flagged by every model); "
                            f"{audit['flagged_by_any_model']} are flagged by at least one. The failure gallery and the Grad-CAM cases "
                            "mark suspects in orange; --exclude-label-suspects leaves them out of both."))
    blocks.append(Figure(figure_path("suspects"), "The top label suspects: flagged by every model, ranked by the lowest mean "
                                                  "probability the models give the given label."))
    top = audit.get("suspects", [])[:10]
    if top:
        blocks.append(make_table(("rank", "image", "given label", "the models say", "flagged by"), [
            (s["rank"] + 1, s["index"], s["given_name"],
             "; ".join(f"{v}: {m['predicted_name']} ({number(m['confidence'], 2)})" for v, m in s["models"].items()),
             ", ".join(s["flagged_by"])) for s in top]))
    return blocks


def slice_blocks(summary: dict) -> list:
    slices = summary.get("slices")
    if not slices:
        return [Note("failure slices were not computed (slices not in summary.json)")]
    models = [v for v in models_of(summary) if v in slices["models"]]
    first = slices["models"][models[0]] if models else {}
    blocks: list = [Paragraph(
        "Failure slices: groups of test images named by the true class, an image characteristic in quarters of the test set, the hue "
        "of the mean colour, a class with one of those, or a k-means cluster of the model's penultimate-layer embeddings "
        f"(input of {slices.get('embedding_layer') or MISSING}). Each candidate with at least {first.get('min_size', MISSING)} images is "
        "tested against the model's overall error rate (score test); Holm's procedure over all candidates keeps the family-wise error "
        f"rate at {first.get('alpha', MISSING)}. Listed slices are worse than overall, and their Wilson interval, at the confidence of "
        "each slice's Holm threshold, excludes the overall rate; a class with a bin is listed only if that interval also lies above "
        "both the class's and the bin's own error rates (otherwise it only inherits their weakness). Lift = slice error rate / overall error rate; slices are ranked by "
        "the lift the interval guarantees (its lower end / overall rate), so a small fragment of a weak slice does not outrank it. "
        "Intervals are over "
        "the test images of each trained model; a slice is a finding about the augmentation only if a seed sweep repeats it.")]
    for v in models:
        found = slices["models"][v]
        blocks.append(Paragraph(f"{v}: {found['kept']} of {found['tried']} slices worse than the overall error rate "
                                f"{number(found['overall_error'])} ({found.get('inherited', 0)} more within a class only inherit it); "
                                f"the top {len(found['slices'])}:"))
        if found["slices"]:
            blocks.append(make_table(("rank", "slice", "images", "error rate [interval, level]", "lift", "lift at least", "most frequent error"), [
                (s["rank"] + 1, s["name"], s["size"], f"{number(s['error_rate'])} {interval_text(s['low'], s['high'], sign=False)}, "
                 f"{100 * s['confidence']:.4g}%", f"×{number(s['lift'], 2)}", f"×{number(s['lift_low'], 2)}",
                 (f"{s['top_confusion']['true_name']} → {s['top_confusion']['predicted_name']} ({s['top_confusion']['count']})"
                  if s.get("top_confusion") else MISSING)) for s in found["slices"]]))
    if any("projection_variance" in slices["models"][v].get("embedding", {}) for v in models):
        blocks.append(Figure(figure_path("embedding_map"), "Test images in each model's embedding space (2-D PCA): correct, wrong and "
                                                           "label suspects, with the top three slices outlined (2σ ellipses)."))
    else:
        blocks.append(Note(next((slices["models"][v]["embedding"]["skipped"] for v in models
                                 if "skipped" in slices["models"][v].get("embedding", {})), "no embeddings")))
    return blocks


def train_label_blocks(summary: dict) -> list:
    audit = summary.get("train_labels")
    if not audit:
        return []
    folds = audit.get("folds", {})
    accuracy = folds.get("accuracy", {})
    return [
        Paragraph(f"Training labels (--audit-train-labels): {audit['method']}. {folds.get('k', MISSING)} models, each trained from scratch "
                  f"with the {folds.get('recipe', MISSING)} recipe on the other folds"
                  + (f" (trained in {folds['training_precision']})" if folds.get("training_precision") else "")
                  + ", give every training image probabilities from a "
                  f"model that never saw it (out-of-fold accuracy {number(audit['out_of_fold_accuracy'])}; per fold "
                  f"{', '.join(number(a) for a in accuracy.values())})."),
        make_table(("flagged training labels", "of which the out-of-fold model gets wrong", "per class"), [
            (f"{audit['flagged']} of {audit['n_images']} = {number(audit['share'])} {interval_text(*audit['share_interval'], sign=False)}",
             f"{audit['errors_flagged']} of its {audit['errors']} errors",
             ", ".join(f"{c} {n}" for c, n in audit["per_class"].items()))]),
        *([Note(unaudited_text(audit["unaudited_classes"], "training image"))] if audit.get("unaudited_classes") else []),
        Figure(figure_path("train_suspects"), "The training images cleanlab ranks most likely mislabelled: given label / out-of-fold "
                                              "prediction (confidence)."),
    ]


def labels_and_slices(summary: dict) -> Section:
    return Section("labels", TITLE, tuple(label_blocks(summary) + train_label_blocks(summary) + slice_blocks(summary)))
