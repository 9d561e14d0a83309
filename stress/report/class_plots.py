"""Figures over classes: the confusion matrix, or for many classes the ranked top confusions, and the top pairs per variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stress.constants import CLASSES, VARIANTS
from stress.report.plots import colour, plt, save_figure

MAX_MATRIX_CLASSES = 20  # above this a confusion matrix is unreadable: plot the ranked top confusions instead


def plot_confusion(matrix: np.ndarray, title: str, path: Path, names: tuple[str, ...] = CLASSES) -> Path:
    """Row-normalised confusion matrix with counts; with more than MAX_MATRIX_CLASSES classes, the top confusions."""
    if len(matrix) > MAX_MATRIX_CLASSES:
        return plot_top_confusions(matrix, title, path, names)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    names = names[: len(matrix)]
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(matrix)):
        for j in range(len(matrix)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, path)


def top_confusions(matrix: np.ndarray, top: int = 25) -> list[tuple[int, int, int]]:
    """The `top` largest off-diagonal cells as (true, predicted, count), largest first, ties by (true, predicted)."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    true, predicted = np.nonzero(off)
    order = np.lexsort((predicted, true, -off[true, predicted]))[:top]
    return [(int(true[k]), int(predicted[k]), int(off[true[k], predicted[k]])) for k in order]


def plot_top_confusions(matrix: np.ndarray, title: str, path: Path, names: tuple[str, ...], top: int = 25) -> Path:
    """Ranked bars of the most frequent (true -> predicted) confusions, each with its share of the true class."""
    pairs = top_confusions(matrix, top)[::-1]  # largest on top
    totals = matrix.sum(1)
    fig, ax = plt.subplots(figsize=(7.0, 0.28 * max(len(pairs), 4) + 1.2))
    ax.barh(range(len(pairs)), [c for _, _, c in pairs], color="#4c72b0")
    ax.set_yticks(range(len(pairs)), [f"{names[t]} → {names[p]}" for t, p, _ in pairs], fontsize=8)
    for y, (t, _, c) in enumerate(pairs):
        ax.text(c, y, f" {c} ({c / max(totals[t], 1):.0%} of {names[t]})", va="center", fontsize=7)
    ax.set_xlabel("test images")
    ax.set_title(f"{title}\ntop {len(pairs)} confusions of {len(matrix)} classes")
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlim(0, max([c for _, _, c in pairs], default=1) * 1.35)
    return save_figure(fig, path)


def plot_confusion_pairs(failures: dict, path: Path, top: int = 8, models: tuple[str, ...] = VARIANTS) -> Path:
    """Most frequent (true -> predicted) confusions per variant, as horizontal bars."""
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.8), squeeze=False, layout="constrained")
    for ax, v in zip(axes[0], models):
        pairs = failures[v]["top_confusions"][:top][::-1]  # largest on top
        names = [f"{p['true_name']} → {p['predicted_name']}" if "true_name" in p else f"{CLASSES[p['true']]} → {CLASSES[p['predicted']]}"
                 for p in pairs]
        ax.barh(range(len(pairs)), [p["count"] for p in pairs], color=colour(v))
        ax.set_yticks(range(len(pairs)), names)
        ax.set_xlabel("test images")
        ax.set_title(f"{v}: top confusions (of {failures[v]['n_errors']} errors)")
        ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)
