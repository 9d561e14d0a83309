"""A sweep's figures, drawn from its summary.json and stability.npz: per-seed metrics, corruption gains, fail counts, always-wrong images."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stress.artifacts import RunFolder  # noqa: E402
from stress.constants import (
    CLASSES,  # noqa: E402
    VARIANTS,  # noqa: E402
)
from stress.report.figures import (
    fixed_title_height,
    load_arrays,  # noqa: E402
    sweep_figure,
)
from stress.report.plots import COLOURS, save_figure  # noqa: E402
from stress.report.statements import interval_text, signed  # noqa: E402
from stress.report.sweep_report import HEADLINE_METRICS, _per_seed_values
from stress.report.sweep_summary import load_sweep_summary

SIGNIFICANT_COLOURS = {"gain": "#2ca02c", "loss": "#d62728"}  # corruption differences significant after Holm, by sign


# -- figures --------------------------------------------------------------------
def plot_seed_metrics(summary: dict, path: Path) -> Path:
    """Per-seed values of each headline metric as dots per variant (same seed joined), with mean and 95% CI."""
    metrics = [m for m in HEADLINE_METRICS if all(_per_seed_values(summary, v, m.key) for v in VARIANTS)]
    aggregate, seeds = summary.get("aggregate"), summary["seeds"]
    columns = min(len(metrics), 4)
    rows = -(-len(metrics) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.8 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    spread = np.linspace(-0.1, 0.1, len(seeds)) if len(seeds) > 1 else np.zeros(1)  # keep equal values apart
    for ax, metric in zip(axes.flat, metrics):
        values = {v: _per_seed_values(summary, v, metric.key) for v in VARIANTS}
        for j in range(len(seeds)):  # the design is paired: one line per seed across variants
            ax.plot([k + spread[j] for k in range(len(VARIANTS))], [values[v][j] for v in VARIANTS], color="grey", alpha=0.4, lw=0.8)
        for k, v in enumerate(VARIANTS):
            ax.plot(k + spread, values[v], "o", color=COLOURS[v], alpha=0.8, label="seeds" if k == 0 else None)
            entry = (aggregate or {}).get("variants", {}).get(v, {}).get(metric.key)
            if entry and entry.get("low") is not None:
                ax.errorbar(k + 0.3, entry["mean"], yerr=[[entry["mean"] - entry["low"]], [entry["high"] - entry["mean"]]],
                            fmt="D", color="black", capsize=5, label="mean, 95% CI" if k == 0 else None)
        paired = (aggregate or {}).get("paired", {}).get(metric.key)
        gain = f"\nΔ {signed(paired['mean'])} {interval_text(paired['low'], paired['high'])}" if paired else ""
        ax.set_title(f"{textwrap.fill(metric.label, 40)}{gain}", fontsize=9)
        ax.set_xticks(range(len(VARIANTS)), VARIANTS)
        ax.set_xlim(-0.5, len(VARIANTS) - 0.2)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Per-seed values over {len(seeds)} seeds (Δ: augmented − baseline, paired 95% CI)")
    fig.tight_layout()
    return save_figure(fig, path)


def significance_colour(entry: dict) -> str:
    """A corruption's colour in the figure: green for a Holm-significant gain, red for a Holm-significant loss, else grey."""
    if not entry.get("significant_holm"):
        return "grey"
    return SIGNIFICANT_COLOURS["gain" if entry["mean"] > 0 else "loss"]


def plot_corruption_gain(aggregate: dict, path: Path) -> Path:
    """Paired augmented − baseline accuracy per corruption (points), 95% CI; Holm-significant gains green, losses red."""
    gains = aggregate["paired"]["by_corruption"]
    names = list(gains)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(names) + 2.5), 4.0))
    for k, name in enumerate(names):
        g = gains[name]
        colour = significance_colour(g)
        errors = [[0.0], [0.0]] if g["low"] is None else [[100 * (g["mean"] - g["low"])], [100 * (g["high"] - g["mean"])]]
        ax.errorbar(k, 100 * g["mean"], yerr=errors, fmt="o", capsize=4, color=colour)
        if colour != "grey":
            ax.annotate("*", (k, 100 * g["high"]), ha="center", va="bottom", fontsize=14, color=colour)
    ax.axhline(0, color="black", linestyle=":")
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=45, ha="right")
    ax.set_ylabel("augmented − baseline accuracy (points)")
    alpha = aggregate.get("holm_alpha")
    ax.plot([], [], "o", color=SIGNIFICANT_COLOURS["gain"], label=f"higher with augmentation, significant after Holm (α={alpha})")
    ax.plot([], [], "o", color=SIGNIFICANT_COLOURS["loss"], label=f"lower with augmentation, significant after Holm (α={alpha})")
    ax.plot([], [], "o", color="grey", label="not significant")
    ax.legend(fontsize=7)
    ax.set_title(f"Augmented − baseline accuracy per corruption over {aggregate['n_seeds']} seeds (mean, 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_fail_counts(stability: dict, path: Path) -> Path:
    """Histogram of "misclassified in k of n seeds" per test image, both variants side by side."""
    n = stability["n_seeds"]
    ks = np.arange(n + 1)
    width = 0.8 / len(VARIANTS)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * (n + 1) + 3), 3.8))
    for j, v in enumerate(VARIANTS):
        bars = ax.bar(ks + (j - (len(VARIANTS) - 1) / 2) * width, stability["variants"][v]["fail_count_histogram"], width,
                      color=COLOURS[v], label=v)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel(f"number of seeds (of {n}) whose model misclassifies the image")
    ax.set_ylabel("test images")
    ax.set_title(f"Failure stability: k = {n} is data-intrinsic, 1 ≤ k < {n} is seed-dependent")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_always_wrong(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, title: str, path: Path, columns: int = 8,
                      names: tuple[str, ...] = CLASSES) -> Path:
    """Images (N, 3, H, W) uint8 misclassified in every seed, each titled with its test index and true class."""
    rows = -(-max(len(images), 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.75 * rows + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(np.transpose(images[k], (1, 2, 0)), interpolation="nearest")  # (3, H, W) -> (H, W, 3)
            ax.set_title(f"#{int(indices[k])}\n{names[int(labels[k])]}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


@fixed_title_height
def write_sweep_figures(root: RunFolder, log=print) -> list[Path]:
    """Every sweep figure whose inputs exist in the sweep folder; returns the paths written."""
    summary = load_sweep_summary(root)
    written: list[Path] = []
    target = lambda key, variant="": root.path(*sweep_figure(key, variant).split("/"))  # noqa: E731
    if any(all(_per_seed_values(summary, v, m.key) for v in VARIANTS) for m in HEADLINE_METRICS):
        written.append(plot_seed_metrics(summary, target("seed_metrics")))
    aggregate = summary.get("aggregate")
    if aggregate and aggregate.get("paired", {}).get("by_corruption"):
        written.append(plot_corruption_gain(aggregate, target("corruption_gain")))
    stability = summary.get("stability")
    if stability:
        written.append(plot_fail_counts(stability, target("fail_counts")))
        gallery_path = root.path("stability.npz")
        if stability["n_seeds"] > 1 and gallery_path.is_file():
            gallery = load_arrays(gallery_path)
            for v in VARIANTS:
                if len(gallery.get(f"{v}_indices", ())):
                    always = stability["variants"][v]["always_wrong"]
                    title = (f"{v}: misclassified by all {stability['n_seeds']} seeds ({len(gallery[f'{v}_indices'])} of {always} shown; "
                             "test index, true class)")
                    written.append(plot_always_wrong(gallery[f"{v}_images"], gallery[f"{v}_labels"], gallery[f"{v}_indices"], title,
                                                     target("always_wrong", v), names=tuple(summary.get("class_names") or CLASSES)))
            for v in VARIANTS:
                if len(gallery.get(f"{v}_suspect_indices", ())):
                    stable = summary["labels"]["variants"][v]["stable_suspects"]
                    title = (f"{v}: label flagged by all {stability['n_seeds']} seeds ({len(gallery[f'{v}_suspect_indices'])} of {stable} shown; "
                             "test index, given class)")
                    written.append(plot_always_wrong(gallery[f"{v}_suspect_images"], gallery[f"{v}_suspect_labels"],
                                                     gallery[f"{v}_suspect_indices"], title, target("stable_suspects", v),
                                                     names=tuple(summary.get("class_names") or CLASSES)))
    log(f"sweep figures: {len(written)} written to {root.figures}")
    return written
