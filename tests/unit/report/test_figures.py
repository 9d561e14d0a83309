"""Figures are drawn from the run folder's files only: which ones exist, and what they show."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stress.report.figures as figures
import stress.report.plots as plots
from stress.artifacts import RunFolder
from stress.constants import CLASSES, VARIANTS
from stress.errors import StressError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "run_small"


@pytest.fixture
def drawn(drawn_fixture_run):
    """The fixture run with every figure drawn (once per session, tests/conftest.py): (folder, figures written)."""
    return drawn_fixture_run


@pytest.fixture
def captured(monkeypatch):
    """Replace save_figure by a recorder so a test can inspect the matplotlib figure itself."""
    figs = []

    def record(fig, path):
        figs.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "save_figure", record)
    return figs


def _json(root: Path, name: str) -> dict:
    return json.loads((root / "eval" / name).read_text())


def test_every_figure_is_drawn_as_a_png(drawn):
    root, written = drawn
    failures = _json(root, "failures.json")
    # The fixture predates the label audit, the failure slices, the Fourier heat map, the texture probes and the attacks:
    # no labels.npz, slices.npz, fourier.npz, texture.json or adversarial.json (tests/unit/driver/test_stages.py draws those figures).
    later = ("case", "suspects", "embedding_map", "train_suspects", "fourier_heatmap", "fourier_radial", "texture", "robust_accuracy",
             "adversarial_cases")
    names = {k: n for k, n in figures.FIGURE_NAMES.items() if k not in later}
    expected = {figures.figure_path(k) for k, n in names.items() if "{variant}" not in n}
    expected |= {figures.figure_path(k, v) for k, n in names.items() if "{variant}" in n for v in VARIANTS}
    cases = {case["figure"] for v in VARIANTS for case in failures[v]["cases"]}  # one per selected case
    assert cases and cases == {figures.figure_path("case", v, rank=c["rank"], index=c["index"]) for v in VARIANTS for c in failures[v]["cases"]}
    expected |= cases
    assert {p.relative_to(root).as_posix() for p in written} == expected
    for path in written:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100
            assert image.info["dpi"] == pytest.approx((110, 110), abs=0.5)


def test_only_figures_with_inputs_are_drawn(tmp_path):
    # A run with history and calibration only: training curves and reliability diagrams, nothing else.
    for name in ("variants/baseline/history.json", "variants/augmented/history.json", "eval/calibration.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURE / name, tmp_path / name)
    written = figures.write_figures(RunFolder(tmp_path), log=lambda message: None)
    assert sorted(p.name for p in written) == ["reliability.png", "training_curves.png"]


def test_corrupt_npz_names_the_file(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "predictions.npz").write_bytes(b"not a zip file")
    with pytest.raises(StressError, match="predictions.npz"):
        figures.write_figures(RunFolder(tmp_path), log=lambda message: None)


def test_gain_heatmap_shows_the_gains_centred_at_zero(captured):
    robustness = _json(FIXTURE, "robustness.json")
    plots.plot_gain_heatmap(robustness, Path("unused.png"))
    ax = captured[0].axes[0]
    image = ax.images[0]
    table = robustness["gain"]["by_corruption_severity"]
    np.testing.assert_allclose(image.get_array(), np.array(list(table.values())))
    assert image.norm.vcenter == 0.0 and image.norm.vmin == -image.norm.vmax
    assert image.get_cmap().name == "RdBu"
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == f"{table[next(iter(table))][0]:+.3f}"


def test_translation_grid_places_each_shift():
    shifts = {"translate_-2_0": 0.1, "translate_0_0": 0.2, "translate_2_0": 0.3, "translate_0_2": 0.4, "translate_-2_2": 0.5,
              "translate_2_2": 0.6, "rotate_5": 0.9}
    xs, ys, grid = plots._translation_grid(shifts)
    assert xs == [-2, 0, 2] and ys == [0, 2]
    np.testing.assert_array_equal(grid, [[0.1, 0.2, 0.3], [0.5, 0.4, 0.6]])  # rows: dy, columns: dx


def test_case_figure_titles_carry_prediction_and_confidence(captured):
    with np.load(FIXTURE / "eval" / "gradcam_cases.npz") as table:
        cases = {k: table[k] for k in table.files}
    plots.plot_case(cases, 3, Path("unused.png"))
    titles = [ax.get_title() for ax in captured[0].axes]
    assert len(titles) == 1 + 2 * len(VARIANTS)
    assert f"true: {CLASSES[int(cases['labels'][3])]}" in titles[0]
    for k, model in enumerate(VARIANTS):
        expected = f"{model} → {CLASSES[int(cases[f'predicted_{model}'][3])]} ({float(cases[f'confidence_{model}'][3]):.2f})"
        assert titles[1 + 2 * k].startswith(expected) and titles[2 + 2 * k].startswith(expected)
    # The overlay is the map scaled to its own maximum.
    overlay = captured[0].axes[1].images[1].get_array()
    raw = cases[f"maps_{VARIANTS[0]}_predicted"][3]
    np.testing.assert_allclose(overlay, raw / raw.max(), rtol=1e-6)


def test_characteristics_masks_and_effect_sizes(captured):
    rng = np.random.default_rng(0)
    values = {"brightness": rng.normal(size=40)}
    failed = np.zeros(40, bool)
    failed[:6] = True
    succeeded = ~failed
    masks = {v: (failed, succeeded) for v in VARIANTS}
    plots.plot_characteristics(values, masks, {}, Path("unused.png"))
    ax = captured[0].axes[0]
    a, b = values["brightness"][failed], values["brightness"][succeeded]
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    assert f"d = {(a.mean() - b.mean()) / pooled:.2f}" in ax.get_title()
    heights = sum(patch.get_height() * patch.get_width() for patch in ax.patches[:20])  # successes histogram
    assert heights == pytest.approx(1.0)  # a density: integrates to 1
    counts = [int(text.split("n=")[1].rstrip(")")) for text in (t.get_text() for t in ax.get_legend().get_texts())]
    assert counts == [34, 6]


def test_reliability_titles_quote_ece(captured):
    calibration = _json(FIXTURE, "calibration.json")
    plots.plot_reliability(calibration, Path("unused.png"))
    for ax, v in zip(captured[0].axes, VARIANTS):
        assert ax.get_title() == f"{v}: ECE {calibration[v]['ece']:.3f} → {calibration[v]['ece_after_temperature']:.3f}"
        bins = calibration[v]["reliability"]
        line = ax.get_lines()[1]  # after the diagonal
        kept = [(x, y) for x, y, n in zip(bins["confidence"], bins["accuracy"], bins["count"]) if n]
        np.testing.assert_allclose(line.get_xdata(), [x for x, _ in kept])
        np.testing.assert_allclose(line.get_ydata(), [y for _, y in kept])


def test_reliability_shows_each_bins_image_count(captured):
    calibration = _json(FIXTURE, "calibration.json")
    plots.plot_reliability(calibration, Path("unused.png"))
    axes = captured[0].axes
    for column, v in enumerate(VARIANTS):
        bins = calibration[v]["reliability"]
        counts_ax = axes[len(VARIANTS) + column]  # the row below the diagrams
        assert [patch.get_height() for patch in counts_ax.patches] == bins["count"]
        np.testing.assert_allclose([patch.get_x() for patch in counts_ax.patches], bins["edges"][:-1])
        before = axes[column].collections[0]  # the "before" markers
        kept = [n for n, x in zip(bins["count"], bins["confidence"]) if n and x is not None]
        sizes = before.get_sizes()
        assert len(sizes) == len(kept)
        order_by_count, order_by_size = np.argsort(kept, kind="stable"), np.argsort(sizes, kind="stable")
        np.testing.assert_array_equal(np.asarray(kept)[order_by_count], np.asarray(kept)[order_by_size])  # area grows with n
        total = sum(bins["count"])
        np.testing.assert_allclose(sizes, [8 + 400 * n / total for n in kept])


def test_reliability_marks_a_one_image_bin_as_small(captured):
    """Planted: a lone low-confidence image at accuracy 1 must draw the smallest marker, not a full-size point."""
    edges = [i / 4 for i in range(5)]
    bins = {"edges": edges, "confidence": [0.1, None, 0.6, 0.9], "accuracy": [1.0, None, 0.55, 0.92], "count": [1, 0, 300, 2000]}
    entry = {"reliability": bins, "reliability_after_temperature": bins, "temperature": 1.0, "ece": 0.1, "ece_after_temperature": 0.1}
    plots.plot_reliability({"baseline": entry}, Path("unused.png"), models=("baseline",))
    sizes = captured[0].axes[0].collections[0].get_sizes()
    assert sizes[0] == min(sizes) and sizes[0] < sizes[-1] / 10


@pytest.mark.slow
def test_fixed_title_heights_draw_the_same_pixels_as_matplotlib_s_automatic_placement(drawn, tmp_path):
    """write_figures draws titles at a fixed height (figures.fixed_title_height); its undecorated self places them
    automatically, as matplotlib does by default. Every figure of the fixture run comes out byte for byte the same."""
    folder, written = drawn
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    automatic = figures.write_figures.__wrapped__(RunFolder(copy), log=lambda message: None)
    assert len(automatic) == len(written) > 20
    for path in written:
        assert (copy / path.relative_to(folder)).read_bytes() == path.read_bytes(), path.name


def test_fixed_title_heights_differ_where_a_figure_has_tick_labels_on_top():
    """Planted: an axes with its tick labels on top is where automatic placement lifts the title, so the
    byte comparison above can fail; no figure of stress puts tick labels on top."""
    import io

    import matplotlib.pyplot as plt

    def draw() -> bytes:
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [0, 1])
        ax.xaxis.tick_top()
        ax.set_title("a title")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=60)
        plt.close(fig)
        return buffer.getvalue()

    assert figures.fixed_title_height(draw)() != draw()
