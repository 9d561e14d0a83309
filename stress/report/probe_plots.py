"""Figures of the texture and attack stages: accuracy under the texture probes, robust accuracy against eps, and the
Grad-CAM of a few adversarial cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stress.report.plots import colour, plt, save_figure


def plot_texture_probes(record: dict, models: tuple[str, ...], path: Path) -> Path:
    """Accuracy under every probe per model, with Wilson 95% bars; dotted: clean accuracy; dashed: chance."""
    probes = record["probes"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 1.4]})
    ax = axes[0]
    width = 0.8 / len(models)
    x = np.arange(len(probes))
    for i, v in enumerate(models):
        m = record["models"][v]
        acc = np.array([m["accuracy"][p]["acc"] for p in probes])
        err = np.array([[a - m["accuracy"][p]["low"], m["accuracy"][p]["high"] - a] for p, a in zip(probes, acc)]).T
        ax.bar(x + (i - (len(models) - 1) / 2) * width, acc, width, yerr=err, capsize=2, color=colour(v), label=v)
        ax.axhline(m["clean"]["acc"], color=colour(v), linestyle=":", linewidth=1)
    ax.axhline(record["chance"], color="#888888", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, [p.replace("shuffle_", "shuffle ").replace("lowpass_", "low-pass ").replace("highpass_", "high-pass ") for p in probes],
                  rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (dotted: clean; dashed: chance)")
    ax.set_title(f"Accuracy under the texture probes, Wilson 95% over {record['images']} test images\n"
                 "(shuffle g: g x g patches permuted; low/high-pass c: Gaussian cut-off c cycles per image)", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    position = {r["grid"]: k for k, r in enumerate(record["scales"])}
    drawn = 0
    for i, v in enumerate(models):
        rows = [r for r in record["models"][v]["index"] if r["index"] is not None]
        drawn += len(rows)
        if not rows:
            continue
        where = np.array([position[r["grid"]] for r in rows], dtype=float) + 0.06 * (i - (len(models) - 1) / 2)
        ax.errorbar(where, [r["index"] for r in rows],
                    yerr=[[r["index"] - (r["low"] if r["low"] is not None else r["index"]) for r in rows],
                          [(r["high"] if r["high"] is not None else r["index"]) - r["index"] for r in rows]],
                    marker="o", capsize=3, color=colour(v), label=v)
    if not drawn:
        ax.text(0.5, 0.5, "undefined: low-pass accuracy\nnot above chance", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(1.0, color="#888888", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(record["scales"])), [f"{r['grid']} | {r['cutoff']:g}" for r in record["scales"]])
    ax.set_xlabel("scale: grid | low-pass cut-off")
    ax.set_ylabel("texture-reliance index")
    ax.set_title("Texture-reliance index, 95% bootstrap\n(above 1: texture kept more than shape)", fontsize=10)
    if drawn:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_robust_accuracy(record: dict, models: tuple[str, ...], path: Path) -> Path:
    """Robust accuracy against eps for L∞ and L2 PGD, Wilson 95% bands, and AutoAttack at 8/255 as a marker."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, norm, unit in ((axes[0], "linf", "L∞ eps (x 1/255)"), (axes[1], "l2", "L2 eps ([0, 1] scale)")):
        attacks = [a for a in record["attacks"] if a["norm"] == norm]
        eps = [0.0] + [a["eps"] * (255 if norm == "linf" else 1) for a in attacks]
        for v in models:
            m = record["models"][v]
            rows = [m["clean"]] + [m["robust"][a["name"]] for a in attacks]
            ax.plot(eps, [r["acc"] for r in rows], marker="o", color=colour(v), label=v)
            ax.fill_between(eps, [r["low"] for r in rows], [r["high"] for r in rows], color=colour(v), alpha=0.2)
            if norm == "linf" and "autoattack" in m["robust"]:
                aa = m["robust"]["autoattack"]
                ax.errorbar([8.0], [aa["acc"]], yerr=[[aa["acc"] - aa["low"]], [aa["high"] - aa["acc"]]], marker="*", markersize=11,
                            color=colour(v), linestyle="none", label=f"{v}: AutoAttack")
        ax.set_xlabel(unit)
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{'L∞' if norm == 'linf' else 'L2'} PGD ({record['steps']} steps), Wilson 95% over {record['images']} images",
                     fontsize=10)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _normalised(cam: np.ndarray) -> np.ndarray:
    top = cam.max()
    return cam / top if top > 0 else cam


def plot_adversarial_cases(cases: dict[str, np.ndarray], models: tuple[str, ...], classes: tuple[str, ...], path: Path) -> Path:
    """Per case: the clean image, then per model its Grad-CAM on the clean image, the adversarial image, its Grad-CAM of the
    new class and (cases saved since it was kept) of the clean class."""
    n = len(cases["indices"])
    same = all(f"{v}_cam_adversarial_clean_class" in cases for v in models)
    per_model = 4 if same else 3
    columns = 1 + per_model * len(models)
    fig, axes = plt.subplots(n, columns, figsize=(1.9 * columns, 2.1 * n), squeeze=False)
    name = lambda k: classes[int(k)] if int(k) < len(classes) else str(int(k))  # noqa: E731
    for row in range(n):
        image = cases["images"][row].transpose(1, 2, 0)
        axes[row][0].imshow(image)
        axes[row][0].set_title(f"#{int(cases['indices'][row])}: {name(cases['labels'][row])}", fontsize=8)
        for j, v in enumerate(models):
            adversarial = np.clip(cases[f"{v}_adversarial"][row], 0, 255).round().astype(np.uint8).transpose(1, 2, 0)
            eps = round(float(cases[f"{v}_eps"][row]) * 255)
            panels = ((image, cases[f"{v}_cam_clean"][row], f"{v}: CAM, {name(cases[f'{v}_predicted_clean'][row])}"),
                      (adversarial, None, f"{v}: {eps}/255 attack"),
                      (adversarial, cases[f"{v}_cam_adversarial"][row], f"CAM, {name(cases[f'{v}_predicted_adversarial'][row])} (new)"))
            if same:
                panels += ((adversarial, cases[f"{v}_cam_adversarial_clean_class"][row],
                            f"CAM, {name(cases[f'{v}_predicted_clean'][row])} (clean class)"),)
            for k, (picture, cam, title) in enumerate(panels):
                ax = axes[row][1 + per_model * j + k]
                ax.imshow(picture)
                if cam is not None:
                    ax.imshow(_normalised(cam), cmap="jet", alpha=0.45, vmin=0, vmax=1)
                ax.set_title(title, fontsize=8, color=colour(v))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Images that flip first in both models: Grad-CAM of the clean prediction, then on the adversarial image of the new "
                 "class" + (" and of the clean class" if same else ""), fontsize=10)
    return save_figure(fig, path)
