"""Matplotlib figures, drawn only from the run folder's JSON and array files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stress.artifacts import RunFolder, read_json, write_bytes_atomic  # noqa: E402
from stress.config import VARIANTS  # noqa: E402
from stress.data import CLASSES  # noqa: E402
from stress.evaluate import confusion_matrix  # noqa: E402

COLOURS = {"baseline": "#1f77b4", "augmented": "#d62728"}


def save_figure(fig, path: Path) -> Path:
    """Render to PNG in memory and write atomically."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def plot_training_curves(histories: dict[str, list[dict]], path: Path) -> Path:
    """Train-versus-validation loss and accuracy per epoch, one column per variant."""
    fig, axes = plt.subplots(2, len(histories), figsize=(5 * len(histories), 6.5), sharex=True, squeeze=False)
    for column, (variant, epochs) in enumerate(histories.items()):
        x = [e["epoch"] for e in epochs]
        for row, metric in enumerate(("loss", "acc")):
            ax = axes[row, column]
            ax.plot(x, [e[f"train_{metric}"] for e in epochs], "o-", label="train", color=COLOURS.get(variant))
            ax.plot(x, [e[f"val_{metric}"] for e in epochs], "s--", label="validation", color="black")
            ax.set_title(f"{variant}: {'loss' if metric == 'loss' else 'accuracy'}")
            ax.grid(alpha=0.3)
            ax.legend()
        axes[1, column].set_xlabel("epoch")
    return save_figure(fig, path)


def plot_confusion(matrix: np.ndarray, title: str, path: Path) -> Path:
    """Row-normalised confusion matrix with counts."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    names = CLASSES[: len(matrix)]
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(matrix)):
        for j in range(len(matrix)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, path)


def write_figures(run: RunFolder, log=print) -> list[Path]:
    """Every figure whose inputs exist in the run folder."""
    written = []
    histories = {v: read_json(run.variant_dir(v) / "history.json")["epochs"] for v in VARIANTS}
    written.append(plot_training_curves(histories, run.figures / "training_curves.png"))
    predictions = run.path("eval", "predictions.npz")
    if predictions.is_file():
        with np.load(predictions) as table:
            labels = table["labels"]
            for v in VARIANTS:
                matrix = confusion_matrix(labels, table[f"{v}_predicted"], len(CLASSES))
                acc = float(np.trace(matrix) / matrix.sum())
                written.append(plot_confusion(matrix, f"{v}: test accuracy {acc:.3f}", run.figures / f"confusion_{v}.png"))
    log(f"figures: {len(written)} written to {run.figures}")
    return written
