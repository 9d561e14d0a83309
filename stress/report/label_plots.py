"""Figures of the label audit and the failure slices: the suspects' gallery and the embedding map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stress.report.plots import SUSPECT_COLOUR, _as_rgb, plt, save_figure

ELLIPSE_SIGMA = 2.0  # outline of a slice in the embedding map: its 2-sigma covariance ellipse
OUTLINE_COLOURS = ("#000000", "#1f77b4", "#2ca02c")  # the top slices' outlines, by rank


def plot_suspect_gallery(images: np.ndarray, suspects: list[dict], path: Path, columns: int = 5) -> Path:
    """The top label suspects: each titled with its given label and what the models say (labels.json's suspects)."""
    count = max(len(images), 1)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.5 * columns, 2.7 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            s = suspects[k]
            says = list(dict.fromkeys(m["predicted_name"] for m in s["models"].values()))  # in the models' order, as the confidences
            confidences = ", ".join(f"{m['confidence']:.2f}" for m in s["models"].values())
            ax.imshow(_as_rgb(images[k]), interpolation="nearest")
            ax.set_title(f"#{s['index']} given: {s['given_name']}\nsays: {' / '.join(says)} ({confidences})", fontsize=8)
    order = ", ".join(suspects[0]["models"]) if suspects else ""
    fig.suptitle("Top label suspects (confident learning): given label, and the models' prediction and confidence"
                 + (f"\n(in the order {order})" if order else ""))
    return save_figure(fig, path)


def _ellipse(points: np.ndarray, sigma: float = ELLIPSE_SIGMA, steps: int = 100) -> np.ndarray | None:
    """(steps, 2) outline of the sigma covariance ellipse of 2-D points; None for fewer than three."""
    if len(points) < 3:
        return None
    centre = points.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(points.T))
    angles = np.linspace(0, 2 * np.pi, steps)
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centre + sigma * (circle * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def plot_embedding_map(projections: dict[str, np.ndarray], correct: dict[str, np.ndarray], suspect: np.ndarray,
                       slices: dict[str, list[tuple[str, np.ndarray]]], variance: dict[str, list[float]], path: Path,
                       outlined: int = 3) -> Path:
    """Per model: the 2-D PCA of its penultimate-layer embeddings, coloured correct / wrong / label suspect,
    with its top `outlined` failure slices drawn as 2-sigma ellipses and numbered by rank."""
    models = list(projections)
    fig, axes = plt.subplots(1, len(models), figsize=(6.2 * len(models), 5.6), squeeze=False)
    for ax, v in zip(axes[0], models):
        xy, ok = projections[v], np.asarray(correct[v], dtype=bool)
        ax.scatter(*xy[ok].T, s=3, c="#b0b0b0", alpha=0.5, linewidths=0, label=f"correct (n={int(ok.sum())})")
        wrong = ~ok & ~suspect
        ax.scatter(*xy[wrong].T, s=4, c="#d62728", alpha=0.6, linewidths=0, label=f"wrong, not a label suspect (n={int(wrong.sum())})")
        ax.scatter(*xy[suspect].T, s=7, c=SUSPECT_COLOUR, marker="x", linewidths=0.5, alpha=0.8, label=f"label suspect, flagged by every model (n={int(suspect.sum())})")
        for rank, (name, mask) in enumerate(slices.get(v, [])[:outlined]):
            outline = _ellipse(xy[mask])
            if outline is None:
                continue
            line_colour = OUTLINE_COLOURS[rank % len(OUTLINE_COLOURS)]
            ax.plot(*outline.T, color=line_colour, lw=2)
            ax.annotate(str(rank + 1), outline[np.argmax(outline[:, 1])], ha="center", va="bottom", fontsize=11, weight="bold", color=line_colour)
            ax.plot([], [], color=line_colour, lw=2, label=f"slice {rank + 1}: {name} (n={int(mask.sum())})"[:80])
        share = variance.get(v) or [0.0, 0.0]
        ax.set_xlabel(f"PC 1 ({100 * share[0]:.0f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * share[1]:.0f}% of variance)")
        ax.set_title(f"{v}: test images in its embedding space")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=1, frameon=False, markerscale=2)
    return save_figure(fig, path)
