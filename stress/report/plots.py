"""Matplotlib drawings of a run's figures, each from arrays and records already read (stress.report.figures reads them)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402

from stress.analyses.stats import cohens_d  # noqa: E402
from stress.artifacts import write_bytes_atomic  # noqa: E402
from stress.constants import CLASSES, UNIFORM_CENTRE_SHARE, VARIANTS  # noqa: E402
from stress.report.statements import number  # noqa: E402

COLOURS = {"baseline": "#1f77b4", "augmented": "#d62728"}
SUSPECT_COLOUR = "#ff7f0e"  # label suspects, wherever they are marked
PALETTE = ("#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def colour(model: str) -> str:
    """The trained variants' fixed colours; any other model name gets a stable one from PALETTE."""
    import zlib

    return COLOURS.get(model) or PALETTE[zlib.crc32(model.encode()) % len(PALETTE)]


def save_figure(fig, path: Path) -> Path:
    """Render to PNG in memory and write atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.transpose(np.asarray(image), (1, 2, 0))  # (3, H, W) uint8 -> (H, W, 3)


def _scaled(heatmap: np.ndarray) -> np.ndarray:
    # Raw Grad-CAM maps have arbitrary scale; show each relative to its own maximum.
    peak = float(np.max(heatmap))
    return heatmap / peak if peak > 0 else np.zeros_like(heatmap)


def _errors(mean: float, low: float | None, high: float | None) -> list[float]:
    if low is None or high is None:
        return [0.0, 0.0]
    return [mean - low, high - mean]


# -- training and predictions --------------------------------------------------
def plot_training_curves(histories: dict[str, list[dict]], path: Path) -> Path:
    """Train-versus-validation loss and accuracy per epoch, one column per variant."""
    fig, axes = plt.subplots(2, len(histories), figsize=(5 * len(histories), 6.5), sharex=True, squeeze=False)
    for column, (variant, epochs) in enumerate(histories.items()):
        x = [e["epoch"] for e in epochs]
        for row, metric in enumerate(("loss", "acc")):
            ax = axes[row, column]
            ax.plot(x, [e[f"train_{metric}"] for e in epochs], "o-", label="train", color=colour(variant))
            ax.plot(x, [e[f"val_{metric}"] for e in epochs], "s--", label="validation", color="black")
            ax.set_title(f"{variant}: {'loss' if metric == 'loss' else 'accuracy'}")
            ax.set_ylabel("cross-entropy" if metric == "loss" else "accuracy")
            ax.grid(alpha=0.3)
            ax.legend()
        axes[1, column].set_xlabel("epoch")
    return save_figure(fig, path)


def plot_failure_gallery(images: np.ndarray, labels, predicted, confidence, title: str, path: Path, columns: int = 4,
                         names: tuple[str, ...] = CLASSES, suspect=None) -> Path:
    """The most confident failures as an image grid, each titled true / predicted (confidence).

    suspect: (n,) bool, the tiles whose label the audit finds suspect: marked "label suspect" and framed in orange.
    """
    count = max(len(images), 1)
    rows = -(-count // columns)
    marked = suspect is not None and bool(np.any(suspect))  # a third title line needs room
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, (2.85 if marked else 2.5) * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(_as_rgb(images[k]), interpolation="nearest")
            flagged = suspect is not None and bool(suspect[k])
            ax.set_title(f"true: {names[int(labels[k])]}\npred: {names[int(predicted[k])]} ({float(confidence[k]):.2f})"
                         + ("\nlabel suspect" if flagged else ""), fontsize=8, color=SUSPECT_COLOUR if flagged else "black")
            if flagged:
                ax.add_patch(plt.Rectangle((-0.5, -0.5), images[k].shape[-1], images[k].shape[-2], fill=False, lw=3, ec=SUSPECT_COLOUR))
    fig.suptitle(title)
    return save_figure(fig, path)


def _draw_case_row(axes, cases: dict, row: int, names: tuple[str, ...], models: tuple[str, ...] = VARIANTS,
                   suspects: dict[int, str] | None = None) -> None:
    """One case: the image, then per model the map of its predicted class and of the true class.

    suspects: {image index: label-audit text}; a suspect case says so under its image.
    """
    image = _as_rgb(cases["images"][row])
    true_name = names[int(cases["labels"][row])]
    index = int(cases["indices"][row])
    axes[0].imshow(image, interpolation="nearest")
    text = (suspects or {}).get(index)
    axes[0].set_title(f"#{index} true: {true_name}\n(selected by {cases['case_variant'][row]})", fontsize=8)
    if text:
        axes[0].set_xlabel("\n".join(_wrap(text, 34)), fontsize=7, color=SUSPECT_COLOUR)
        axes[0].xaxis.label.set_visible(True)
    column = 1
    for model in models:
        predicted = names[int(cases[f"predicted_{model}"][row])]
        confidence = float(cases[f"confidence_{model}"][row])
        for target in ("predicted", "true"):
            ax = axes[column]
            ax.imshow(image, interpolation="nearest")
            ax.imshow(_scaled(cases[f"maps_{model}_{target}"][row]), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
            what = f"map: {predicted}" if target == "predicted" else f"map: true {true_name}"
            ax.set_title(f"{model} → {predicted} ({confidence:.2f})\n{what}", fontsize=8)
            column += 1
    for ax in axes[1:]:
        ax.axis("off")
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    for spine in axes[0].spines.values():
        spine.set_visible(bool(text))
        spine.set_color(SUSPECT_COLOUR)
        spine.set_linewidth(2.5)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


def plot_case(cases: dict, row: int, path: Path, names: tuple[str, ...] = CLASSES, models: tuple[str, ...] = VARIANTS,
              suspects: dict[int, str] | None = None) -> Path:
    """Grad-CAM figure of one selected case for both models."""
    fig, axes = plt.subplots(1, 1 + 2 * len(models), figsize=(2.4 * (1 + 2 * len(models)), 2.9))
    _draw_case_row(axes, cases, row, names, models, suspects)
    return save_figure(fig, path)


def plot_case_grid(cases: dict, rows: list[int], title: str, path: Path, names: tuple[str, ...] = CLASSES, models: tuple[str, ...] = VARIANTS,
                   suspects: dict[int, str] | None = None) -> Path:
    """All selected cases of one variant as rows of `plot_case` panels."""
    columns = 1 + 2 * len(models)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.4 * columns, 2.7 * len(rows)), squeeze=False)
    marked = any(int(cases["indices"][row]) in (suspects or {}) for row in rows)  # suspect text under an image needs room
    fig.subplots_adjust(hspace=0.75 if marked else 0.45, wspace=0.15, top=1 - 0.35 / len(rows))  # fixed: a layout engine is slow on 40 axes
    for line, row in enumerate(rows):
        _draw_case_row(axes[line], cases, row, names, models, suspects)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_characteristics(characteristics: dict, masks: dict, comparisons: dict, path: Path, models: tuple[str, ...] = VARIANTS) -> Path:
    """Distributions of image characteristics: confident failures vs confident successes, per variant.

    masks: {variant: (failures (N,) bool, successes (N,) bool)}; comparisons: failures.json's
    characteristics.comparison per variant (its Cohen's d and CI go in the titles), or {}.
    """
    names = list(characteristics)
    fig, axes = plt.subplots(len(models), len(names), figsize=(3.2 * len(names), 3.2 * len(models)), squeeze=False, layout="constrained")
    for row, v in enumerate(models):
        failed, succeeded = masks[v]
        for column, name in enumerate(names):
            ax, values = axes[row, column], np.asarray(characteristics[name], dtype=np.float64)
            bins = np.histogram_bin_edges(values, bins=20)
            if succeeded.any():  # an empty group has no density (numpy would warn and draw nothing)
                ax.hist(values[succeeded], bins=bins, density=True, alpha=0.5, color="grey", label=f"confident successes (n={int(succeeded.sum())})")
            if failed.any():
                ax.hist(values[failed], bins=bins, density=True, alpha=0.6, color=colour(v), label=f"confident failures (n={int(failed.sum())})")
            entry = comparisons.get(v, {}).get(name)
            if entry is not None and entry.get("cohens_d") is not None:
                d = (f"d = {number(entry['cohens_d'], 2)} [{number(entry['d_low'], 2)}, {number(entry['d_high'], 2)}]"
                     if entry.get("d_low") is not None else f"d = {number(entry.get('cohens_d'), 2)}")
            elif failed.sum() >= 2 and succeeded.sum() >= 2:
                d = f"d = {cohens_d(values[failed], values[succeeded]):.2f}"
            else:
                d = "d: too few failures"
            ax.set_title(f"{v}: {name.replace('_', ' ')}\n{d}", fontsize=9)
            ax.set_xlabel(name.replace("_", " "))
            if column == 0:
                ax.set_ylabel("density")
                if succeeded.any() or failed.any():
                    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)


# -- explanations -------------------------------------------------------------
def plot_centre_attention(explanations: dict, path: Path, models: tuple[str, ...] = VARIANTS) -> Path:
    """Mean centre share of the Grad-CAM mass, failures vs successes per variant, with 95% CIs."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k, v in enumerate(models):
        share = explanations[v]["centre_share"]
        for offset, group, marker in ((-0.12, "failures", "o"), (0.12, "successes", "s")):
            g = share[group]
            if g["mean"] is None:  # no image in the group (e.g. no failures): nothing to draw
                continue
            ax.errorbar(k + offset, g["mean"], yerr=np.array([_errors(g["mean"], g["low"], g["high"])]).T,
                        fmt=marker, color=colour(v), capsize=4, markersize=7, mfc="white" if group == "failures" else colour(v),
                        label=f"{v} {group} (n={g['n']})")
    ax.axhline(UNIFORM_CENTRE_SHARE, color="black", linestyle=":", label=f"uniform attention ({UNIFORM_CENTRE_SHARE:g})")
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("share of map mass in the central window")
    ax.set_title("Centre versus border attention (mean, 95% CI; window = half the side)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


FAITHFULNESS_PANELS = (
    ("road", "ROAD, noisy linear imputation (structure-matched random order)",
     (("road_morf_auc", "most relevant first: map"), ("road_random_morf_auc", "most relevant first: random"),
      ("road_lerf_auc", "least relevant first: map"), ("road_random_lerf_auc", "least relevant first: random"))),
    ("faithfulness", "Constant fill (i.i.d. random pixel order)",
     (("deletion_auc", "deletion: map order"), ("random_deletion_auc", "deletion: random order"),
      ("insertion_auc", "insertion: map order"), ("random_insertion_auc", "insertion: random order"))),
)


def plot_faithfulness(explanations: dict, path: Path, models: tuple[str, ...] = VARIANTS) -> Path:
    """ROAD (MoRF lower and LeRF higher = faithful) and constant-fill deletion/insertion AUCs,
    Grad-CAM order versus random order, with 95% CIs; one panel per protocol that was run."""
    panels = [p for p in FAITHFULNESS_PANELS if any(p[0] in explanations.get(v, {}) for v in models)]
    fig, axes = plt.subplots(1, len(panels), figsize=(7.0 * len(panels), 4.8), squeeze=False, layout="constrained")
    for ax, (block, title, keys) in zip(axes[0], panels):
        variants = [v for v in models if block in explanations.get(v, {})]
        width = 0.8 / len(keys)
        for k, v in enumerate(variants):
            f = explanations[v][block]
            for j, (key, label) in enumerate(keys):
                g = f[key]
                if g["mean"] is None:
                    continue
                ax.bar(k + (j - 1.5) * width, g["mean"], width, yerr=np.array([_errors(g["mean"], g["low"], g["high"])]).T, capsize=3,
                       color=colour(v), alpha=1.0 if "random" not in key else 0.4,
                       hatch="//" if ("insertion" in key or "lerf" in key) else "", edgecolor="black", label=label if k == 0 else None)
        ax.set_xticks(range(len(variants)), [f"{v} (n={explanations[v][block]['n_images']})" for v in variants])
        ax.set_ylabel("mean target probability along the curve")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no bar where no curve is finite (a diverged training)
            ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.1))  # below the axes, off the bars
    return save_figure(fig, path)


# -- robustness ---------------------------------------------------------------
def plot_severity_curves(robustness: dict, path: Path, columns: int = 5, models: tuple[str, ...] = VARIANTS) -> Path:
    """Accuracy versus severity per corruption, both variants, Wilson 95% bands (severity 0 = clean)."""
    corruptions = list(robustness[models[0]]["by_corruption"])
    rows = -(-len(corruptions) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.6 * rows), sharex=True, sharey=True, squeeze=False, layout="constrained")
    for ax, name in zip(axes.flat, corruptions):
        for v in models:
            r = robustness[v]
            x = [0] + list(r["severities"])
            y = [r["clean_acc"]] + list(r["by_corruption"][name])
            ax.plot(x, y, "o-", color=colour(v), label=v, markersize=3)
            bands = [r["clean_acc_interval"]] + list(r["by_corruption_interval"][name])
            ax.fill_between(x, [b[0] for b in bands], [b[1] for b in bands], color=colour(v), alpha=0.15)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(corruptions):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("severity (0 = clean)")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Accuracy under corruption ({robustness.get('images', '?')} test images, 95% Wilson bands)")
    return save_figure(fig, path)


def plot_gain_heatmap(robustness: dict, path: Path, models: tuple[str, ...] = VARIANTS) -> Path:
    """Augmented − baseline accuracy per corruption and severity; diverging colours centred at 0."""
    table = robustness["gain"]["by_corruption_severity"]
    names = list(table)
    values = np.array([table[c] for c in names], dtype=np.float64)  # (corruptions, severities)
    limit = max(float(np.nanmax(np.abs(values))), 1e-3)
    severities = robustness[models[0]]["severities"]
    fig, ax = plt.subplots(figsize=(1.1 * len(severities) + 3.5, 0.38 * len(names) + 1.6))
    image = ax.imshow(values, cmap="RdBu", norm=TwoSlopeNorm(0.0, -limit, limit), aspect="auto")
    for i in range(len(names)):
        for j in range(len(severities)):
            ax.text(j, i, f"{values[i, j]:+.3f}", ha="center", va="center", fontsize=7, color="white" if abs(values[i, j]) > 0.6 * limit else "black")
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    ax.set_yticks(range(len(names)), [c.replace("_", " ") for c in names])
    ax.set_xlabel("severity")
    a, b = robustness["gain"].get("models", ("baseline", "augmented"))
    ax.set_title(f"{b} − {a} accuracy (this pair of models)")
    fig.colorbar(image, ax=ax, label="accuracy difference")
    return save_figure(fig, path)


def _translation_grid(shifts: dict, prefix: str = "translate_") -> tuple[list[int], list[int], np.ndarray]:
    """(dx values, dy values, accuracy (len(dy), len(dx))) from <prefix><dx>_<dy> entries."""
    cells = {}
    for name, accuracy in shifts.items():
        if name.startswith(prefix):
            dx, dy = (int(t) for t in name[len(prefix):].split("_"))
            cells[(dx, dy)] = accuracy
    xs, ys = sorted({k[0] for k in cells}), sorted({k[1] for k in cells})
    grid = np.full((len(ys), len(xs)), np.nan)
    for (dx, dy), accuracy in cells.items():
        grid[ys.index(dy), xs.index(dx)] = accuracy
    return xs, ys, grid


TRANSLATION_FILLS = (("translate_", "edge-replicated border"), ("zerofill_translate_", "black (zero) border"))


def plot_translation_grids(robustness: dict, path: Path, models: tuple[str, ...] = VARIANTS) -> Path:
    """Accuracy per (dx, dy) translation: one panel per variant and border fill, one shared colour scale."""
    fills = [(prefix, label) for prefix, label in TRANSLATION_FILLS
             if any(name.startswith(prefix) for name in robustness[models[0]]["shifts"])]
    grids = {(v, prefix): _translation_grid(robustness[v]["shifts"], prefix) for v in models for prefix, _ in fills}
    low = min(float(np.nanmin(g[2])) for g in grids.values())
    high = max(float(np.nanmax(g[2])) for g in grids.values())
    fig, axes = plt.subplots(len(fills), len(models), figsize=(4.6 * len(models), 4.0 * len(fills)), squeeze=False)
    for row, (prefix, label) in enumerate(fills):
        for ax, v in zip(axes[row], models):
            xs, ys, grid = grids[v, prefix]
            image = ax.imshow(grid, cmap="viridis", vmin=low, vmax=high, origin="upper")
            for i in range(len(ys)):
                for j in range(len(xs)):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] < (low + high) / 2 else "black")
            ax.set_xticks(range(len(xs)), xs)
            ax.set_yticks(range(len(ys)), ys)
            ax.set_xlabel("dx (pixels, right)")
            ax.set_ylabel("dy (pixels, down)")
            ax.set_title(f"{v}, {label}")
    fig.colorbar(image, ax=list(axes.ravel()), label="accuracy")
    fig.suptitle("Accuracy under translation by (dx, dy)")
    return save_figure(fig, path)


SHIFT_FAMILY_LABELS = {"translation": "translation\n(edge fill)", "translation_zerofill": "translation\n(black borders)"}


def plot_shift_families(robustness: dict, path: Path, models: tuple[str, ...] = VARIANTS) -> Path:
    """Mean accuracy per shift family for both variants, and the paired gain with 95% CIs."""
    families = list(robustness[models[0]]["shift_families"])
    gains = robustness.get("gain", {}).get("shift_families", {})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0), layout="constrained")
    width = 0.8 / len(models)
    for k, v in enumerate(models):
        axes[0].bar(np.arange(len(families)) + (k - (len(models) - 1) / 2) * width,
                    [robustness[v]["shift_families"][f] for f in families], width, color=colour(v), label=v)
    axes[0].set_xticks(range(len(families)), [SHIFT_FAMILY_LABELS.get(f, f) for f in families])
    axes[0].set_ylabel("mean accuracy")
    axes[0].set_ylim(0, 1)
    axes[0].set_title("Mean accuracy per shift family\n(crop + flip trains for translation and flip)", fontsize=10)
    axes[0].legend(fontsize=8)
    shown = [f for f in families if f in gains]
    means = [gains[f]["mean"] for f in shown]
    errors = np.array([_errors(gains[f]["mean"], gains[f]["low"], gains[f]["high"]) for f in shown]).T if shown else None
    axes[1].errorbar(range(len(shown)), means, yerr=errors, fmt="o", color="black", capsize=4)
    axes[1].axhline(0, color="grey", linestyle=":")
    axes[1].set_xticks(range(len(shown)), [SHIFT_FAMILY_LABELS.get(f, f) for f in shown])
    a, b = robustness["gain"].get("models", ("baseline", "augmented")) if len(models) > 1 else ("", "")
    axes[1].set_ylabel(f"{b} − {a} accuracy")
    axes[1].set_title(f"{b} − {a} per family\n(95% CI over test images, this pair of models)", fontsize=10)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_reliability(calibration: dict, path: Path, models: tuple[str, ...] = VARIANTS) -> Path:
    """Reliability diagrams per model: accuracy versus confidence per bin, before and after temperature.

    Marker areas grow with a bin's image count and the panel below shows the counts, so a bin of one
    or two images (a spike to 0 or 1 at low confidence) reads as the small sample it is."""
    fig, axes = plt.subplots(2, len(models), figsize=(4.8 * len(models), 5.6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
    for ax, counts_ax, v in zip(axes[0], axes[1], models):
        c = calibration[v]
        ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
        total = max(1, sum(c["reliability"]["count"]))
        for key, style, label in (("reliability", "o-", "before"), ("reliability_after_temperature", "s--", f"after T={number(c['temperature'], 2)}")):
            points = [p for p in zip(c[key]["confidence"], c[key]["accuracy"], c[key]["count"]) if p[2] and None not in p[:2]]
            if points:
                xs, ys, ns = zip(*points)
                tint = colour(v) if key == "reliability" else "black"
                ax.plot(xs, ys, style[1:], color=tint, linewidth=1, alpha=0.6)
                ax.scatter(xs, ys, s=[8 + 400 * n / total for n in ns], marker=style[0], color=tint, alpha=0.8, label=f"{label} (area ∝ images)", zorder=3)
        edges = c["reliability"]["edges"]
        counts_ax.bar(edges[:-1], c["reliability"]["count"], width=np.diff(edges), align="edge", color=colour(v), alpha=0.7, edgecolor="white")
        counts_ax.set(yscale="symlog", ylabel="images", xlabel="confidence (bins before temperature)")
        counts_ax.grid(axis="y", alpha=0.3)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="accuracy in bin", title=f"{v}: ECE {number(c['ece'])} → {number(c['ece_after_temperature'])}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)
