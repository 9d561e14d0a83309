"""The stress-test report: one self-contained HTML page and a Markdown twin, from the run folder alone.

`build_report` reads only the run folder's JSON and PNG files (never a model, never the
dataset). Sections are built once as a list of blocks (paragraph, table, figure, note)
and rendered twice: HTML with every PNG embedded as a data URI, and Markdown with the
figures linked relatively. A stage that did not run is replaced by a one-line note.
"""

from __future__ import annotations

from typing import Callable

from stress.analyses.stats import wilson_interval
from stress.report.blocks import MISSING, Figure, Note, Paragraph, Section, make_table
from stress.report.figures import figure_path
from stress.report.fourier_section import fourier_section
from stress.report.probe_sections import attack_section, texture_section
from stress.report.setup_text import commit_text, compile_text, hardware_text, precision_text
from stress.report.label_section import labels_and_slices
from stress.report.observations import RULES, derive_observations
from stress.report.statements import Rule, given_models, interval_text, models_of, number, p_text, paired_method, signed, words


def _with_interval(value, low, high) -> str:
    return MISSING if value is None else f"{number(value)} {interval_text(low, high, sign=False)}"


def _not_run(stage: str, what: str) -> Note:
    return Note(f"stage {stage} did not run ({what} not in summary.json)")


# -- sections -----------------------------------------------------------------
def headline(summary: dict) -> Section:
    """Every model: clean accuracy, mean corruption accuracy, ECE, confident-failure counts."""
    failures, robustness, calibration = summary.get("failures"), summary.get("robustness"), summary.get("calibration")
    rows = []
    for v in models_of(summary):
        if failures:
            a = failures[v]["accuracy"]
            clean = f"{_with_interval(a['acc'], a['low'], a['high'])} (n={a['n']})"
        else:
            n, acc = int(summary["dataset"]["test"]), summary["variants"][v]["test_acc"]
            low, high = wilson_interval(round(acc * n), n)
            clean = f"{_with_interval(acc, low, high)} (n={n})"
        if robustness and robustness[v].get("mean_corruption_acc") is not None:
            r = robustness[v]
            corrupted = f"{_with_interval(r['mean_corruption_acc'], *r['mean_corruption_acc_interval'])} (n={robustness.get('images', MISSING)})"
        else:
            corrupted = MISSING
        ece = f"{number(calibration[v]['ece'])} → {number(calibration[v]['ece_after_temperature'])}" if calibration else MISSING
        confident = (f"{failures[v]['confident_errors']['0.9']} / {failures[v]['confident_errors']['0.99']}" if failures else MISSING)
        rows.append((v, clean, corrupted, ece, confident))
    headers = ("model" if given_models(summary) else "variant", "clean test accuracy [95% CI]", "mean corruption accuracy [95% CI]",
               "ECE → after temperature", "confident failures ≥0.9 / ≥0.99")
    scope = ("for these given models (checkpoints). They say how precisely these models were measured, nothing about how "
             "they were trained." if given_models(summary) else
             "for these two trained models. They say how precisely these models were measured, not whether the augmentation "
             "itself changes anything: that needs several trainings (a seed sweep).")
    blocks = [make_table(headers, rows), Paragraph(f"Intervals are 95%, over the test images, {scope}")]
    if not robustness or not calibration:
        blocks.append(Note(f"{MISSING}: stage stress did not run"))
    return Section("headline", "Headline", tuple(blocks))


def model_text(model: dict) -> str:
    name = model.get("name", MISSING)
    if name == "simple_cnn":
        return f"{name} (widths {model.get('widths', MISSING)}, hidden {model.get('hidden', MISSING)})"
    extras = [f"{k}={v}" for k, v in (model.get("kwargs") or {}).items()] + (["CIFAR stem"] if model.get("cifar_stem") else [])
    return f"{name}{' (' + ', '.join(extras) + ')' if extras else ''}"


def stats_text(model: dict, manifest: dict) -> str:
    mean, std = model.get("mean"), model.get("std")
    how = manifest.get("model", {}).get("input_stats", {}).get("how")
    if not mean:
        return "CIFAR-10's constants"
    return f"mean {', '.join(f'{m:.4f}' for m in mean)}; std {', '.join(f'{s:.4f}' for s in std)}{f' ({how})' if how else ''}"


def cam_text(config: dict, manifest: dict) -> str:
    recorded = manifest.get("model", {}).get("gradcam_layer")
    if recorded:
        return f"{recorded['name']} ({recorded['chosen']})" if recorded.get("name") else f"none: {recorded.get('skipped')}"
    return config.get("stress", {}).get("cam_layer") or "features.relu3"


def setup(summary: dict, config: dict, manifest: dict) -> Section:
    """Data, split, model, optimiser, seeds, versions, hardware and stage times."""
    dataset, model, train = summary.get("dataset", {}), config.get("model", {}), config.get("train", {})
    versions = manifest.get("versions", {})
    hardware = manifest.get("hardware", {})
    seeds = manifest.get("seeds") or {"train": summary.get("run", {}).get("seed")}
    rows = [
        ("run", summary.get("run", {}).get("name", MISSING)),
        ("data source", dataset.get("source", MISSING)),
        ("split sizes (train / validation / test)", f"{dataset.get('train', MISSING)} / {dataset.get('val', MISSING)} / {dataset.get('test', MISSING)}"),
        ("data sha256", dataset.get("sha256", MISSING)),
        ("model", model_text(model)),
        ("classes / image size", f"{model.get('num_classes', MISSING)} / {model.get('image_size', MISSING)}×{model.get('image_size', MISSING)}"),
        ("input standardisation", stats_text(model, manifest)),
        ("Grad-CAM layer", cam_text(config, manifest)),
        *(() if config.get("evaluate") else (
            ("optimiser", f"{manifest.get('training', {}).get('optimizer', MISSING)}, lr {train.get('lr', MISSING)}, weight decay {train.get('weight_decay', MISSING)}"),
            ("batch size / epochs", f"{train.get('batch_size', MISSING)} / {train.get('epochs', MISSING)}"),
        )),
        ("precision", precision_text(train, manifest, summary.get("variants"))),
        ("torch.compile", compile_text(manifest)),
        *(() if config.get("evaluate") else (
            ("augmentation (augmented variant)", f"RandomCrop(padding {train.get('crop_padding', MISSING)}) + horizontal flip p={train.get('flip_probability', MISSING)}"),
        )),
        ("seeds", ", ".join(f"{k} {v}" for k, v in seeds.items())),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or MISSING),
        ("git commit", commit_text(manifest)),
        ("hardware", hardware_text(hardware)),
        ("started / finished (UTC)", f"{manifest.get('started', MISSING)} / {manifest.get('finished', MISSING)}"),
    ]
    blocks = [make_table(("item", "value"), rows)]
    stage_seconds = manifest.get("stage_seconds", {})
    if stage_seconds:
        blocks.append(make_table(("stage", "seconds"), [(k, f"{v:.1f}") for k, v in stage_seconds.items()]))
    return Section("setup", "Setup", tuple(blocks))


def confusion_caption(summary: dict, model: str) -> str:
    from stress.report.class_plots import MAX_MATRIX_CLASSES

    if (summary.get("dataset", {}).get("classes") or 0) > MAX_MATRIX_CLASSES:
        return f"Confusion matrix of {model} as its most frequent confusions (true → predicted), ranked; too many classes for a grid."
    return f"Confusion matrix of {model} on the test set (rows: true class)."


def training(summary: dict) -> Section:
    if given_models(summary):
        rows = [(v, e.get("checkpoint", MISSING), f"{e['parameters']:,}" if e.get("parameters") else MISSING, number(e["test_acc"]),
                 number(e["test_loss"])) for v, e in summary["variants"].items()]
        return Section("training", "Models under test", (
            Paragraph(f"Not trained here: given with --evaluate. The first, {models_of(summary)[0]}, is the reference every "
                      "comparison is made against."),
            make_table(("model", "checkpoint", "parameters", "test accuracy", "test loss"), rows),
            *(Figure(figure_path("confusion", v), confusion_caption(summary, v)) for v in models_of(summary)),
        ))
    rows = [(v, e["epochs"], number(e.get("final_val_acc")), number(e["best_val_acc"]), number(e["test_acc"]), number(e["test_loss"]),
             f"{e['train_seconds']:.1f}", f"{e['images_per_second']:.0f}") for v, e in summary["variants"].items()]
    return Section("training", "Training", (
        Paragraph("Every analysis in this report uses each model's weights after its last epoch, as the seed experiment does: "
                  "no early stopping and no choice of epoch on the validation split, which only reports progress."),
        make_table(("variant", "epochs", "validation accuracy, last epoch", "best validation accuracy", "test accuracy", "test loss",
                    "training seconds", "images/s"), rows),
        *overfit_notes(summary["variants"]),
        Figure(figure_path("training"), "Training and validation loss and accuracy per epoch."),
        *(Figure(figure_path("confusion", v), confusion_caption(summary, v)) for v in models_of(summary)),
    ))


OVERFIT_LOSS_RISE = 1.25  # a last-epoch validation loss this many times its minimum is called out


def overfit_notes(variants: dict) -> list[Note]:
    """A note per trained model whose validation loss ended well above its minimum: the analysed weights are past it."""
    notes = []
    for v, e in variants.items():
        best, final = e.get("best_val_loss"), e.get("final_val_loss")
        if best and final and final > OVERFIT_LOSS_RISE * best and e.get("best_val_loss_epoch", e["epochs"]) < e["epochs"]:
            notes.append(Note(f"{v}: validation loss was lowest at epoch {e['best_val_loss_epoch']} ({number(best)}) and is {number(final)} "
                              f"after epoch {e['epochs']}, whose weights are analysed: they are past the validation optimum (compare "
                              "its ECE and confident errors below)."))
    return notes


def failure_cases(summary: dict) -> Section:
    failures = summary.get("failures")
    if not failures:
        return Section("failures", "Failure cases", (_not_run("evaluate", "failures"),))
    blocks: list = [make_table(
        ("variant", "errors", "error rate", "confident errors ≥0.9", "≥0.99"),
        [(v, f"{failures[v]['n_errors']} of {failures[v]['n_images']}", number(failures[v]["error_rate"]),
          failures[v]["confident_errors"]["0.9"], failures[v]["confident_errors"]["0.99"]) for v in models_of(summary)])]
    for v in models_of(summary):
        marked = " Label suspects are framed in orange." if summary.get("labels") else ""
        blocks.append(Figure(figure_path("gallery", v), f"The most confident failures of {v}: true / predicted class (confidence).{marked}"))
    for v in models_of(summary):
        cases = failures[v]["cases"]
        maps = " (Grad-CAM of both models, for each model's predicted class and the true class)" if any("figure" in c for c in cases) else ""
        blocks.append(Paragraph(f"Cases selected from the failures of {v}{maps}:"))
        blocks.append(make_table(("rank", "image", "true", f"{v} predicts", "the other models predict"), [
            (c["rank"], c["index"], c["true_name"], f"{c['predicted_name']} ({number(c['confidence'], 2)})",
             "; ".join(f"{o['model']}: {o['predicted_name']} ({number(o['confidence'], 2)})" for o in (c["others"] if "others" in c else
                       [{"model": c["other_variant"], "predicted_name": c["other_predicted_name"], "confidence": c["other_confidence"]}]))
             or MISSING)
            for c in cases]))
        marked = [c for c in cases if c.get("label_suspect")]
        if marked:
            blocks.append(Note(f"{len(marked)} of these cases have a suspect label: "
                               + "; ".join(f"image {c['index']}: {c['label_suspect']}" for c in marked)))
        if failures[v].get("label_suspects_excluded"):
            blocks.append(Paragraph("Label suspects were left out of these cases and of the gallery (--exclude-label-suspects)."))
        for c in (c for c in cases if "figure" in c):
            blocks.append(Figure(c["figure"], f"{v} case {c['rank']}: image {c['index']}, true {c['true_name']}, "
                                              f"{v} predicts {c['predicted_name']} ({number(c['confidence'], 2)})."))
    blocks.append(Figure(figure_path("confusion_pairs"), "Most frequent confusions (true → predicted) per variant."))
    blocks.append(Paragraph("Image characteristics of confident failures versus confident successes (confidence ≥ 0.9): Cohen's d with "
                            "a bootstrap 95% CI over images. Brightness is the mean luma and contrast its standard deviation, both on "
                            "the 0–1 scale; colourfulness is Hasler and Süsstrunk's measure on 0–255 RGB; edge density is the share "
                            "of pixels on an edge (Sobel); centre energy is the share of edge energy in the central quarter of the "
                            "image (0.25 for uniform edges). 'Separates' needs Welch's test to survive Holm's correction over the "
                            "characteristics compared (family-wise α = 0.05) and the interval to exclude 0."))
    rows = []
    for v in models_of(summary):
        for name, e in failures[v]["characteristics"]["comparison"].items():
            rows.append((v, words(name), number(e["mean_a"]), number(e["mean_b"]), f"{e['n_a']} / {e['n_b']}", signed(e.get("cohens_d"), 2),
                         interval_text(e.get("d_low"), e.get("d_high"), 2), "yes" if e.get("separates") else "no"))
    blocks.append(make_table(("variant", "characteristic", "mean (failures)", "mean (successes)", "n", "d", "95% CI", "separates"), rows))
    blocks.append(Figure(figure_path("characteristics"), "Distributions of each characteristic: confident failures versus confident successes."))
    views = failures.get("cross_models") or ({"augmented": failures["cross_model"]} if failures.get("cross_model") else {})
    if views:
        rows = []
        for view in views.values():
            counts, names = view["counts"], view.get("names", {"a": "baseline", "b": "augmented"})
            rows.append((f"{names['a']} / {names['b']}", counts["a_wrong_b_right"], counts["a_right_b_wrong"], counts["both_wrong"],
                         counts["both_confidently_wrong"], p_text(view["mcnemar_p"])))
        blocks.append(make_table(("models (reference / other)", "only the reference wrong", "only the other wrong", "both wrong",
                                  "both confidently wrong", "McNemar p"), rows))
    return Section("failures", "Failure cases", tuple(blocks))


def explanations(summary: dict) -> Section:
    results = summary.get("explanations")
    if not results:
        return Section("explanations", "Explanations", (_not_run("evaluate", "explanations"),))
    if "skipped" in results:
        return Section("explanations", "Explanations", (Note(f"Grad-CAM skipped: {results['skipped']}."),))
    rows = []
    for v in models_of(summary):
        share = results[v]["centre_share"]
        f, s = share["failures"], share["successes"]
        rows.append((v, _with_interval(f["mean"], f["low"], f["high"]), _with_interval(s["mean"], s["low"], s["high"]),
                     interval_text(*(share.get("difference_interval") or (None, None))), signed(share.get("cohens_d"), 2)))
    layer = f" at layer {results['layer']}" if results.get("layer") else ""
    blocks: list = [
        Paragraph(f"Share of the Grad-CAM mass (predicted class{layer}) inside the central window; uniform attention gives 0.25. "
                  "Intervals in this section are 95%, over the test images of each trained model."),
        make_table(("variant", "failures [95% CI]", "successes [95% CI]", "difference 95% CI", "Cohen's d"), rows),
        Figure(figure_path("centre_attention"), "Centre versus border attention of failures and successes."),
    ]
    faithful = [v for v in models_of(summary) if "faithfulness" in results[v]]
    if faithful:
        keys = ("deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc", "deletion_gain", "insertion_gain")
        blocks.append(Paragraph("Constant-fill deletion and blurred-start insertion (Petsiuk et al. 2018) against an i.i.d. random pixel order:"))
        blocks.append(make_table(("variant", *(words(k) for k in keys), "images"), [
            (v, *(_with_interval(results[v]["faithfulness"][k]["mean"], results[v]["faithfulness"][k]["low"], results[v]["faithfulness"][k]["high"]) for k in keys),
             results[v]["faithfulness"]["n_images"]) for v in faithful]))
        road = [v for v in faithful if "road" in results[v]]
        if road:
            blocks.append(Paragraph(
                "ROAD (Rong et al. 2022): pixels are removed in map order and filled by noisy linear imputation, most relevant first "
                "(MoRF: a faithful map makes the probability fall fast) and least relevant first (LeRF: it falls slowly). The random "
                "order has the map's structure: uniform noise at the CAM's resolution, upsampled like the CAM. Gains are paired over "
                "images, positive when the map beats random; the verdict uses their mean, ROAD's combined score (LeRF − MoRF) / 2."))
            keys = ("road_morf_auc", "road_random_morf_auc", "morf_gain", "road_lerf_auc", "road_random_lerf_auc", "lerf_gain", "combined_gain")
            blocks.append(make_table(("variant", *(k.replace("road_", "").replace("_", " ") for k in keys), "images"), [
                (v, *(_with_interval(results[v]["road"][k]["mean"], results[v]["road"][k]["low"], results[v]["road"][k]["high"]) for k in keys),
                 results[v]["road"]["n_images"]) for v in road]))
        blocks.append(Figure(figure_path("faithfulness"), "ROAD and constant-fill deletion/insertion: Grad-CAM order versus random order (95% CI over images)."))
        blocks.append(Paragraph("Sanity check (Adebayo et al. 2018): rank correlation between maps of the trained model and of a randomised model; low means the maps depend on the weights."))
        blocks.append(make_table(("variant", "mean rank correlation [95% CI]", "median", "undefined / images"), [
            (v, _with_interval(c["mean_rank_correlation"], c["interval"]["low"], c["interval"]["high"]), number(c["median_rank_correlation"]),
             f"{c['undefined']} / {c['n_images']}") for v in faithful for c in [results[v]["sanity_check"]]]))
    return Section("explanations", "Explanations", tuple(blocks))


def robustness(summary: dict) -> Section:
    results, calibration = summary.get("robustness"), summary.get("calibration")
    blocks: list = []
    models = models_of(summary)
    given = given_models(summary)
    if results:
        gain = results.get("gain", {})
        gains_by_model = results.get("gains") or ({"augmented": gain} if gain.get("clean") else {})
        n = results.get("images", MISSING)
        main = results[models[0]].get("main_corruptions") or []
        missing = results[models[0]].get("main_corruptions_missing") or []
        rows = [(v, _with_interval(results[v]["clean_acc"], *results[v]["clean_acc_interval"]),
                 _with_interval(results[v]["mean_corruption_acc"], *(results[v]["mean_corruption_acc_interval"] or (None, None))),
                 _with_interval(results[v].get("mean_corruption_acc_main"), *(results[v].get("mean_corruption_acc_main_interval") or (None, None))),
                 _with_interval(results[v].get("corruption_drop"), *(results[v].get("corruption_drop_interval") or (None, None))),
                 number(results[v]["mce"]), number(results[v]["relative_mce"])) for v in models]
        tables = f" Corruption severities: the {results['corruption_tables']} tables." if results.get("corruption_tables") else ""
        scope = ("of these given models: it describes these checkpoints." if given else
                 "of this one trained pair: it describes these two models, not the augmentation in general (training-to-training "
                 "variation is not in it).")
        blocks.append(Paragraph(
            f"On the first {n} test images.{tables} Every interval in this section is a 95% interval over these {n} test images {scope} "
            f"Drop = clean − mean corruption accuracy. CE and mCE are relative to this run's {models[0]} (Hendrycks & Dietterich 2019, "
            f"with {models[0]} in AlexNet's role), so they cannot be compared with published mCE figures."))
        blocks.append(make_table(("variant", "clean accuracy", "mean corruption accuracy", f"mean over CIFAR-10-C main set ({len(main)} of 15)",
                              "drop from clean", "mCE", "relative mCE"), rows))
        if results.get("corruptions_skipped"):
            blocks.append(Note(f"Corruptions skipped: {results['corruptions_skipped']}. Shifts and calibration ran"))
        elif missing:
            blocks.append(Note(f"CIFAR-10-C main set without {', '.join(missing)} (not implemented): it compares with RobustBench's "
                               "CIFAR-10-C column only approximately, and this copy of CIFAR-10 is JPEG-decoded"))
        for other, gain in gains_by_model.items():
            reference = gain.get("models", (models[0], other))[0]
            labels = [("clean", "clean"), ("mean_corruption", "mean corruption"), ("mean_corruption_main", "mean corruption, main set"),
                      ("corruption_drop", f"drop from clean (+: {other} loses more)")]
            shown = [(label, g) for label, g in [(label, gain.get(key)) for key, label in labels]
                     + [(f"shift: {k.replace('_', ' ')}", g) for k, g in gain.get("shift_families", {}).items()] if g]
            border = gain.get("border_effect")
            if border:
                shown.append(("black-border effect (zero-fill − edge-fill translation gain)", border))
            gains = [(label, signed(g["mean"]), interval_text(g["low"], g["high"])) for label, g in shown]
            blocks.append(make_table((f"{other} − {reference}, {'these models' if given else 'this pair'}", "difference",
                                      f"{paired_method([g for _, g in shown])}, over test images"), gains))
            if border and not given:
                share = border.get("share_of_zero_fill_gain")
                blocks.append(Paragraph(
                    f"Black borders: for this pair, augmented − baseline accuracy under translation is {signed(border['gain_zero_fill'])} "
                    f"with zero fill and {signed(border['gain_edge_fill'])} with edge fill. The difference, {signed(border['mean'])} "
                    f"{interval_text(border['low'], border['high'])}, measures how much the augmented model, which saw zero-padded "
                    "borders in training, profits from black borders as such"
                    + (f" ({100 * share:.0f}% of its zero-fill gain)." if share is not None and border["gain_zero_fill"] > 0 else ".")
                    + " Shifts default to edge fill for that reason."))
        if results[models[0]].get("by_corruption"):
            blocks.append(Figure(figure_path("severity"), "Accuracy versus corruption severity, every model."))
            if len(models) > 1:
                a, b = results.get("gain", {}).get("models", models[:2])
                blocks.append(Figure(figure_path("gain_heatmap"), f"{b} − {a} accuracy per corruption and severity (blue: {b} better)."))
        blocks.append(Figure(figure_path("translation"), "Accuracy under translations by (dx, dy) pixels, with edge-replicated and with black borders."))
        blocks.append(Figure(figure_path("shift_families"), "Accuracy per shift family and the paired gain."))
    else:
        blocks.append(_not_run("stress", "robustness"))
    if calibration:
        keys = ("ece", "ece_after_temperature", "temperature", "nll", "nll_after_temperature", "brier", "mean_corrupted_ece")
        blocks.append(make_table(("model", *(words(k) for k in keys)), [(v, *(number(calibration[v][k]) for k in keys)) for v in models]))
        blocks.append(Figure(figure_path("reliability"), "Reliability diagrams before and after temperature scaling."))
    else:
        blocks.append(_not_run("stress", "calibration"))
    return Section("robustness", "Robustness and calibration", tuple(blocks))


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, float):
        return [(prefix, number(value))]
    return [(prefix, str(value))]


def seed_statistics(summary: dict) -> Section:
    """Hook for the seed sweep's optional `seeds` section: shown as a flat key/value table."""
    return Section("seeds", "Seed statistics", (make_table(("statistic", "value"), _flatten(summary["seeds"])),))


# Optional summary sections: shown only when present, before the observations.
OPTIONAL_SECTIONS: dict[str, Callable[[dict], Section]] = {"seeds": seed_statistics}


SINGLE_RUN_NOTE = (
    "Generated from the numbers above; an effect is claimed only where a 95% interval excludes 0 and, for a family of "
    "comparisons (bands, scales, attacks), only where it is significant after Holm's correction over the family: the tables' "
    "intervals are unadjusted, so one can exclude 0 and still read 'no' under 'significant after Holm'. Statements about the "
    "augmentation itself need the variation between trainings, which one run does not measure: they are marked 'one pair "
    "only' here, and a seed sweep (jobs/seed_sweep.py) gives them verdicts over seeds.")


def observations(summary: dict, rules: tuple[Rule, ...] = RULES, note: str = SINGLE_RUN_NOTE) -> Section:
    found = derive_observations(summary, rules)
    rows = [(o.verdict, o.text, o.uncertainty, o.figure or MISSING) for o in found]
    return Section("observations", "Observations", (Paragraph(note), make_table(("verdict", "observation", "uncertainty", "figure"), rows)))


def compose(summary: dict, config: dict, manifest: dict) -> list[Section]:
    """All sections in report order."""
    sections = [headline(summary), setup(summary, config, manifest), training(summary), failure_cases(summary),
                labels_and_slices(summary), explanations(summary), robustness(summary), fourier_section(summary),
                texture_section(summary), attack_section(summary)]
    sections += [render(summary) for key, render in OPTIONAL_SECTIONS.items() if key in summary]
    sections.append(observations(summary))
    return sections


