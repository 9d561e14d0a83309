"""Matplotlib figures, drawn only from the run folder's JSON and array files.

`write_figures` draws every figure whose input files exist (and only those); no model
or dataset is ever loaded, so figures can be regenerated from a copied run folder.
File names are fixed (see FIGURE_NAMES) so the report can find them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stress.analyses.failures import confusion_matrix
from stress.artifacts import RunFolder, read_json, read_record
from stress.constants import CLASSES, CONFIDENT, VARIANTS
from stress.errors import StressError
from stress.report.class_plots import plot_confusion, plot_confusion_pairs
from stress.report.fourier_plots import plot_fourier_heatmaps, plot_fourier_radial
from stress.report.probe_plots import plot_adversarial_cases, plot_robust_accuracy, plot_texture_probes
from stress.report.label_plots import plot_embedding_map, plot_suspect_gallery
from stress.report.plots import (
    plot_case,
    plot_case_grid,
    plot_centre_attention,
    plot_characteristics,
    plot_failure_gallery,
    plot_faithfulness,
    plot_gain_heatmap,
    plot_reliability,
    plot_severity_curves,
    plot_shift_families,
    plot_training_curves,
    plot_translation_grids,
)

# Figure file names under figures/ (per-variant ones take the variant name).
FIGURE_NAMES = {
    "training": "training_curves.png",
    "confusion": "confusion_{variant}.png",
    "gallery": "failure_gallery_{variant}.png",
    "case_grid": "gradcam_cases_{variant}.png",
    "confusion_pairs": "confusion_pairs.png",
    "characteristics": "characteristics.png",
    "centre_attention": "centre_attention.png",
    "faithfulness": "faithfulness.png",
    "severity": "severity_curves.png",
    "gain_heatmap": "gain_heatmap.png",
    "translation": "translation_grid.png",
    "shift_families": "shift_families.png",
    "reliability": "reliability.png",
    "case": "cases/{variant}_{rank}_{index}.png",  # one per selected failure case: its Grad-CAM panels
    "suspects": "label_suspects.png",
    "train_suspects": "train_label_suspects.png",
    "embedding_map": "embedding_map.png",
    "fourier_heatmap": "fourier_heatmap.png",
    "fourier_radial": "fourier_radial.png",
    "texture": "texture_probes.png",
    "robust_accuracy": "robust_accuracy.png",
    "adversarial_cases": "adversarial_cases.png",
}


def figure_name(key: str, variant: str = "", **fields) -> str:
    """File name (relative to figures/) of figure `key`; `fields` fill the case figure's rank and index."""
    return FIGURE_NAMES[key].format(variant=variant, **fields)


def figure_path(key: str, variant: str = "", **fields) -> str:
    """Path (relative to the run folder) of figure `key`, as the report and summary.json name it."""
    return "figures/" + figure_name(key, variant, **fields)


# -- all of them ---------------------------------------------------------------
def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz; a corrupt file is a one-line StressError naming it."""
    try:
        with np.load(path) as table:
            return {k: table[k] for k in table.files}
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, zipfile.BadZipFile, KeyError...
        raise StressError(f"{path}: not a readable .npz ({type(exc).__name__})") from None


def class_names(run: RunFolder) -> tuple[str, ...]:
    """The run's class names from its config.json; CIFAR-10's for folders written before they were recorded."""
    path = run.path("config.json")
    record = read_json(path) if path.is_file() else {}
    names = record.get("data", {}).get("class_names") if isinstance(record, dict) and isinstance(record.get("data"), dict) else None
    return tuple(str(n) for n in names) if isinstance(names, list) and names else CLASSES


def run_models(run: RunFolder) -> tuple[str, ...]:
    """The run's models under test, reference first: config.json's --evaluate names, else the trained variants."""
    path = run.path("config.json")
    record = read_json(path) if path.is_file() else {}
    entries = record.get("evaluate") if isinstance(record, dict) else None
    return tuple(str(e).split("=", 1)[0] for e in entries) if isinstance(entries, list) and entries else VARIANTS


def _case_figures(run: RunFolder, failures: dict, names: tuple[str, ...], models: tuple[str, ...]) -> list[Path]:
    written = []
    suspects = {c["index"]: c["label_suspect"] for v in models for c in failures.get(v, {}).get("cases", []) if c.get("label_suspect")}
    cases = load_arrays(run.path("eval", "gradcam_cases.npz"))
    keys = [(str(v), int(i)) for v, i in zip(cases["case_variant"], cases["indices"])]
    for v in models:
        rows = []
        for case in failures.get(v, {}).get("cases", []):
            if (v, case["index"]) in keys:
                row = keys.index((v, case["index"]))
                rows.append(row)
                written.append(plot_case(cases, row, run.path(*case["figure"].split("/")), names, models, suspects))
        if rows:
            written.append(plot_case_grid(cases, rows, f"Grad-CAM of the cases selected from {v}'s failures",
                                          run.figures / figure_name("case_grid", v), names, models, suspects))
    return written


def fixed_title_height(draw):
    """Run `draw` with every new axes' title at matplotlib's default height (axes.titley 1.0).

    Left automatic, matplotlib measures every tick label of every axes at each draw to lift a title
    above tick labels on top, which no figure here has: the same pixels, about 15 % less drawing time.
    """
    import functools

    import matplotlib

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context({"axes.titley": 1.0}):
            return draw(*args, **kwargs)

    return wrapper


@fixed_title_height
def write_figures(run: RunFolder, log=print) -> list[Path]:
    """Every figure whose inputs exist in the run folder; returns the paths written."""
    written: list[Path] = []
    names, models = class_names(run), run_models(run)
    evaluation = lambda name: run.path("eval", name)  # noqa: E731
    if all((run.variant_dir(v) / "history.json").is_file() for v in models):
        histories = {v: read_record(run.variant_dir(v) / "history.json", "training history", keys=("epochs",))["epochs"] for v in models}
        written.append(plot_training_curves(histories, run.figures / figure_name("training")))
    predictions = None
    if evaluation("predictions.npz").is_file():
        predictions = load_arrays(evaluation("predictions.npz"))
        for v in models:
            matrix = confusion_matrix(predictions["labels"], predictions[f"{v}_predicted"], len(names))
            acc = float(np.trace(matrix) / matrix.sum())
            written.append(plot_confusion(matrix, f"{v}: test accuracy {acc:.3f}", run.figures / figure_name("confusion", v), names))
    failures = read_record(evaluation("failures.json"), "failure record", keys=models, variants=models) if evaluation("failures.json").is_file() else None
    audit = load_arrays(evaluation("labels.npz")) if evaluation("labels.npz").is_file() else None
    if evaluation("failure_gallery.npz").is_file():
        g = load_arrays(evaluation("failure_gallery.npz"))
        for v in models:
            suspect = audit["suspect"][g[f"{v}_indices"]] if audit is not None and "suspect" in audit else None
            written.append(plot_failure_gallery(
                g[f"{v}_images"], g[f"{v}_labels"], g[f"{v}_predicted"], g[f"{v}_confidence"],
                f"{v}: most confident failures (true / predicted, confidence)", run.figures / figure_name("gallery", v), names=names,
                suspect=suspect))
    if audit is not None and evaluation("labels.json").is_file() and len(audit["gallery_indices"]):
        record = read_record(evaluation("labels.json"), "label audit", keys=("suspects",))
        shown = len(audit["gallery_indices"])
        written.append(plot_suspect_gallery(audit["gallery_images"], record["suspects"][:shown], run.figures / figure_name("suspects")))
    if evaluation("train_labels.npz").is_file():
        t = load_arrays(evaluation("train_labels.npz"))
        if len(t["gallery_indices"]):
            written.append(plot_failure_gallery(
                t["gallery_images"], t["gallery_labels"], t["gallery_predicted"], t["gallery_confidence"],
                "Training images whose label confident learning flags (given / out-of-fold prediction, confidence)",
                run.figures / figure_name("train_suspects"), columns=5, names=names))
    if predictions is not None and evaluation("slices.npz").is_file() and evaluation("slices.json").is_file():
        arrays = load_arrays(evaluation("slices.npz"))
        record = read_record(evaluation("slices.json"), "failure slices", keys=("models",))
        mapped = [v for v in models if f"{v}_projection" in arrays]
        if mapped:
            suspect = (audit["suspect"] if audit is not None and "suspect" in audit else np.zeros(len(predictions["labels"]), dtype=bool))
            slices = {v: [(s["name"], arrays[f"{v}_top_masks"][i]) for i, s in enumerate(record["models"][v]["slices"])] for v in mapped}
            variance = {v: record["models"][v].get("embedding", {}).get("projection_variance") for v in mapped}
            written.append(plot_embedding_map({v: arrays[f"{v}_projection"] for v in mapped},
                                              {v: predictions[f"{v}_correct"] for v in mapped}, suspect, slices, variance,
                                              run.figures / figure_name("embedding_map")))
    if failures is not None:
        if evaluation("gradcam_cases.npz").is_file():
            written += _case_figures(run, failures, names, models)
        written.append(plot_confusion_pairs(failures, run.figures / figure_name("confusion_pairs"), models=models))
    if predictions is not None and evaluation("characteristics.npz").is_file():
        characteristics = load_arrays(evaluation("characteristics.npz"))
        masks = {}
        for v in models:
            correct, confident = predictions[f"{v}_correct"].astype(bool), predictions[f"{v}_confidence"] >= CONFIDENT
            masks[v] = (~correct & confident, correct & confident)
        comparisons = {v: failures[v]["characteristics"]["comparison"] for v in models} if failures else {}
        written.append(plot_characteristics(characteristics, masks, comparisons, run.figures / figure_name("characteristics"), models=models))
    skipped = evaluation("explanations.json").is_file() and "skipped" in read_json(evaluation("explanations.json"))
    if evaluation("explanations.json").is_file() and not skipped:
        explanations = read_record(evaluation("explanations.json"), "explanation record", variants=models)
        written.append(plot_centre_attention(explanations, run.figures / figure_name("centre_attention"), models=models))
        if any("faithfulness" in explanations.get(v, {}) for v in models):
            written.append(plot_faithfulness(explanations, run.figures / figure_name("faithfulness"), models=models))
    if evaluation("robustness.json").is_file():
        robustness = read_record(evaluation("robustness.json"), "robustness record", keys=models, variants=models)
        if robustness[models[0]]["by_corruption"]:
            written.append(plot_severity_curves(robustness, run.figures / figure_name("severity"), models=models))
            if "by_corruption_severity" in robustness.get("gain", {}):
                written.append(plot_gain_heatmap(robustness, run.figures / figure_name("gain_heatmap"), models=models))
        if any(name.startswith("translate_") for name in robustness[models[0]]["shifts"]):
            written.append(plot_translation_grids(robustness, run.figures / figure_name("translation"), models=models))
        if robustness[models[0]]["shift_families"]:
            written.append(plot_shift_families(robustness, run.figures / figure_name("shift_families"), models=models))
    if evaluation("calibration.json").is_file():
        calibration = read_record(evaluation("calibration.json"), "calibration record", keys=models, variants=models)
        written.append(plot_reliability(calibration, run.figures / figure_name("reliability"), models=models))
    skipped = evaluation("fourier.json").is_file() and "skipped" in read_json(evaluation("fourier.json"))
    if evaluation("fourier.json").is_file() and evaluation("fourier.npz").is_file() and not skipped:
        record = read_record(evaluation("fourier.json"), "Fourier record", keys=("models",))
        shown = tuple(v for v in models if v in record["models"])
        if shown:
            written.append(plot_fourier_heatmaps(load_arrays(evaluation("fourier.npz")), record, shown, run.figures / figure_name("fourier_heatmap")))
            written.append(plot_fourier_radial(record, shown, run.figures / figure_name("fourier_radial")))
    if evaluation("texture.json").is_file():
        record = read_record(evaluation("texture.json"), "texture record", keys=("models", "probes"))
        shown = tuple(v for v in models if v in record["models"])
        if shown:
            written.append(plot_texture_probes(record, shown, run.figures / figure_name("texture")))
    if evaluation("adversarial.json").is_file():
        record = read_record(evaluation("adversarial.json"), "adversarial record", keys=("models", "attacks"))
        shown = tuple(v for v in models if v in record["models"])
        if shown:
            written.append(plot_robust_accuracy(record, shown, run.figures / figure_name("robust_accuracy")))
        if evaluation("adversarial_cases.npz").is_file() and shown:
            written.append(plot_adversarial_cases(load_arrays(evaluation("adversarial_cases.npz")), shown, names,
                                                  run.figures / figure_name("adversarial_cases")))
    log(f"figures: {len(written)} written to {run.figures}")
    return written


SWEEP_FIGURES = {
    "seed_metrics": "sweep_seed_metrics.png",
    "corruption_gain": "sweep_corruption_gain.png",
    "fail_counts": "sweep_fail_counts.png",
    "always_wrong": "sweep_always_wrong_{variant}.png",
    "stable_suspects": "sweep_stable_suspects_{variant}.png",
}


def sweep_figure(key: str, variant: str = "") -> str:
    """Path (relative to the sweep folder) of sweep figure `key`."""
    return "figures/" + SWEEP_FIGURES[key].format(variant=variant)
