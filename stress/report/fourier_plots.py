"""Figures of the Fourier stage: heat maps per model and their difference, and the error by radial frequency."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stress.report.plots import colour, plt, save_figure


def _frequency_axes(ax, height: int, width: int, first: bool) -> None:
    extent_ticks = [0, height // 4, height // 2, 3 * height // 4, height - 1]
    ax.set_xticks(extent_ticks, [str(t - width // 2) for t in extent_ticks])
    ax.set_yticks(extent_ticks, [str(t - height // 2) for t in extent_ticks])
    ax.set_xlabel("horizontal frequency v")
    if first:
        ax.set_ylabel("vertical frequency u")


def plot_fourier_heatmaps(arrays: dict[str, np.ndarray], record: dict, models: tuple[str, ...], path: Path) -> Path:
    """Error rate per frequency for each model (one colour scale), then each model minus the reference (a diverging scale)."""
    height, width = record["size"]
    differences = [(other, d["reference"]) for other, d in record.get("differences", {}).items()]
    panels = len(models) + len(differences)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.4), squeeze=False, layout="constrained")
    top = max(float(np.nanmax(arrays[f"{v}_heatmap"])) for v in models)
    for i, (ax, v) in enumerate(zip(axes[0], models)):
        m = record["models"][v]
        image = ax.imshow(arrays[f"{v}_heatmap"], cmap="viridis", vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(f"{v}: error under each frequency\n(clean {m['clean_error']:.3f}, mean {m['mean_error']['mean']:.3f})", fontsize=10)
        _frequency_axes(ax, height, width, first=i == 0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    for ax, (other, reference) in zip(axes[0][len(models):], differences):
        grid = arrays[f"{other}_minus_{reference}_heatmap"]
        limit = max(float(np.nanmax(np.abs(grid))), 1e-6)
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_title(f"{other} − {reference}: error difference\n(red: {other} worse)", fontsize=10)
        _frequency_axes(ax, height, width, first=False)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"Fourier heat maps: a basis image of L2 norm {record['norm']:g} (on the [0, 1] scale) added to "
                 f"{record['images']} test images; centre = low frequencies", fontsize=11)
    return save_figure(fig, path)


def plot_fourier_radial(record: dict, models: tuple[str, ...], path: Path) -> Path:
    """Error against radial frequency |(u, v)| per model with its 95% band over images, and the paired differences."""
    differences = list(record.get("differences", {}).items())
    fig, axes = plt.subplots(1, 1 + bool(differences), figsize=(6.2 * (1 + bool(differences)), 4.2), squeeze=False)
    ax = axes[0][0]
    low_edge, high_edge = record["band_edges"]
    for v in models:
        rows = record["models"][v]["radial"]
        r = [row["radius"] for row in rows]
        ax.plot(r, [row["mean"] for row in rows], marker="o", markersize=3, color=colour(v), label=v)
        banded = [row for row in rows if row["low"] is not None]
        ax.fill_between([row["radius"] for row in banded], [row["low"] for row in banded], [row["high"] for row in banded],
                        color=colour(v), alpha=0.2)
        ax.axhline(record["models"][v]["clean_error"], color=colour(v), linestyle=":", linewidth=1)
    for edge in (low_edge, high_edge):
        ax.axvline(edge, color="#888888", linewidth=0.8)
    ax.set_xlabel("radial frequency |(u, v)| (band edges: low | middle | high)")
    ax.set_ylabel("error rate (dotted: clean)")
    ax.set_title("Error by radial frequency, 95% band over test images", fontsize=10)
    ax.legend(fontsize=8)
    if differences:
        ax = axes[0][1]
        for other, d in differences:
            rows = d["radial"]
            ax.plot([row["radius"] for row in rows], [row["mean"] for row in rows], marker="o", markersize=3, color=colour(other),
                    label=f"{other} − {d['reference']}")
            banded = [row for row in rows if row["low"] is not None]
            ax.fill_between([row["radius"] for row in banded], [row["low"] for row in banded], [row["high"] for row in banded],
                            color=colour(other), alpha=0.2)
        ax.axhline(0, color="black", linewidth=0.8)
        for edge in (low_edge, high_edge):
            ax.axvline(edge, color="#888888", linewidth=0.8)
        ax.set_xlabel("radial frequency |(u, v)|")
        ax.set_ylabel("error difference (paired over images)")
        ax.set_title("Paired error difference by radial frequency, 95% band over images\n(per radius; not corrected for multiplicity)",
                     fontsize=10)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
